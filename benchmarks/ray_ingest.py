"""Ray ingest: `ragtune ingest --ray` (1 and 2 embedding workers) vs a plain local `Index.ingest`.

All three ingest the same folder of SQuAD dev paragraphs into a fresh index with the bundled
embedder. Claims: Ray with 1 worker costs at most 15% more than local (local / ray-1 >= 0.87,
i.e. ray-1 / local <= 1.15), and 2 workers are at least 1.6x as fast as 1 (ray-1 / ray-2 >= 1.6;
that needs 2 free cores per worker pair, so read it against the machine's load). Each Ray run
includes its actors' start-up (the model loads once per actor); the Ray session is started, and
Ray Data warmed on two documents, once before timing. Medians over --repeats alternating runs.

    python benchmarks/ray_ingest.py [--docs 2000] [--repeats 3] [--embedder all-minilm-l6-v2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, squad_dev  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=2000, help="SQuAD dev paragraphs (enough to amortise start-up)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--embedder", default="all-minilm-l6-v2")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs of the local Ray")
    args = ap.parse_args()

    import ray

    from ragtune import Index
    from ragtune.distributed import ray_ingest

    docs = squad_dev()[0][: args.docs]
    work = Path(tempfile.mkdtemp(prefix="ragtune-ray-bench-"))
    folder = work / "corpus"
    folder.mkdir()
    for i, d in enumerate(docs):
        (folder / f"{i:05d}.txt").write_text(d.text, encoding="utf-8")

    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="warning")
    warm = work / "warm"
    warm.mkdir()
    for name in sorted(os.listdir(folder))[:2]:
        shutil.copy(folder / name, warm / name)
    ray_ingest(Index.create(work / "warm-ix", embedder=args.embedder), [warm], workers=1)
    print(f"ray start + warm-up: {time.perf_counter() - t0:.1f}s on {args.cpus} CPUs", flush=True)

    runs = {
        "local": lambda ix: ix.ingest([folder]),
        "ray-1": lambda ix: ray_ingest(ix, [folder], workers=1),
        "ray-2": lambda ix: ray_ingest(ix, [folder], workers=2),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    chunks: dict[str, int] = {}
    for r in range(args.repeats):
        for name, run in runs.items():
            path = work / f"{name}-{r}"
            index = Index.create(path, embedder=args.embedder)
            t = time.perf_counter()
            report = run(index)
            times[name].append(time.perf_counter() - t)
            chunks[name] = report.chunks_written
            print(f"  {name} run {r + 1}: {times[name][-1]:.1f}s, {report.chunks_written} chunks", flush=True)
            index.close()
            shutil.rmtree(path, ignore_errors=True)
    ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)

    med = {k: median(v) for k, v in times.items()}
    print(f"\n{len(docs)} paragraphs, {chunks['local']} chunks, embedder {args.embedder}, {os.cpu_count()} cores")
    for k, v in med.items():
        print(f"  {k:6s} median {v:7.1f}s  ({chunks[k] / v:.1f} chunks/s)")
    over = med["ray-1"] / med["local"]
    speedup = med["ray-1"] / med["ray-2"]
    print(f"ray-1 / local = {over:.2f}  (target <= 1.15)  {'OK' if over <= 1.15 else 'MISSED'}")
    print(f"ray-1 / ray-2 = {speedup:.2f}  (target >= 1.6)   {'OK' if speedup >= 1.6 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
