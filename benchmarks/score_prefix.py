"""The span reader's scoring with shared prefixes: what reading common prompt tokens once saves.

The reader's calls are recorded once on the bundled demo (its paragraphs indexed, the first question of
each paragraph answered by `rag` with the default transformers generator): one call per question
(`ask`, a lone `serve` client) and one call for all of them (`answer_batch`: compare, evaluate, a
`serve` batch). Each call holds, per read sentence, the question's prompt and the span ranker's
content-free one over the same sentence (`span_ranker.NULL_QUESTION`). The same calls are then timed,
alternating, `--rounds` times each, with `TransformersGenerator.score_batch`:

- baseline: every prompt its own row (the scorer before shared prefixes);
- + rows: prompts that share most of their tokens (a sentence's two prompts) read in one row;
- + rows and call prefix: also the tokens every prompt of the call shares (system message,
  template head) read once for the call (the shipped scorer).

Printed: median seconds, ms per question and the ratio to the baseline, and the largest score
difference (must stay below 1e-3: the same chosen spans).

    python benchmarks/score_prefix.py [--questions 40] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import ragtune.generators as generators
    from common import demo_first_questions, record_scoring
    from ragtune import Pipeline, make_generator

    index, questions = demo_first_questions(args.questions)
    gen = make_generator()
    pipe = Pipeline(index, gen, gate=False)
    singles = record_scoring(gen, lambda: [pipe.answer(q) for q in questions])
    batched = record_scoring(gen, lambda: pipe.answer_batch(questions))
    prompts = sum(len(p) for p, _ in singles)
    print(f"{len(questions)} questions: {prompts} prompts ({len(singles)} calls one question at a time, "
          f"{len(batched)} call(s) for the batch)")  # fmt: skip

    shared_rows, min_shared = generators._shared_prefixes, generators.MIN_SHARED_PREFIX

    def one_row_each(todo, prompt_ids, rows_of, max_rows):
        return [(len(prompt_ids[i]) - 1, [i]) for i in todo]

    settings = {"baseline: a row per prompt": (one_row_each, 10**9), "+ rows": (shared_rows, 10**9),
                "+ rows and call prefix (shipped)": (shared_rows, min_shared)}  # fmt: skip
    times = {(s, w): [] for s in settings for w in ("one at a time", "batch")}
    outs = {}
    for _ in range(args.rounds):
        for name, (rows, minimum) in settings.items():
            generators._shared_prefixes, generators.MIN_SHARED_PREFIX = rows, minimum
            for which, recorded in (("one at a time", singles), ("batch", batched)):
                t0 = time.perf_counter()
                outs[name, which] = [gen.score_batch(p, c) for p, c in recorded]
                times[name, which].append(time.perf_counter() - t0)
    generators._shared_prefixes, generators.MIN_SHARED_PREFIX = shared_rows, min_shared

    print(f"\n{'scorer':<34} {'calls':<14} {'median s':>9} {'ms/question':>12} {'x baseline':>11} {'max diff':>9}")
    for which in ("one at a time", "batch"):
        base = statistics.median(times["baseline: a row per prompt", which])
        ref = [x for out in outs["baseline: a row per prompt", which] for xs in out for x in xs]
        for name in settings:
            m = statistics.median(times[name, which])
            got = [x for out in outs[name, which] for xs in out for x in xs]
            diff = max(abs(a - b) for a, b in zip(ref, got))
            print(f"{name:<34} {which:<14} {m:>9.2f} {1000 * m / len(questions):>12.0f} {base / m:>11.2f} {diff:>9.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
