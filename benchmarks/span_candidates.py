"""How often the extract reader's candidate spans hold the gold answer: the ceiling of `rag`'s reader.

The reader answers with one of its candidate spans (`rag.answer_spans`: entities, numbers, dates, ordinals, key
phrases and, since 2026-12-07, noun phrases from `synth.candidates.noun_chunks`), so a gold answer that is no
candidate cannot be given. On SQuAD v1.1 dev paragraphs outside the held-out articles (each question's gold
paragraph as its only source; the spans of the sentence that holds the first gold answer), for each question: is a
candidate exactly a gold answer, and the best candidate's F1 — with the noun phrases and without them (the
baseline, same run), by the kind of the gold answer (with a digit; capitalised; lower-case of 1, 2, 3+ words; over
4 words). Model-free: takes seconds.

With `--answer RUN` (a folder of `benchmarks/evaluate_folder.py`: its index and real-questions.jsonl, the 100
held-out paragraphs' real questions), `rag` answers every real question twice, no gate, same run: with the noun
phrases and the bundled span ranker, and without them with the ranker fitted before them (`--old-ranker`, default
the one of commit fc52626, `git show`n) — F1 / EM, the paired bootstrap of the difference, seconds a question.

    python benchmarks/span_candidates.py [--paragraphs 200] [--seed 0] [--held-out]
    python benchmarks/span_candidates.py --answer /tmp/ragtune-bench/evaluate30n      # ~5 minutes
"""

from __future__ import annotations

import argparse
import json
import random
import statistics as st
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SQUAD_DEV  # noqa: E402


def kind(gold: str) -> str:
    words = gold.split()
    if any(ch.isdigit() for ch in gold):
        return "digit"
    if len(words) > 4:
        return "over 4 words"
    if gold[:1].isupper():
        return "capitalised"
    return f"lower-case {min(len(words), 3)}{'+' if len(words) >= 3 else ''}"


@contextmanager
def noun_phrases_on(on: bool):
    """`rag.answer_spans` with its noun phrases (`on`) or without them (the baseline), restored after."""
    import ragtune.synth.candidates as cand

    saved = cand.noun_chunks
    if not on:
        cand.noun_chunks = lambda sentence, max_words=4: []
    try:
        yield
    finally:
        cand.noun_chunks = saved


def coverage(paragraphs: list, noun_phrases: bool) -> dict:
    from ragtune.context import Source
    from ragtune.evaluation.metrics import f1_score
    from ragtune.rag import answer_spans

    with noun_phrases_on(noun_phrases):
        best, exact, spans, by_kind, hit_kind = [], 0, [], Counter(), Counter()
        for title, p in paragraphs:
            src = [Source(1, title, title, title, p["context"], 1.0)]
            cands = answer_spans("What is it?", src)
            for q in p["qas"]:
                golds = [a["text"] for a in q["answers"]]
                pool = [c for c in cands if golds[0] in c.sentence] or cands
                f = max((f1_score(c.text, golds) for c in pool), default=0.0)
                best.append(f)
                spans.append(len(pool))
                k = kind(golds[0])
                by_kind[k] += 1
                if f == 1.0:
                    exact += 1
                    hit_kind[k] += 1
    n = len(best)
    return {"questions": n, "exact": 100 * exact / n, "best_f1": 100 * st.mean(best), "spans": st.mean(spans),
            "by_kind": {k: (hit_kind[k], by_kind[k]) for k in sorted(by_kind)}}  # fmt: skip


def answer(index, generator, questions: list, noun_phrases: bool, ranker: str) -> tuple[list, list, float]:
    """Each real question's F1 and EM from `rag` (no gate) over `index`, and seconds a question."""
    import time

    from ragtune import RagConfig
    from ragtune.evaluation.metrics import exact_match, f1_score
    from ragtune.rag import Pipeline

    with noun_phrases_on(noun_phrases):
        pipe = Pipeline(index, generator, RagConfig(span_ranker=ranker), gate=False)
        f1s, ems, t0 = [], [], time.perf_counter()
        for b in range(0, len(questions), 16):
            batch = questions[b : b + 16]
            for q, a in zip(batch, pipe.answer_batch([q["question"] for q in batch])):
                golds = q.get("answers") or [q["answer"]]
                f1s.append(100 * f1_score(a.text, golds))
                ems.append(100 * exact_match(a.text, golds))
        return f1s, ems, (time.perf_counter() - t0) / len(questions)


