"""Span scoring (the default `extract` answer mode) through each backend: transformers float32 (the
reference) vs transformers bfloat16, onnxruntime-genai and llama.cpp (those installed).

The reader's calls are recorded once: the bundled demo paragraphs are indexed, and `rag` answers the
first question of each paragraph with transformers float32, keeping every `score_batch(prompts,
continuations)` it makes. The same calls are then timed on transformers (`score_batch`: prompt and
spans in one forward pass) in float32 and in bfloat16, on `NAME@ort` (`score` per prompt: the
prompt is read once, each span appended and rewound) and on `NAME@llama` (`score` per prompt: the prompt
read once, then every span in one batch, each in its own sequence sharing the prompt's cache),
alternating, `--rounds` times each; the chosen span (the argmax) must be the same. This is what
decides the default backend and dtype for the CPU: the default answer path scores, it does not decode.

    python benchmarks/score_backends.py [--questions 40] [--rounds 3] [--backends bf16,ort,llama]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--backends", default="bf16,ort,llama", help="of bf16 (transformers bfloat16), ort (onnxruntime-genai), llama"
    )
    args = ap.parse_args()

    from common import demo_first_questions, record_scoring
    from ragtune import Pipeline, make_generator

    index, questions = demo_first_questions(args.questions)
    tf = make_generator(dtype="float32")  # the reference
    score_batch = tf.score_batch
    pipe = Pipeline(index, tf, gate=False)
    calls = record_scoring(tf, lambda: [pipe.answer(q) for q in questions])
    spans = sum(len(c) for _, cs in calls for c in cs)
    print(f"{len(calls)} reader calls, {spans} spans ({spans / len(calls):.1f} per call)")

    packages = {"ort": ("onnxruntime-genai", "onnxruntime_genai"), "llama": ("llama.cpp", "llama_cpp")}
    runs = {"transformers": lambda: [score_batch(p, c) for p, c in calls]}
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        if backend == "bf16":  # transformers in bfloat16 (the default where the CPU has it natively)
            bf16 = make_generator(dtype="bfloat16")
            runs["transformers bf16"] = lambda gen=bf16: [gen.score_batch(p, c) for p, c in calls]
            continue
        label, package = packages[backend]
        if importlib.util.find_spec(package) is None:
            print(f"{label}: not installed ({package})")
            continue
        gen = make_generator(f"{tf.name}@{backend}")
        t0 = time.perf_counter()
        gen.score(calls[0][0][0], calls[0][1][0])
        print(f"{label}: converted (or found in the cache) and loaded in {time.perf_counter() - t0:.1f} s")
        runs[label] = lambda gen=gen: [[gen.score(p1, c1) for p1, c1 in zip(p, c)] for p, c in calls]

    times, outs = {name: [] for name in runs}, {}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["transformers"])
    print(f"\n{'backend':<20} {'median s':>9} {'ms/question':>12} {'x transformers':>15}")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"{name:<20} {m:>9.2f} {1000 * m / len(calls):>12.0f} {base / m:>15.2f}")
    for name, out in outs.items():
        if name == "transformers":
            continue
        rows = [(x, y) for xs, ys in zip(outs["transformers"], out) for x, y in zip(xs, ys)]
        same = sum(max(range(len(x)), key=x.__getitem__) == max(range(len(y)), key=y.__getitem__) for x, y in rows)
        diff = max(abs(u - v) for x, y in rows for u, v in zip(x, y))
        print(f"{name}: same chosen span {same}/{len(rows)}; largest score difference {diff:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
