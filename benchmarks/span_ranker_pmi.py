"""What the span ranker's question-free likelihood (PMI) features add, and what else was tried (issue 11).

Surface-form competition (Holtzman et al. 2021): a small model's likelihood of a span as the answer
mixes "this span answers the question" with "this span is a likely reply to this sentence at all".
`rag.read_spans` also scores every read sentence's spans under a content-free question
(`span_ranker.NULL_QUESTION`), and the bundled ranker reads the difference (log p(span | question) -
log p(span | null question): sum, per token, gap to the best, is the best). Here each SQuAD dev
question is read as `scripts/fit_span_ranker.py` reads it (two sentences, the gold paragraph as the
only source, articles outside `synth.qg.HELD_OUT_ARTICLES`; the same reads, so its `--cache` is
shared), and the ranker is fitted with the features before PMI (baseline, same run), with the
bundled features, and with text-only features added to them (the words beside the span, a
preposition before it, its position). Printed: 5-fold CV mean F1 of the chosen span.

    python benchmarks/span_ranker_pmi.py [--n 1500] [--cache /tmp/span-reads.pkl]
    python benchmarks/span_ranker_pmi.py --cache /tmp/span-reads.pkl --held-out 1000 --held-out-cache /tmp/held.pkl

`--held-out N` also reads N questions of the held-out articles the same way (never fitted on), fits
each feature set on all the training questions, and prints the held-out mean F1 with a paired
bootstrap 95% interval of each set's difference to the baseline.

The null question is a second prompt of the same length per read sentence, in the same batched
scoring call; its cost in answer time is measured by `benchmarks/counterfactual.py --modes
extract-baseline extract` (docs/reader.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

PREPOSITIONS = {"in", "at", "on", "by", "from", "of", "to", "during", "since", "near"}
EXTRA = ("question_words_left_3", "question_words_right_3", "after_preposition", "after_preposition_x_name_or_time",
         "position_in_sentence")  # fmt: skip


def extra_features(question: str, items) -> np.ndarray:
    from ragtune.context import content_words
    from ragtune.rag import asked_for
    from ragtune.span_ranker import _WORD, span_start

    q_words, asked = content_words(question), asked_for(question)
    out = []
    for it in items:
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
        out.append([left, right, prep, prep * (asked in ("name", "time")), pos])
    return np.array(out).reshape(len(items), len(EXTRA))


def design(rows, features: list[str], extra: list[int]) -> list:
    """[(the questions' candidates on `features` (names from `span_ranker.FEATURES`) plus the `extra`
    columns of `extra_features`, their F1, the candidates)] for rows of (question, items, F1)."""
    from ragtune.span_ranker import FEATURES, span_features

    cols = [FEATURES.index(f) for f in features]
    out = []
    for q, items, f1 in rows:
        x = span_features(q, items)[:, cols]
        if extra:
            x = np.concatenate([x, extra_features(q, items)[:, extra]], 1)
        out.append((x, np.array(f1), items))
    return out


def chosen_f1(train, test, one_sentence: bool) -> list[float]:
    """The F1 of the span chosen for each `test` question by a ranker fitted on `train` (both from
    `design`); a yes/no question keeps the model's choice, as `span_ranker.choose`."""
    from ragtune.span_ranker import fit_ranker, likelihood_decides

    r = fit_ranker([(x, f) for x, f, _ in train])
    w, mean, scale = np.array(r.weights), np.array(r.mean), np.array(r.scale)
    out = []
    for x, f, items in test:
        idx = [j for j, it in enumerate(items) if it.rank == 0] if one_sentence else list(range(len(items)))
        if likelihood_decides(it.kind for it in items):
            j = max(idx, key=lambda j: items[j].logprob)
        else:
            j = idx[int(np.argmax(((x[idx] - mean) / scale) @ w))]
        out.append(f[j])
    return out


def cv_f1(rows, features: list[str], extra: list[int], one_sentence: bool) -> float:
    """5-fold CV (by question) mean F1 of the chosen span."""
    groups = design(rows, features, extra)
    chosen = []
    for k in range(5):
        train = [g for i, g in enumerate(groups) if i % 5 != k]
        chosen += chosen_f1(train, [g for i, g in enumerate(groups) if i % 5 == k], one_sentence)
    return 100 * float(np.mean(chosen))


def main() -> int:
    from fit_span_ranker import collect

    from ragtune.evaluation.stats import paired_bootstrap
    from ragtune.span_ranker import FEATURES

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, help="keep the reads here (shared with scripts/fit_span_ranker.py)")
    ap.add_argument("--held-out", type=int, default=0, help="also test on this many held-out questions")
    ap.add_argument("--held-out-cache", type=Path, help="keep the held-out reads here")
    args = ap.parse_args()
    rows, _ = collect(args.n, args.seed, args.cache)
    before = [f for f in FEATURES if not f.startswith("pmi")]
    sets = {"before PMI (baseline)": (before, []), "bundled: + question-free likelihood (PMI)": (list(FEATURES), []),
            "bundled + words left / right": (list(FEATURES), [0, 1]),
            "bundled + after a preposition": (list(FEATURES), [2, 3]), "bundled + position": (list(FEATURES), [4]),
            "bundled + all of these": (list(FEATURES), list(range(len(EXTRA))))}  # fmt: skip
    base = None
    print(f"{len(rows)} questions; 5-fold CV, mean F1 of the chosen span\n| features | 1 sentence | 2 sentences |")
    print("|---|---:|---:|")
    for name, (features, extra) in sets.items():
        one, two = cv_f1(rows, features, extra, True), cv_f1(rows, features, extra, False)
        base = base or (one, two)
        print(f"| {name} | {one:.1f} ({one - base[0]:+.1f}) | {two:.1f} ({two - base[1]:+.1f}) |", flush=True)
    if args.held_out:
        test, articles = collect(args.held_out, args.seed, args.held_out_cache, held_out=True)
        print(f"\n{len(test)} held-out questions ({len(articles)} articles), fitted on all {len(rows)}; mean F1 "
              "(paired bootstrap 95% interval of the difference to the baseline)")  # fmt: skip
        print("| features | 1 sentence | 2 sentences |\n|---|---:|---:|")
        base = None
        for name, (features, extra) in sets.items():
            train, held = design(rows, features, extra), design(test, features, extra)
            f1 = [100 * np.array(chosen_f1(train, held, one)) for one in (True, False)]
            base = base if base is not None else f1
            tests = [paired_bootstrap(a, b, (name, "baseline"), "F1", n_boot=2000) for a, b in zip(f1, base)]
            cells = [f"{a.mean():.1f} ({t.diff:+.1f}, {t.low:+.1f} to {t.high:+.1f})" for a, t in zip(f1, tests)]
            print(f"| {name} | {cells[0]} | {cells[1]} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
