"""`compare --ray` against a local compare on the bundled demo data: the same records? how long?

Builds an index of the demo's SQuAD paragraphs, takes `--questions` of its questions, and runs
the `base` and `rag` strategies (the bundled generator, no adapters) three ways in one run:
locally, on Ray with 1 worker and with 2 workers (a local Ray with 2 CPUs). Prints wall time of
each, the ratios, and the share of answers identical to the local run's (greedy decoding; a
worker runs torch with its share of the threads, so floating-point sums may differ in the last bit).

    python benchmarks/ray_compare.py [--questions 24] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=24)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    args = ap.parse_args()

    import ray

    from ragtune import ChunkConfig, Index
    from ragtune.demo import demo_data_path
    from ragtune.documents import load_squad
    from ragtune.evaluation.compare import ExperimentConfig, run_experiment
    from ragtune.evaluation.strategies import Strategy

    tmp = Path(tempfile.mkdtemp(prefix="ray-compare-"))
    docs, examples = load_squad(demo_data_path())
    index = Index.create(tmp / "index", chunking=ChunkConfig())
    index.ingest(docs)
    qs = examples[: args.questions]
    (tmp / "q.jsonl").write_text(
        "\n".join(json.dumps({"id": e.id, "question": e.question, "answers": list(e.answers),
                              "doc_id": e.doc_ids[0]}) for e in qs)  # fmt: skip
    )
    cfg = ExperimentConfig(
        index=str(tmp / "index"),
        questions=str(tmp / "q.jsonl"),
        fresh_edits=0,
        strategies=(Strategy("base", False), Strategy("rag", True)),
        bootstrap=200,
    )

    def answers(res) -> dict:
        return {(r.strategy, r.question_id): r.answer for r in res.records}

    t0 = time.perf_counter()
    local = run_experiment(cfg, tmp / "local")
    wall = {"local": time.perf_counter() - t0}
    print(f"local: {wall['local']:.1f}s", flush=True)
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    same = {}
    for n in (int(x) for x in args.workers.split(",")):
        t0 = time.perf_counter()
        res = run_experiment(cfg, tmp / f"ray{n}", ray="local", workers=n)
        wall[f"ray {n}"] = time.perf_counter() - t0
        a, b = answers(local), answers(res)
        same[n] = sum(a[k] == b.get(k) for k in a) / len(a)
        print(f"ray {n} worker(s): {wall[f'ray {n}']:.1f}s, identical answers {same[n]:.0%}", flush=True)
    ray.shutdown()

    print(f"\n{len(qs)} questions x 2 strategies (base, rag), bundled generator")
    print(f"{'run':<12} {'wall s':>8} {'vs local':>9} {'identical':>10}")
    print(f"{'local':<12} {wall['local']:>8.1f} {1.0:>9.2f} {'':>10}")
    for n, share in same.items():
        w = wall[f"ray {n}"]
        print(f"{f'ray {n}':<12} {w:>8.1f} {w / wall['local']:>9.2f} {share:>10.0%}")
    if 1 in same and 2 in same:
        print(f"2 workers vs 1: {wall['ray 1'] / wall['ray 2']:.2f}x faster")


if __name__ == "__main__":
    main()
