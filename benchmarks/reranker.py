"""Does a cross-encoder reranker trained from the bundled MiniLM pay for its latency?

A CrossEncoder is initialised from all-MiniLM-L6-v2 (the bundled embedder's weights, a new
one-logit head) and trained with sentence-transformers' CrossEncoderTrainer on SQuAD dev
(question, gold paragraph) pairs and BM25-mined negatives from 30% of the articles; it then
reranks the top `--depth` hybrid hits for questions of the other articles. Baseline, same run:
the hybrid ranking without it. Printed: R@1/R@5/MRR and seconds per query, both ways.

    python benchmarks/reranker.py [--train 400] [--test 300] [--depth 20]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bucket, squad_dev, squad_index  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--index", default="/tmp/ragtune-bench/squad-dev-index")
    ap.add_argument("--out", default="/tmp/ragtune-bench/reranker")
    ap.add_argument("--train", type=int, default=400, help="training questions (each: 1 positive, 2 negatives)")
    ap.add_argument("--test", type=int, default=300)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--json")
    args = ap.parse_args()

    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer
    from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments as Args
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    from ragtune import RagConfig, make_embedder
    from ragtune.evaluation.metrics import retrieval_scores
    from ragtune.ingest import embed_text
    from ragtune.models import resolve_embedder
    from ragtune.retrieval import Retriever

    docs, examples = squad_dev()
    title = {d.id: d.title for d in docs}
    index = squad_index(args.index, make_embedder(), docs)
    train = [e for e in examples if bucket(title[e.doc_ids[0]]) < 0.3][: args.train]
    test = [e for e in examples if bucket(title[e.doc_ids[0]]) >= 0.3][:: 7][: args.test]

    t0 = time.perf_counter()
    negs = index.search([e.question for e in train], k=6, mode="bm25")
    text = {c.doc_id: embed_text(c.title, c.text) for c in index.chunks()}  # SQuAD paragraphs are one chunk
    q, p, y = [], [], []
    for e, hits in zip(train, negs):
        q.append(e.question), p.append(text[e.doc_ids[0]]), y.append(1.0)
        for h in [h for h in hits if h.chunk.doc_id not in e.doc_ids][:2]:
            q.append(e.question), p.append(embed_text(h.chunk.title, h.chunk.text)), y.append(0.0)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    model = CrossEncoder(str(resolve_embedder("all-minilm-l6-v2")), num_labels=1, device="cpu")
    ds = Dataset.from_dict({"query": q, "passage": p, "label": y})
    targs = Args(output_dir=str(out / "ckpt"), num_train_epochs=1, per_device_train_batch_size=16, learning_rate=4e-5,
                 warmup_steps=0.1, save_strategy="no", report_to="none", disable_tqdm=True, logging_steps=20,
                 dataloader_pin_memory=False, seed=0)  # fmt: skip
    CrossEncoderTrainer(model=model, args=targs, train_dataset=ds, loss=BinaryCrossEntropyLoss(model)).train()
    model.save(str(out / "model"))
    train_s = time.perf_counter() - t0
    print(f"trained on {len(y)} pairs ({len(train)} questions) in {train_s:.0f}s", flush=True)

    rows = {}
    qs, golds = [e.question for e in test], [e.doc_ids for e in test]
    reranked = RagConfig(reranker=str(out / "model"), rerank_depth=args.depth)
    for label, cfg in (("hybrid", RagConfig()), ("hybrid + reranker", reranked)):
        retriever = Retriever(index.store, index.embedder, cfg)
        if cfg.reranker:
            retriever.reranker.score("warm", ["up"])
        t0 = time.perf_counter()
        results = [retriever.search(x, k=10) for x in qs]
        secs = (time.perf_counter() - t0) / len(qs)
        s = retrieval_scores(results, golds)
        rows[label] = {"recall@1": s.recall_at[1], "recall@5": s.recall_at[5], "mrr@10": s.mrr_at_10, "s_per_q": secs}
        print(f"{label:<20} R@1 {s.recall_at[1]:.3f}  R@5 {s.recall_at[5]:.3f}  MRR {s.mrr_at_10:.3f}  "
              f"{secs:.3f} s/query", flush=True)  # fmt: skip
    a, b = rows["hybrid"], rows["hybrid + reranker"]
    print(f"ratio reranked / hybrid R@1 (baseline: hybrid without reranker, same run) = "
          f"{b['recall@1'] / max(a['recall@1'], 1e-9):.3f}; latency x{b['s_per_q'] / max(a['s_per_q'], 1e-9):.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"train_pairs": len(y), "train_s": train_s, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
