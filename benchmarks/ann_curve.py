"""Approximate nearest-neighbour search in LanceDB against exact search, at 10^4, 10^5 and 10^6 chunks.

Vectors: the bundled embedder's vectors of SQuAD dev paragraphs, topped up to each size with
vectors drawn from a Gaussian fitted to them (mean and full covariance, then L2-normalised), so
the synthetic ones have the real embeddings' spread. Queries: the embeddings of real SQuAD
questions. Truth: exact (flat) cosine top 10 over the same table. Prints, per size and setting,
recall@10 against exact, p50/p95 query latency, and the index build time; and writes the
figures as JSON (and a PNG plot when matplotlib is installed).

    python benchmarks/ann_curve.py [--sizes 10000,100000,1000000] [--queries 200] [--out docs/ann]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from common import pyplot, squad_dev


def real_vectors(n_par: int, n_q: int) -> tuple[np.ndarray, np.ndarray]:
    from ragtune.registry import make_embedder

    docs, examples = squad_dev()
    emb = make_embedder("all-minilm-l6-v2")
    t0 = time.perf_counter()
    paras = emb.embed([d.text for d in docs[:n_par]])
    rng = np.random.default_rng(0)
    qs = [examples[i].question for i in rng.choice(len(examples), n_q, replace=False)]
    queries = emb.embed(qs)
    print(f"embedded {len(paras)} paragraphs and {len(qs)} questions in {time.perf_counter() - t0:.0f}s", flush=True)
    return paras.astype(np.float32), queries.astype(np.float32)


def synthetic(real: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mean, cov = real.mean(0), np.cov(real, rowvar=False)
    x = rng.multivariate_normal(mean, cov, size=n, method="cholesky").astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def table_of(path: Path, vectors: np.ndarray):
    import lancedb

    dim = vectors.shape[1]
    db = lancedb.connect(str(path))
    schema = pa.schema([("id", pa.int64()), ("vector", pa.list_(pa.float32(), dim))])
    t = db.create_table("chunks", schema=schema)
    step = 200_000
    for s in range(0, len(vectors), step):
        part = vectors[s : s + step]
        t.add(pa.table({"id": np.arange(s, s + len(part)),
                        "vector": pa.FixedSizeListArray.from_arrays(pa.array(part.reshape(-1)), dim)}))  # fmt: skip
    return t


def run_queries(t, queries: np.ndarray, k: int, exact: bool, **params) -> tuple[list[list[int]], list[float]]:
    ids, lat = [], []
    for q in queries:
        t0 = time.perf_counter()
        b = t.search(q, vector_column_name="vector").distance_type("cosine").limit(k).select(["id"])
        if exact:
            b = b.bypass_vector_index()
        else:
            if "nprobes" in params:
                b = b.nprobes(params["nprobes"])
            if params.get("refine_factor"):
                b = b.refine_factor(params["refine_factor"])
            if "ef" in params:
                b = b.ef(params["ef"])
        rows = b.to_list()
        lat.append(time.perf_counter() - t0)
        ids.append([r["id"] for r in rows])
    return ids, lat


def recall(truth: list[list[int]], got: list[list[int]], k: int) -> float:
    return statistics.mean(len(set(a[:k]) & set(b[:k])) / k for a, b in zip(truth, got))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--paragraphs", type=int, default=2067)
    ap.add_argument("--out", default="docs/ann")
    args = ap.parse_args()
    k = 10
    real, queries = real_vectors(args.paragraphs, args.queries)
    sizes = [int(s) for s in args.sizes.split(",")]
    extra = synthetic(real, max(sizes) - len(real), seed=1) if max(sizes) > len(real) else real[:0]
    pool = np.concatenate([real, extra])
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="ragtune-ann-") as tmp:
            t = table_of(Path(tmp), pool[:n])
            run_queries(t, queries[:5], k, exact=True)  # warm the file cache
            truth, lat = run_queries(t, queries, k, exact=True)
            p50, p95 = 1000 * statistics.median(lat), 1000 * float(np.percentile(lat, 95))
            rows.append({"n": n, "index": "exact", "params": "", "recall10": 1.0, "build_s": 0.0,
                         "p50_ms": p50, "p95_ms": p95})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
            partitions = max(1, n // 4096)
            from lancedb.index import HnswSq, IvfPq

            for kind, config, settings in (
                ("IVF_HNSW_SQ", HnswSq(distance_type="cosine", num_partitions=partitions),
                 [{"nprobes": p, "ef": ef} for p, ef in ((4, 64), (8, 64), (16, 100), (32, 150), (64, 200),
                                                          (96, 300))]),
                ("IVF_PQ", IvfPq(distance_type="cosine", num_partitions=partitions, num_sub_vectors=48),
                 [{"nprobes": p, "refine_factor": r} for p, r in ((8, 5), (16, 10), (32, 10), (64, 20), (128, 40))]),
            ):  # fmt: skip
                t0 = time.perf_counter()
                t.create_index("vector", config=config, replace=True)
                build = time.perf_counter() - t0
                for i, params in enumerate(settings):
                    if i and settings[i - 1]["nprobes"] >= partitions:
                        continue  # more probes than partitions: the same search again
                    run_queries(t, queries[:5], k, exact=False, **params)
                    got, lat = run_queries(t, queries, k, exact=False, **params)
                    rows.append({"n": n, "index": kind, "params": json.dumps(params), "recall10": recall(truth, got, k),
                                 "build_s": build, "p50_ms": 1000 * statistics.median(lat),
                                 "p95_ms": 1000 * float(np.percentile(lat, 95))})  # fmt: skip
                    print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ann_curve.json").write_text(json.dumps(rows, indent=1))
    print(f"\n{'n':>8} {'index':<12} {'params':<34} {'R@10':>6} {'p50 ms':>8} {'p95 ms':>8} {'build s':>8}")
    for r in rows:
        print(f"{r['n']:>8} {r['index']:<12} {r['params']:<34} {r['recall10']:>6.3f} {r['p50_ms']:>8.1f} "
              f"{r['p95_ms']:>8.1f} {r['build_s']:>8.1f}")  # fmt: skip
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind, marker in (("exact", "s"), ("IVF_HNSW_SQ", "o"), ("IVF_PQ", "^")):
        for n in sizes:
            pts = [r for r in rows if r["index"] == kind and r["n"] == n]
            ax.plot([r["p50_ms"] for r in pts], [r["recall10"] for r in pts], marker=marker, label=f"{kind} {n:,}")
    ax.set_xscale("log")
    ax.set_xlabel("query latency p50 (ms, log)")
    ax.set_ylabel("recall@10 vs exact")
    ax.axhline(0.95, color="grey", lw=0.5)
    ax.axvline(20, color="grey", lw=0.5)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "ann_curve.png", dpi=110)
    print(f"plot: {out / 'ann_curve.png'}")


if __name__ == "__main__":
    main()
