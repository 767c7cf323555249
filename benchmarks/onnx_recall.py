"""Retrieval quality of the embedder backends on SQuAD v1.1 dev: sentence-transformers vs ONNX.

Each backend of all-MiniLM-L6-v2 (`sentence-transformers`, `onnx` float32, `onnx-int8`) builds its
own index of the 2,067 dev paragraphs and answers the 10,570 questions; printed: dense and hybrid
recall@5, and the difference to sentence-transformers in points. The claim: float32 ONNX is within
0.5 points of recall@5 (dense and hybrid); int8 is reported, and is the default only if it is too.

    python benchmarks/onnx_recall.py [--limit N] [--backends onnx,onnx-int8] [--work /tmp/ragtune-bench]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import squad_dev, squad_index  # noqa: E402

BASELINE = "sentence-transformers"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0, help="only the first N questions (0 = all)")
    ap.add_argument("--backends", default="onnx,onnx-int8", help="compared against sentence-transformers")
    ap.add_argument("--work", default="/tmp/ragtune-bench", help="where the per-backend indexes live")
    ap.add_argument("--json", help="write the scores here")
    args = ap.parse_args()

    from ragtune.embedders import sentence_embedder
    from ragtune.evaluation.metrics import retrieval_scores

    docs, examples = squad_dev()
    if args.limit:
        examples = examples[: args.limit]
    questions = [e.question for e in examples]
    golds = [e.doc_ids for e in examples]
    print(f"{len(docs)} paragraphs, {len(examples)} questions", flush=True)
    rows: dict[str, dict] = {}
    for backend in [BASELINE, *args.backends.split(",")]:
        embedder = sentence_embedder("all-minilm-l6-v2", backend=backend)
        t0 = time.perf_counter()
        index = squad_index(Path(args.work) / f"onnx-recall-{backend}", embedder, docs)
        rows[backend] = {"index_s": time.perf_counter() - t0}
        for mode in ("dense", "hybrid"):
            results = []
            for start in range(0, len(questions), 512):
                results.extend(index.search(questions[start : start + 512], k=10, mode=mode))
            s = retrieval_scores(results, golds)
            rows[backend][mode] = {"recall@1": s.recall_at[1], "recall@5": s.recall_at[5], "mrr@10": s.mrr_at_10}
        print(
            f"{backend:<22} dense R@5 {rows[backend]['dense']['recall@5']:.4f}  "
            f"hybrid R@5 {rows[backend]['hybrid']['recall@5']:.4f}",
            flush=True,
        )
    ok = True
    for backend in rows:
        if backend == BASELINE:
            continue
        diffs = {m: 100 * (rows[backend][m]["recall@5"] - rows[BASELINE][m]["recall@5"]) for m in ("dense", "hybrid")}
        rows[backend]["points_vs_baseline"] = diffs
        within = all(abs(d) <= 0.5 for d in diffs.values())
        ok &= within or backend != "onnx"
        print(
            f"{backend} - {BASELINE} recall@5: dense {diffs['dense']:+.2f} points, hybrid {diffs['hybrid']:+.2f} points"
            f" ({'within' if within else 'outside'} 0.5)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"n_questions": len(examples), "backends": rows}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
