"""Retrieval quality on the whole SQuAD v1.1 dev set: 2,067 paragraphs, 10,570 questions.

Recall@1/5/10 and MRR@10 for BM25, dense (all-MiniLM-L6-v2) and hybrid (RRF). The claim:
hybrid recall@5 is at least the better of the two; the ratio printed is
hybrid R@5 / max(BM25 R@5, dense R@5) measured in this run.

    python benchmarks/retrieval_squad.py [--index /tmp/squad-dev-index] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import squad_dev, squad_index  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default="/tmp/ragtune-bench/squad-dev-index")
    ap.add_argument("--limit", type=int, default=0, help="only the first N questions (0 = all)")
    ap.add_argument("--json", help="write the scores here")
    args = ap.parse_args()

    from ragtune import make_embedder
    from ragtune.evaluation.metrics import retrieval_scores

    docs, examples = squad_dev()
    if args.limit:
        examples = examples[: args.limit]
    index = squad_index(args.index, make_embedder(), docs)
    questions = [e.question for e in examples]
    golds = [e.doc_ids for e in examples]
    rows = {}
    print(f"{len(docs)} paragraphs, {len(examples)} questions")
    print(f"{'mode':<8}{'R@1':>8}{'R@5':>8}{'R@10':>8}{'MRR@10':>8}{'q/s':>8}")
    for mode in ("bm25", "dense", "hybrid"):
        t0 = time.perf_counter()
        results = []
        for start in range(0, len(questions), 512):
            results.extend(index.search(questions[start : start + 512], k=10, mode=mode))
        secs = time.perf_counter() - t0
        s = retrieval_scores(results, golds)
        rows[mode] = {
            "recall@1": s.recall_at[1],
            "recall@5": s.recall_at[5],
            "recall@10": s.recall_at[10],
            "mrr@10": s.mrr_at_10,
            "queries_per_s": len(questions) / secs,
        }
        print(
            f"{mode:<8}{s.recall_at[1]:>8.4f}{s.recall_at[5]:>8.4f}{s.recall_at[10]:>8.4f}"
            f"{s.mrr_at_10:>8.4f}{len(questions) / secs:>8.1f}",
            flush=True,
        )
    best = max(rows["bm25"]["recall@5"], rows["dense"]["recall@5"])
    ratio = rows["hybrid"]["recall@5"] / best
    print(
        f"ratio hybrid R@5 / best single R@5 (baseline: best of BM25 and dense, same run)"
        f" = {ratio:.4f}  (target >= 1.0)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"n_questions": len(examples), "modes": rows, "ratio": ratio}, indent=2))
    return 0 if ratio >= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
