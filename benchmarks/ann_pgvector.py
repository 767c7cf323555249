"""pgvector's HNSW index against exact search, through ragtune's own store, at 10^4 and 10^5 chunks.

The same vectors and queries as benchmarks/ann_curve.py (LanceDB): the bundled embedder's vectors
of SQuAD dev paragraphs, topped up with vectors drawn from a Gaussian fitted to them; queries are
real SQuAD questions. Everything goes through the pgvector store on an embedded PostgreSQL
(`pg:DIR`, as `ragtune ingest --index pg:DIR` makes it): `upsert` loads the chunks,
`Index.set_ann(min_rows=n)` builds the HNSW index with ragtune's defaults (m=16,
ef_construction=64, the maintenance_work_mem ragtune sizes for the graph), `set_ann(ef_search=...)`
sets the query beam, and `search_dense` answers (the full chunk rows, as a user gets them). Truth:
exact cosine top 10 in numpy. Prints, per size, exact search's latency (ragtune's path below
`min_rows`), the build time, the memory it was given against its estimate and the index's size on
disk, whether pgvector spilled the graph to disk, and recall@10 and p50/p95 latency per ef_search;
writes docs/ann/pgvector_curve.json (and a PNG plot when matplotlib is installed).

    python benchmarks/ann_pgvector.py [--sizes 10000,100000] [--queries 200] [--out docs/ann]
                                      [--work /tmp/ragtune-bench/pgann]

`--unsized` also rebuilds the index of the largest size the way ragtune did before it sized the
build: with the server's own maintenance_work_mem (the embedded server's 64MB; past it pgvector
finishes the graph on disk, slowly).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ann_curve import real_vectors, recall, synthetic  # noqa: E402
from common import pyplot  # noqa: E402

K = 10
EF_SEARCH = (10, 20, 40, 100, 200, 400)  # 200 is ragtune's default
BATCH = 5000  # chunks per upsert (one transaction, one COPY)


def load(store, vectors: np.ndarray) -> dict[str, int]:
    """Write the vectors as chunks of documents of BATCH chunks; chunk id -> row number."""
    from ragtune.documents import Chunk

    ids = {}
    for s in range(0, len(vectors), BATCH):
        doc = f"d{s // BATCH:04d}"
        part = vectors[s : s + BATCH]
        chunks = [Chunk(id=f"{doc}#{i}", doc_id=doc, text=f"vector {s + i}", position=i) for i in range(len(part))]
        ids.update({c.id: s + i for i, c in enumerate(chunks)})
        store.upsert([doc], chunks, part)
    return ids


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> list[list[int]]:
    x = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    out = []
    for s in range(0, len(q), 50):
        sims = q[s : s + 50] @ x.T
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        out.extend([list(row[np.argsort(-sims[i, row])]) for i, row in enumerate(top)])
    return out


def run_queries(store, ids: dict[str, int], queries: np.ndarray) -> tuple[list[list[int]], list[float]]:
    got, lat = [], []
    for q in queries:
        t0 = time.perf_counter()
        hits = store.search_dense(q, K)
        lat.append(time.perf_counter() - t0)
        got.append([ids[h.chunk.id] for h in hits])
    return got, lat


def row(n: int, index: str, params: dict, truth, got, lat, build_s: float = 0.0, **extra) -> dict:
    r = {"n": n, "index": index, "params": json.dumps(params) if params else "", "recall10": recall(truth, got, K),
         "build_s": build_s, "p50_ms": 1000 * statistics.median(lat), "p95_ms": 1000 * float(np.percentile(lat, 95)),
         **extra}  # fmt: skip
    print(json.dumps(r), flush=True)
    return r


def index_mb(store) -> float:
    rows = store._q("SELECT pg_relation_size(%s)", (f"{store.name}_chunks_hnsw",))
    return rows[0][0] / 2**20


def build(index, store, notices: list[str], **ann) -> dict:
    """(Re)build the HNSW index through set_ann; what it took and was given."""
    from ragtune.stores.pgvector import ANN, hnsw_graph_bytes

    notices.clear()
    t0 = time.perf_counter()
    built = index.set_ann(**ann) if ann else store.refresh_vector_index(force=True)
    assert built
    mem = store.last_build_settings.get("maintenance_work_mem") or store._q("SHOW maintenance_work_mem")[0][0]
    return {"build_s": time.perf_counter() - t0, "index_mb": index_mb(store), "maintenance_work_mem": mem,
            "estimate_mb": hnsw_graph_bytes(store.count_chunks(), store.manifest.dim, ANN["m"]) / 2**20,
            "parallel_workers": store.last_build_settings.get(
                "max_parallel_maintenance_workers", int(store._q("SHOW max_parallel_maintenance_workers")[0][0])),
            "spilled": any("maintenance_work_mem" in m for m in notices)}  # fmt: skip


def measure(n: int, vectors: np.ndarray, queries: np.ndarray, pgdata: Path, unsized: bool) -> list[dict]:
    from ragtune.index import Index
    from ragtune.stores import IndexManifest, backend_for
    from ragtune.stores.pgvector import ANN

    url = f"pg:{pgdata}?index=ann{n}"
    manifest = IndexManifest(format=1, embedder="all-minilm-l6-v2", dim=vectors.shape[1], chunking={},
                             created=time.time(), ann={"min_rows": 10 * n})  # fmt: skip
    store = backend_for(url).create(url, manifest)
    notices: list[str] = []
    store._conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    t0 = time.perf_counter()
    ids = load(store, vectors[:n])
    store.refresh_text_index()  # what ingest does after writing: text statistics, ANALYZE (no HNSW yet)
    print(f"n={n}: loaded through upsert in {time.perf_counter() - t0:.1f}s", flush=True)
    truth = exact_top(vectors[:n], queries, K)
    rows = []

    run_queries(store, ids, queries[:5])  # warm the buffers
    got, lat = run_queries(store, ids, queries)
    rows.append(row(n, "exact", {}, truth, got, lat))

    index = Index(store)
    b = build(index, store, notices, min_rows=n)  # past min_rows: HNSW with the default m, ef_construction
    assert store.manifest.ann.get("built_rows") == n
    print(f"n={n}: HNSW built in {b['build_s']:.1f}s ({b['index_mb']:.0f} MB on disk; maintenance_work_mem "
          f"{b['maintenance_work_mem']}, estimate {b['estimate_mb']:.0f} MB; {b['parallel_workers']} parallel "
          f"workers{'; graph spilled to disk' if b['spilled'] else ''})", flush=True)  # fmt: skip
    for ef in EF_SEARCH:
        index.set_ann(ef_search=ef, build=False)
        run_queries(store, ids, queries[:5])
        got, lat = run_queries(store, ids, queries)
        rows.append(row(n, "HNSW", {"ef_search": ef}, truth, got, lat, **b))

    if unsized:  # the same build the way it was before ragtune sized it: the server's own setting
        import ragtune.stores.pgvector as pg

        cap, pg.build_memory_cap = pg.build_memory_cap, lambda: 0
        try:
            b = build(index, store, notices)
        finally:
            pg.build_memory_cap = cap
        print(f"n={n}: HNSW rebuilt with the server's maintenance_work_mem {b['maintenance_work_mem']} in "
              f"{b['build_s']:.1f}s{' (graph spilled to disk)' if b['spilled'] else ''}", flush=True)  # fmt: skip
        ef = ANN["ef_search"]
        index.set_ann(ef_search=ef, build=False)
        got, lat = run_queries(store, ids, queries)
        rows.append(row(n, "HNSW", {"ef_search": ef}, truth, got, lat, unsized=True, **b))
    store._q(f"DROP TABLE {store.chunks_table}")  # the disk back before the next size
    store.close()
    return rows


def plot(rows: list[dict], out: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    from ragtune.stores.pgvector import ANN

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, n in enumerate(sorted({r["n"] for r in rows})):
        exact = [r for r in rows if r["n"] == n and r["index"] == "exact"]
        hnsw = [r for r in rows if r["n"] == n and r["index"] == "HNSW"]
        pts = [r for r in hnsw if not r.get("unsized")]
        ax.plot([r["p50_ms"] for r in exact], [r["recall10"] for r in exact], "s", color=f"C{i}", label=f"exact {n:,}")
        ax.plot([r["p50_ms"] for r in pts], [r["recall10"] for r in pts], "o-", color=f"C{i}",
                label=f"HNSW {n:,}, ef_search 10-400 (built in {pts[0]['build_s']:.0f} s)")  # fmt: skip
        for r in pts:
            ef = json.loads(r["params"])["ef_search"]
            ax.annotate(f"{ef} (default)" if ef == ANN["ef_search"] else ef, (r["p50_ms"], r["recall10"]), fontsize=6,
                        textcoords="offset points", xytext=(3, -8))  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("query latency p50 (ms, log): search_dense through the pgvector store")
    ax.set_ylabel("recall@10 vs exact")
    ax.set_title("pgvector HNSW (m=16, ef_construction=64), 384-d MiniLM vectors", fontsize=9)
    ax.axhline(0.95, color="grey", lw=0.5)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "pgvector_curve.png", dpi=110)
    print(f"plot: {out / 'pgvector_curve.png'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--paragraphs", type=int, default=2067)
    ap.add_argument("--unsized", action="store_true", help="also rebuild the largest size's index with the "
                    "server's own maintenance_work_mem (ragtune's behaviour before it sized the build)")  # fmt: skip
    ap.add_argument("--out", default="docs/ann")
    ap.add_argument("--work", default="/tmp/ragtune-bench/pgann", help="the embedded server's data (emptied first)")
    ap.add_argument("--replot", action="store_true", help="only redraw the plot from OUT/pgvector_curve.json")
    args = ap.parse_args()
    if args.replot:
        plot(json.loads((Path(args.out) / "pgvector_curve.json").read_text()), Path(args.out))
        return
    real, queries = real_vectors(args.paragraphs, args.queries)
    sizes = [int(s) for s in args.sizes.split(",")]
    extra = synthetic(real, max(sizes) - len(real), seed=1) if max(sizes) > len(real) else real[:0]
    pool = np.concatenate([real, extra])  # the same pool as ann_curve.py's
    rows = []
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)  # the server stops when its last process exits: nothing holds it
    for n in sizes:
        rows += measure(n, pool, queries, work / "pgdata", args.unsized and n == max(sizes))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pgvector_curve.json").write_text(json.dumps(rows, indent=1))
    print(f"\n{'n':>8} {'index':<6} {'params':<20} {'mem':>6} {'R@10':>6} {'p50 ms':>8} {'p95 ms':>8} {'build s':>8}")
    for r in rows:
        print(f"{r['n']:>8} {r['index']:<6} {r['params']:<20} {r.get('maintenance_work_mem', ''):>6} "
              f"{r['recall10']:>6.3f} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['build_s']:>8.1f}")  # fmt: skip
    plot(rows, out)


if __name__ == "__main__":
    main()
