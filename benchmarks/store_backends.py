"""LanceDB vs PostgreSQL + pgvector on SQuAD v1.1 dev: the same chunks and vectors in both.

Claims: dense recall@5 agrees within 0.5 points (both are exact cosine search); text search is
LanceDB's BM25 vs BM25 computed in SQL over PostgreSQL's own full text, reported side by side; ingest
(upsert of precomputed vectors in document batches of 64) and median per-query latency of each,
as ratios pgvector / LanceDB (baseline: LanceDB, same run).

    python benchmarks/store_backends.py [--articles 0] [--limit 0] [--work /tmp/ragtune-bench/stores]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import squad_dev  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--articles", type=int, default=0, help="only the first N articles (0 = all 48)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N questions (0 = all)")
    ap.add_argument("--work", default="/tmp/ragtune-bench/stores")
    args = ap.parse_args()

    import time as _t

    from ragtune.chunking import chunk_documents
    from ragtune.config import ChunkConfig
    from ragtune.evaluation.metrics import retrieval_scores
    from ragtune.ingest import embed_text
    from ragtune.registry import make_embedder
    from ragtune.stores import IndexManifest, backend_for

    docs, examples = squad_dev()
    if args.articles:
        titles = list(dict.fromkeys(d.title for d in docs))[: args.articles]
        docs = [d for d in docs if d.title in titles]
        ids = {d.id for d in docs}
        examples = [e for e in examples if e.doc_ids[0] in ids]
    if args.limit:
        examples = examples[: args.limit]
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    embedder = make_embedder()
    chunking = ChunkConfig()
    chunks = chunk_documents(docs, chunking, embedder.count_tokens)
    t0 = time.perf_counter()
    vectors = embedder.embed([embed_text(c.title, c.text) for c in chunks])
    print(f"{len(docs)} paragraphs, {len(chunks)} chunks embedded once in {time.perf_counter() - t0:.0f}s; "
          f"{len(examples)} questions", flush=True)  # fmt: skip
    qvecs = embedder.embed([e.question for e in examples])
    golds = [e.doc_ids for e in examples]
    manifest = IndexManifest(1, embedder.name, embedder.dim, {"chunk_tokens": 200, "overlap_tokens": 40}, _t.time())

    by_doc: dict[str, list[int]] = {}
    for i, c in enumerate(chunks):
        by_doc.setdefault(c.doc_id, []).append(i)
    doc_ids = list(by_doc)
    rows = {}
    for name, url in (("lancedb", str(work / "lance")), ("pgvector", f"pg:{work / 'pgdata'}?index=squad")):
        store = backend_for(url).create(url, manifest)
        t0 = time.perf_counter()
        for s in range(0, len(doc_ids), 64):
            batch = doc_ids[s : s + 64]
            idx = [i for d in batch for i in by_doc[d]]
            store.upsert(batch, [chunks[i] for i in idx], vectors[idx])
        store.refresh_text_index()
        ingest_s = time.perf_counter() - t0
        res = {"ingest_s": ingest_s}
        for mode in ("dense", "text"):
            lat, results = [], []
            for q, v in zip(examples, qvecs):
                t1 = time.perf_counter()
                hits = store.search_dense(v, 10) if mode == "dense" else store.search_text(q.question, 10)
                lat.append(time.perf_counter() - t1)
                results.append(hits)
            sc = retrieval_scores(results, golds)
            res[mode] = {"r1": sc.recall_at[1], "r5": sc.recall_at[5], "r10": sc.recall_at[10], "mrr": sc.mrr_at_10,
                         "p50_ms": 1000 * statistics.median(lat)}  # fmt: skip
        rows[name] = res
        store.close()
        print(
            f"{name}: ingest {ingest_s:.1f}s; dense R@5 {res['dense']['r5']:.4f}; text R@5 {res['text']['r5']:.4f}",
            flush=True,
        )

    print("\n| backend | ingest s | dense R@1 | R@5 | R@10 | MRR | p50 ms | text R@1 | R@5 | R@10 | MRR | p50 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        d, t = r["dense"], r["text"]
        cells = [f"{r['ingest_s']:.1f}"] + [f"{x[m]:.4f}" for x in (d, t) for m in ("r1", "r5", "r10", "mrr")]
        cells.insert(5, f"{d['p50_ms']:.1f}")
        cells.append(f"{t['p50_ms']:.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    lance, pg = rows["lancedb"], rows["pgvector"]
    gap = 100 * abs(pg["dense"]["r5"] - lance["dense"]["r5"])
    print(f"\ndense R@5 gap pgvector vs LanceDB: {gap:.2f} points (target <= 0.5)")
    print(f"text R@5: PostgreSQL full text + BM25 {pg['text']['r5']:.4f} vs LanceDB BM25 {lance['text']['r5']:.4f}")
    print(f"ratios pgvector / LanceDB (baseline LanceDB, same run): ingest {pg['ingest_s'] / lance['ingest_s']:.2f}, "
          f"dense p50 {pg['dense']['p50_ms'] / lance['dense']['p50_ms']:.2f}, "
          f"text p50 {pg['text']['p50_ms'] / lance['text']['p50_ms']:.2f}")  # fmt: skip
    return 0 if gap <= 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
