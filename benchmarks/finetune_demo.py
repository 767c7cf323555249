"""Fine-tuning on the bundled demo data (six SQuAD articles): `qa` and `raft` LoRA runs.

For each mode: wall time, best validation loss, test EM/F1 — against the base model on the
same test questions the same way (closed book for qa, with retrieval for raft), measured in
this run. Prints the ratio fine-tuned F1 / base F1.

    python benchmarks/finetune_demo.py [--out /tmp/ragtune-bench/ft-demo] [--raft-steps 60] [--modes qa,raft]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/ragtune-bench/ft-demo")
    ap.add_argument("--qa-epochs", type=int, default=2)
    ap.add_argument("--raft-steps", type=int, default=60)
    ap.add_argument("--raft-batch", type=int, default=4)
    ap.add_argument("--modes", default="qa,raft", help="which runs: qa, raft or both")
    ap.add_argument("--test", type=int, default=100, help="test questions answered for EM/F1")
    args = ap.parse_args()

    from ragtune import Index, Pipeline, make_generator
    from ragtune.demo import demo_data_path
    from ragtune.documents import load_squad
    from ragtune.evaluation.metrics import exact_match, f1_score
    from ragtune.finetune.config import FinetuneConfig
    from ragtune.finetune.data import PrepareConfig, prepare, read_split
    from ragtune.finetune.train import train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    docs, _ = load_squad(demo_data_path())
    index = Index.create(out / "index")
    index.ingest(docs, sync=True)
    t0 = time.perf_counter()
    report = prepare([demo_data_path()], out / "data", PrepareConfig(seed=0))
    print(f"prepare: {report.read} read, {report.kept} kept, splits {report.splits} in {time.perf_counter() - t0:.1f}s")
    test = read_split(out / "data" / "test.jsonl")[: args.test]
    base = make_generator()

    def score(answers):
        n = len(test)
        return (
            100 * sum(exact_match(a.text, e.answers) for a, e in zip(answers, test)) / n,
            100 * sum(f1_score(a.text, e.answers) for a, e in zip(answers, test)) / n,
        )

    rows = {}
    runs = (("qa", {"epochs": args.qa_epochs}), ("raft", {"max_steps": args.raft_steps, "batch_size": args.raft_batch}))
    for mode, kw in [r for r in runs if r[0] in args.modes.split(",")]:
        cfg = FinetuneConfig(mode=mode, method="lora", generate_max=args.test, eval_every=20, patience=3, **kw)
        res = train(cfg, out / "data", out / mode, index=out / "index" if mode == "raft" else None)
        qs = [e.question for e in test]
        base_answers = Pipeline(index if mode == "raft" else None, base).answer_batch(qs)
        b_em, b_f1 = score(base_answers)
        rows[mode] = {
            "wall_s": res.wall_s,
            "steps": res.steps,
            "best_val_loss": res.best_val_loss,
            "stopped_early": res.stopped_early,
            "tokens_per_s": res.tokens_per_s,
            "test_em": res.generation["em"],
            "test_f1": res.generation["f1"],
            "base_em": b_em,
            "base_f1": b_f1,
        }
        print(
            f"{mode}: {res.steps} steps in {res.wall_s:.0f}s ({res.tokens_per_s:.0f} tok/s)"
            f", best val loss {res.best_val_loss:.3f}"
            f"{' (early stop)' if res.stopped_early else ''}"
            f"; test EM {res.generation['em']:.1f} F1 {res.generation['f1']:.1f} "
            f"vs base ({'rag' if mode == 'raft' else 'closed book'}) EM {b_em:.1f} F1 {b_f1:.1f}; "
            f"ratio F1 fine-tuned/base = {res.generation['f1'] / max(b_f1, 1e-9):.2f}",
            flush=True,
        )
    (out / "summary.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
