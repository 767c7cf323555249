"""Does fine-tuning the embedder on the corpus pay? Recall before/after on held-out real questions.

PubMedQA PQA-L (1,000 abstracts, indexed without titles): the embedder is trained on `--synthetic`
questions that `ragtune synth` writes from the index (no labels used), then the index is
re-embedded and the 1,000 real questions are searched in both. Baseline, same run: the bundled
all-MiniLM-L6-v2. With `--squad`, also SQuAD dev (2,067 paragraphs): trained on up to `--squad-train`
real questions of 30% of the articles, measured on the other articles' questions; and the tuned
hybrid (`tune_retrieval` on the training questions) against the better single retriever.

    python benchmarks/embedder_tuning.py [--synthetic 200] [--squad] [--squad-train 1000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, bucket, squad_dev  # noqa: E402

PUBMED = ROOT.parent / "shared" / "datasets" / "pubmedqa_pqal" / "ori_pqal.json"


def scores(index, examples, mode="dense", config=None) -> dict:
    from ragtune.evaluation.metrics import retrieval_scores

    results = []
    qs = [e.question for e in examples]
    for start in range(0, len(qs), 512):
        results.extend(index.search(qs[start : start + 512], k=10, mode=mode, config=config))
    return retrieval_scores(results, [e.doc_ids for e in examples]).as_dict()


def row(label: str, s: dict) -> str:
    return f"  {label:<34}{s['recall@1']:>7.3f}{s['recall@5']:>7.3f}{s['recall@10']:>7.3f}{s['mrr@10']:>8.3f}"


def experiment(name, docs, train, test, args) -> dict:
    from ragtune import ChunkConfig, Index, RagConfig
    from ragtune.finetune.embedder import EmbedderTrainConfig, finetune_embedder
    from ragtune.tuning import tune_retrieval

    root = Path(args.root) / name
    shutil.rmtree(root / "emb", ignore_errors=True)
    shutil.rmtree(root / "tuned-index", ignore_errors=True)
    index = Index.create(root / "index", chunking=ChunkConfig())
    index.ingest(docs, sync=True)
    if train is None:
        from ragtune.tuning import synthetic_examples

        t0 = time.perf_counter()
        train = synthetic_examples(index, args.synthetic, args.seed)
        print(f"  {len(train)} synthetic training questions in {time.perf_counter() - t0:.0f}s", flush=True)
    report = finetune_embedder(index, train, root / "emb", EmbedderTrainConfig(seed=args.seed, val_share=0.0),
                               reindex_to=root / "tuned-index")  # fmt: skip
    tuned = Index.open(root / "tuned-index")
    print(f"  trained on {report.train} pairs in {report.seconds:.0f}s; {len(test)} test questions")
    print(f"  {'':<34}{'R@1':>7}{'R@5':>7}{'R@10':>7}{'MRR@10':>8}")
    out = {"train_questions": len(train), "train_seconds": report.seconds, "test": len(test)}
    for label, ix, mode in (("dense, bundled MiniLM", index, "dense"), ("dense, fine-tuned", tuned, "dense"),
                            ("bm25", index, "bm25")):  # fmt: skip
        out[label] = scores(ix, test, mode, RagConfig())
        print(row(label, out[label]), flush=True)
    for label, ix in (("hybrid tuned, bundled MiniLM", index), ("hybrid tuned, fine-tuned embedder", tuned)):
        chosen = tune_retrieval(ix, train, apply=False, base=RagConfig()).chosen
        cfg = RagConfig(**{k: v for k, v in chosen.items() if k not in ("k", "context_tokens")})
        out[label] = scores(ix, test, "hybrid", cfg)
        out[label]["chosen"] = chosen
        print(row(label, out[label]) + f"   {chosen['fusion']} w={chosen['dense_weight']}", flush=True)
    d0, d1 = out["dense, bundled MiniLM"]["recall@5"], out["dense, fine-tuned"]["recall@5"]
    print(f"  ratio fine-tuned / bundled dense R@5 (baseline: the bundled MiniLM, same run) = {d1 / d0:.3f} "
          f"({100 * (d1 - d0):+.1f} points)")  # fmt: skip
    best = max(out["dense, fine-tuned"]["recall@5"], out["bm25"]["recall@5"])
    gain = 100 * (out["hybrid tuned, fine-tuned embedder"]["recall@5"] - best)
    print(f"  tuned hybrid (fine-tuned embedder) R@5 - best single = {gain:+.1f} points (target >= +2)")
    out["hybrid_gain_points"] = gain
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/tmp/ragtune-bench/embedder")
    ap.add_argument("--synthetic", type=int, default=200)
    ap.add_argument("--squad", action="store_true")
    ap.add_argument("--squad-train", type=int, default=1000)
    ap.add_argument("--no-pubmed", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args()

    from ragtune.documents import Document, QAExample

    out = {}
    if not args.no_pubmed:
        data = json.loads(PUBMED.read_text())
        docs = [Document(pmid, " ".join(r["CONTEXTS"]), "") for pmid, r in data.items()]
        test = [QAExample(pmid, r["QUESTION"], (r["final_decision"],), (pmid,)) for pmid, r in data.items()]
        print("== PubMedQA: 1,000 abstracts; trained on synthetic questions, tested on the 1,000 real ones")
        out["pubmedqa"] = experiment("pubmedqa", docs, None, test, args)
    if args.squad:
        docs, examples = squad_dev()
        title = {d.id: d.title for d in docs}
        train = [e for e in examples if bucket(title[e.doc_ids[0]]) < 0.3][: args.squad_train]
        test = [e for e in examples if bucket(title[e.doc_ids[0]]) >= 0.3][:3000]
        print("\n== SQuAD dev: trained on real questions of 30% of the articles, tested on the others'")
        out["squad"] = experiment("squad", docs, train, test, args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
