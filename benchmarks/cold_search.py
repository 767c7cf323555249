"""Cold `ragtune search`: the wall time of a fresh process, ONNX Runtime vs sentence-transformers.

Each run is `ragtune search QUESTION --index IDX` (hybrid) in a new process, the embedder's
backend chosen by $RAGTUNE_EMBEDDER_BACKEND, the two alternating; the ONNX export is made before
timing starts (it happens once per machine). Claim: the ONNX median is <= 2 s; the ratio printed is
sentence-transformers median / ONNX median, measured in this run.

    python benchmarks/cold_search.py [--runs 7] [--docs 300] [--index /tmp/ragtune-bench/cold-search-index]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, squad_dev, squad_index  # noqa: E402

BACKENDS = ("onnx", "sentence-transformers")
TARGET_S = 2.0


def ragtune_command() -> list[str]:
    script = Path(sys.executable).with_name("ragtune")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "ragtune.cli"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7, help="fresh processes per backend")
    ap.add_argument("--docs", type=int, default=300, help="SQuAD dev paragraphs in the index")
    ap.add_argument("--index", default="/tmp/ragtune-bench/cold-search-index")
    args = ap.parse_args()

    from ragtune.embedders import sentence_embedder

    docs, examples = squad_dev()
    docs = docs[: args.docs]
    keep = {d.id for d in docs}
    questions = [e.question for e in examples if set(e.doc_ids) & keep][: args.runs]
    index = squad_index(args.index, sentence_embedder("all-minilm-l6-v2", backend="onnx"), docs)  # exports once
    index.close()

    times: dict[str, list[float]] = {b: [] for b in BACKENDS}
    for i in range(args.runs):
        for backend in BACKENDS if i % 2 == 0 else BACKENDS[::-1]:
            env = {**os.environ, "RAGTUNE_EMBEDDER_BACKEND": backend}
            t0 = time.perf_counter()
            out = subprocess.run(
                [*ragtune_command(), "search", questions[i % len(questions)], "--index", args.index],
                env=env, capture_output=True, text=True,
            )  # fmt: skip
            times[backend].append(time.perf_counter() - t0)
            if out.returncode != 0 or not out.stdout.strip():
                sys.exit(f"ragtune search failed ({backend}): {out.stderr.strip()}")
        print(f"run {i}: " + ", ".join(f"{b} {times[b][-1]:.2f}s" for b in BACKENDS), flush=True)
    onnx, st = median(times["onnx"]), median(times["sentence-transformers"])
    print(f"cold search over {args.runs} fresh processes ({len(docs)} paragraphs, hybrid):")
    print(f"  onnx median {onnx:.2f}s; sentence-transformers median {st:.2f}s")
    print(f"ratio sentence-transformers/onnx = {st / onnx:.2f}x; onnx median {onnx:.2f}s (target <= {TARGET_S} s)")
    return 0 if onnx <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
