"""Does `ragtune tune` pay? Hybrid recall@5 after tuning vs the better single retriever.

For each corpus, questions are split by document group (SQuAD: by article; PubMedQA: by
abstract) into tuning and test questions; the tuner sees only the tuning questions (real ones,
or `--synthetic N` questions made by `ragtune synth` from the indexed documents, as a user
without labels would), and every figure below is on the test questions. Baseline, same run:
max(dense R@5, BM25 R@5); target: tuned hybrid >= baseline + 2 points, never below it.

    python benchmarks/retrieval_tuning.py [--corpus squad pubmedqa] [--tune 400] [--test 3000] [--synthetic 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, bucket, squad_dev  # noqa: E402

PUBMED = ROOT.parent / "shared" / "datasets" / "pubmedqa_pqal" / "ori_pqal.json"


def corpus(name: str):
    """(documents, examples, group of each example) for one corpus."""
    from ragtune.documents import Document, QAExample

    if name == "squad":
        docs, examples = squad_dev()
        title = {d.id: d.title for d in docs}
        return docs, examples, [title[e.doc_ids[0]] for e in examples]
    data = json.loads(PUBMED.read_text())
    # No title: PubMedQA's question is the paper's title, and would leak the question into the document.
    docs = [Document(pmid, " ".join(r["CONTEXTS"]), "") for pmid, r in data.items()]
    examples = [QAExample(pmid, r["QUESTION"], (r["final_decision"],), (pmid,)) for pmid, r in data.items()]
    return docs, examples, [e.id for e in examples]


def synthetic_examples(index, n: int, seed: int):
    from ragtune.documents import QAExample
    from ragtune.synth.generate import SynthConfig, synthesize

    t0 = time.perf_counter()
    questions, report = synthesize(list(index.chunks()), SynthConfig(n=n, seed=seed))
    print(f"  {len(questions)} synthetic tuning questions in {time.perf_counter() - t0:.0f}s", flush=True)
    return [QAExample(q.id, q.question, (q.answer,), (q.doc_id,)) for q in questions]


def run(name: str, args) -> dict:
    from ragtune import ChunkConfig, Index, RagConfig
    from ragtune.evaluation.metrics import retrieval_scores
    from ragtune.tuning import tune_retrieval

    docs, examples, groups = corpus(name)
    index = Index.create(f"{args.root}/{name}", chunking=ChunkConfig())
    t0 = time.perf_counter()
    rep = index.ingest(docs, sync=True)
    print(f"\n== {name}: {len(docs)} documents, {len(examples)} questions; index {rep.counts()} "
          f"in {time.perf_counter() - t0:.0f}s", flush=True)  # fmt: skip
    tune = [e for e, g in zip(examples, groups) if bucket(g) < args.tune_share]
    test = [e for e, g in zip(examples, groups) if bucket(g) >= args.tune_share]
    tune, test = tune[: args.tune], test[: args.test]
    if args.synthetic:
        tune = synthetic_examples(index, args.synthetic, args.seed)
        source = f"{len(tune)} synthetic"
    else:
        source = f"{len(tune)} real"
    t0 = time.perf_counter()
    report = tune_retrieval(index, tune, apply=False, base=RagConfig())
    print(f"  tuned on {source} questions in {time.perf_counter() - t0:.0f}s: {report.chosen}", flush=True)

    questions, golds = [e.question for e in test], [e.doc_ids for e in test]
    rows = {}
    configs = {
        "dense": (RagConfig(), "dense"),
        "bm25": (RagConfig(), "bm25"),
        "hybrid (default RRF)": (RagConfig(), "hybrid"),
        "hybrid (tuned)": (
            RagConfig(**{k: v for k, v in report.chosen.items() if k not in ("k", "context_tokens")}),
            "hybrid",
        ),
    }
    print(f"  {len(test)} test questions\n  {'retriever':<22}{'R@1':>7}{'R@5':>7}{'R@10':>7}{'MRR@10':>8}")
    for label, (cfg, mode) in configs.items():
        results = []
        for start in range(0, len(questions), 512):
            results.extend(index.search(questions[start : start + 512], k=10, mode=mode, config=cfg))
        s = retrieval_scores(results, golds)
        rows[label] = s.as_dict()
        print(f"  {label:<22}{s.recall_at[1]:>7.3f}{s.recall_at[5]:>7.3f}{s.recall_at[10]:>7.3f}{s.mrr_at_10:>8.3f}")
    best = max(rows["dense"]["recall@5"], rows["bm25"]["recall@5"])
    gain = 100 * (rows["hybrid (tuned)"]["recall@5"] - best)
    print(f"  tuned hybrid R@5 - best single R@5 (baseline: max of dense and BM25, same run) = {gain:+.1f} points "
          f"(target >= +2); default RRF: {100 * (rows['hybrid (default RRF)']['recall@5'] - best):+.1f}")  # fmt: skip
    return {"tuning": source, "chosen": report.chosen, "test": len(test), "rows": rows, "gain_points": gain}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", nargs="+", default=["squad", "pubmedqa"], choices=["squad", "pubmedqa"])
    ap.add_argument("--root", default="/tmp/ragtune-bench/tuning")
    ap.add_argument("--tune-share", type=float, default=0.3, help="share of document groups whose questions tune")
    ap.add_argument("--tune", type=int, default=400, help="at most this many tuning questions")
    ap.add_argument("--test", type=int, default=3000, help="at most this many test questions")
    ap.add_argument("--synthetic", type=int, default=0, help="tune on N synthetic questions instead of real ones")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    out = {name: run(name, args) for name in args.corpus}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    met = sum(r["gain_points"] >= 2 for r in out.values())
    print(f"\ncorpora with tuned hybrid >= best single + 2 points: {met} of {len(out)} (target: 2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