def compare_answers(run: Path, old_ranker: str) -> None:
    import subprocess
    import tempfile

    from ragtune import Index, make_generator
    from ragtune.evaluation.stats import paired_bootstrap

    if not old_ranker:
        path = Path(tempfile.mkdtemp()) / "span-ranker-fc52626.json"
        root = Path(__file__).resolve().parents[1]
        shown = subprocess.run(["git", "show", "fc52626:src/ragtune/data/span-ranker.json"], check=True,
                               capture_output=True, cwd=root)  # fmt: skip
        path.write_bytes(shown.stdout)
        old_ranker = str(path)
    questions = [json.loads(line) for line in (run / "real-questions.jsonl").read_text().splitlines() if line.strip()]
    index, generator = Index.open(str(run / "run" / "index")), make_generator()  # one load for both arms
    answer(index, generator, questions[:16], True, "bundled")  # warm-up: neither arm's time includes the load
    old = answer(index, generator, questions, False, old_ranker)
    new = answer(index, generator, questions, True, "bundled")
    for name, (f1, em, s) in (("without noun phrases, ranker before them (baseline)", old), ("with noun phrases", new)):
        print(f"{name:52s} F1 {sum(f1) / len(f1):.1f}  EM {sum(em) / len(em):.1f}  {s:.3f} s a question")
    test = paired_bootstrap(new[0], old[0], ("with", "without"), "f1")
    better = sum(b > a for a, b in zip(old[0], new[0]))
    worse = sum(b < a for a, b in zip(old[0], new[0]))
    print(f"F1 difference {test.diff:+.1f} ({test.low:+.1f} to {test.high:+.1f}, p {test.p_value:.3f}); better on "
          f"{better} questions, worse on {worse}; time ratio {new[2] / old[2]:.2f}x")  # fmt: skip


def main() -> int:
    from ragtune.synth.qg import HELD_OUT_ARTICLES

    ap = argparse.ArgumentParser()
    ap.add_argument("--paragraphs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--held-out", action="store_true", help="the held-out articles' paragraphs instead")
    ap.add_argument("--answer", type=Path, help="an evaluate_folder.py output: answer its real questions both ways")
    ap.add_argument("--old-ranker", default="", help="the baseline's span ranker .json (default: fc52626's)")
    args = ap.parse_args()
    if args.answer:
        compare_answers(args.answer, args.old_ranker)
        return 0
    data = json.loads(Path(SQUAD_DEV).read_text())["data"]
    paragraphs = [(a["title"], p) for a in data for p in a["paragraphs"]
                  if (a["title"] in HELD_OUT_ARTICLES) == args.held_out]  # fmt: skip
    random.Random(args.seed).shuffle(paragraphs)
    paragraphs = paragraphs[: args.paragraphs]
    rows = {"without noun phrases (baseline)": coverage(paragraphs, False),
            "with noun phrases": coverage(paragraphs, True)}  # fmt: skip
    for name, r in rows.items():
        kinds = ", ".join(f"{k} {h}/{n}" for k, (h, n) in r["by_kind"].items())
        print(f"{name:32s} {r['questions']} questions: gold answer a candidate {r['exact']:.1f}%, "
              f"best candidate's F1 {r['best_f1']:.1f}, {r['spans']:.1f} spans in the gold sentence\n"
              f"    exact by kind: {kinds}")  # fmt: skip
    a, b = rows.values()
    print(f"ratio with / without: exact {b['exact'] / a['exact']:.2f}x, spans {b['spans'] / a['spans']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
