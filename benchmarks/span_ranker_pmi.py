"""Would a question-free likelihood help the extract reader's span ranker? (issue 11, measured, not built)

Surface-form competition (Holtzman et al. 2021): a small model's likelihood of a span as the answer
mixes "this span answers the question" with "this span is a likely reply to this sentence at all".
Each SQuAD dev question is read as `scripts/fit_span_ranker.py` reads it (two sentences, the gold
paragraph as the only source, articles outside `synth.qg.HELD_OUT_ARTICLES`); every read sentence's
spans are scored a second time under a content-free question (`NULL_QUESTION`), and the ranker is
fitted with and without the difference (log p(span | question) - log p(span | null question), its
per-token value, its gap to the best and whether it is the best). Printed: 5-fold CV mean F1 of the
chosen span, the bundled ranker's features (baseline, same run) against each extended set.

    python benchmarks/span_ranker_pmi.py [--n 1500] [--cache /tmp/span-pmi-reads.pkl]

The second scoring pass is a second prompt of the same length per read sentence: about twice the
reader's model time.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

NULL_QUESTION = "What is the answer?"
PREPOSITIONS = {"in", "at", "on", "by", "from", "of", "to", "during", "since", "near"}
EXTRA = ("pmi", "pmi_per_token", "pmi_gap", "pmi_best", "question_words_left_3", "question_words_right_3",
         "after_preposition", "after_preposition_x_name_or_time", "position_in_sentence")  # fmt: skip


def collect(n: int, cache: Path | None):
    """[(question, [SpanItem], [F1 of each span], [null-question log-prob of each span])]."""
    if cache and cache.is_file():
        return pickle.loads(cache.read_bytes())[0]
    from fit_span_ranker import fit_reads, span_f1

    from ragtune.prompts import reader_messages
    from ragtune.rag import score_spans

    rows = []
    for batch, reads, gen in fit_reads(n, seed=0):
        jobs = []
        for read in reads:
            for r in range(len(read.prompts) if read else 0):
                picked = [it for k, it in enumerate(read.items) if read.reads[k] == r]
                jobs.append((reader_messages(picked[0].sentence, NULL_QUESTION), [it.text for it in picked]))
        null = iter(score_spans(gen, [j[0] for j in jobs], [j[1] for j in jobs]))
        for e, read in zip(batch, reads):
            if read is not None:
                nl = [x for _ in read.prompts for x in next(null)]
                rows.append((e.question, read.items, span_f1(read, e.answers), nl))
    if cache:
        cache.write_bytes(pickle.dumps((rows, None)))
    return rows


def extra_features(question: str, items, null: list[float]) -> np.ndarray:
    from ragtune.context import content_words
    from ragtune.rag import asked_for
    from ragtune.span_ranker import _WORD, span_start

    q_words, asked = content_words(question), asked_for(question)
    pmi = np.array([it.logprob for it in items]) - np.array(null)
    out = []
    for it, p in zip(items, pmi):
        words = [w.lower() for w in _WORD.findall(it.sentence)]
        span = [w.lower() for w in _WORD.findall(it.text)]
        start = span_start(words, span)
        left = right = prep = 0.0
        pos = 1.0
        if span and start is not None:
            end = start + len(span)
            left = len({w for w in words[max(0, start - 3) : start] if w in q_words}) / max(len(q_words), 1)
            right = len({w for w in words[end : end + 3] if w in q_words}) / max(len(q_words), 1)
            prep = float(start > 0 and words[start - 1] in PREPOSITIONS)
            pos = start / max(len(words), 1)
        out.append([p, p / max(it.tokens, 1), p - pmi.max(), float(p == pmi.max()), left, right, prep,
                    prep * (asked in ("name", "time")), pos])  # fmt: skip
    return np.array(out).reshape(len(items), len(EXTRA))


def cv_f1(rows, extra: list[int], one_sentence: bool) -> float:
    """5-fold CV (by question) mean F1 of the chosen span, the bundled features plus `extra`."""
    from ragtune.span_ranker import fit_ranker, span_features

    groups = []
    for q, items, f1, null in rows:
        x = span_features(q, items)
        if extra:
            x = np.concatenate([x, extra_features(q, items, null)[:, extra]], 1)
        groups.append((x, np.array(f1), items))
    chosen = []
    for k in range(5):
        r = fit_ranker([(x, f) for i, (x, f, _) in enumerate(groups) if i % 5 != k])
        w, mean, scale = np.array(r.weights), np.array(r.mean), np.array(r.scale)
        for x, f, items in (g for i, g in enumerate(groups) if i % 5 == k):
            idx = [j for j, it in enumerate(items) if it.rank == 0] if one_sentence else list(range(len(items)))
            if any(it.kind == "yes/no" for it in items):  # as span_ranker.choose
                j = max(idx, key=lambda j: items[j].logprob)
            else:
                j = idx[int(np.argmax(((x[idx] - mean) / scale) @ w))]
            chosen.append(f[j])
    return 100 * float(np.mean(chosen))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--cache", type=Path, help="keep the reads here (a rerun skips the reading)")
    args = ap.parse_args()
    rows = collect(args.n, args.cache)
    sets = {"bundled features (baseline)": [], "+ question-free likelihood (PMI)": [0, 1, 2, 3],
            "+ PMI sum only": [0], "+ words left / right": [4, 5], "+ after a preposition": [6, 7],
            "+ position": [8], "+ all": list(range(len(EXTRA)))}  # fmt: skip
    base = None
    print(f"{len(rows)} questions; 5-fold CV, mean F1 of the chosen span\n| features | 1 sentence | 2 sentences |")
    print("|---|---:|---:|")
    for name, extra in sets.items():
        one, two = cv_f1(rows, extra, True), cv_f1(rows, extra, False)
        base = base or (one, two)
        print(f"| {name} | {one:.1f} ({one - base[0]:+.1f}) | {two:.1f} ({two - base[1]:+.1f}) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
