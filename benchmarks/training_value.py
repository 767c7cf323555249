"""Training value of synthetic questions: `rag+ft` trained on synthetic questions only vs the same
training on the same number of real questions, both tested on real questions, and both vs `rag`.

Runs on the output of `benchmarks/evaluate_folder.py` (same folder): its index, its synthetic
training split and its synthetic-trained `rag+ft` adapter (ft-reader/, or ft-raft/ with
--rag-ft-mode raft). It trains one more adapter,
the same way (same FinetuneConfig, same steps) on real SQuAD questions of the indexed documents —
none of them a test question — and compares rag, rag+ft(synthetic) and rag+ft(real) on the real
test questions (the paired bootstrap says which differences are real; the baseline is `rag`,
measured in the same run).

    python benchmarks/evaluate_folder.py        # first
    python benchmarks/training_value.py [--out /tmp/ragtune-bench/evaluate] [--test 80]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/ragtune-bench/evaluate")
    ap.add_argument("--test", type=int, default=80, help="real test questions (the first of real-questions.jsonl)")
    args = ap.parse_args()

    from ragtune.evaluation.compare import ExperimentConfig, run_experiment
    from ragtune.evaluation.strategies import Strategy
    from ragtune.finetune.config import FinetuneConfig
    from ragtune.finetune.data import PrepareConfig, prepare
    from ragtune.finetune.run import RunFolder
    from ragtune.finetune.train import train

    out = Path(args.out)
    run = out / "run"
    real_all = [json.loads(x) for x in (out / "real-questions.jsonl").read_text().splitlines() if x.strip()]
    test, pool = real_all[: args.test], real_all[args.test :]
    synth_train = [json.loads(x) for x in (run / "data" / "train.jsonl").read_text().splitlines() if x.strip()]
    synth_val = [json.loads(x) for x in (run / "data" / "validation.jsonl").read_text().splitlines() if x.strip()]
    n_train, n_val = len(synth_train), max(len(synth_val), 4)
    test_ids = {r["id"] for r in test}
    random.Random(2).shuffle(pool)
    pool = [r for r in pool if r["id"] not in test_ids][: n_train + n_val]
    if len(pool) < n_train + n_val:
        print(f"only {len(pool)} real questions outside the test set; need {n_train + n_val}")
        return 1
    real_dir = out / f"real-train-{args.test}"  # its pool is what the test leaves: one per test size
    real_dir.mkdir(parents=True, exist_ok=True)
    (real_dir / "real.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool))
    ratios = (round(n_train / len(pool), 4), round(1 - n_train / len(pool), 4), 0.0)
    prep = prepare([real_dir / "real.jsonl"], real_dir / "data", PrepareConfig(ratios=ratios, seed=0))
    print(f"synthetic training split: {n_train} train / {len(synth_val)} validation; real: {prep.splits}")

    synth_folder = next(f for f in (run / "ft-reader", run / "ft-raft") if f.is_dir())  # evaluate's rag+ft run
    synth_run = RunFolder.open(synth_folder)
    cfg = FinetuneConfig(**synth_run.config)
    real_run = real_dir / synth_folder.name
    key = json.dumps({"pool": [r["id"] for r in pool], "n_train": n_train, "config": synth_run.config}, sort_keys=True)
    if not (real_dir / "key.json").is_file() or (real_dir / "key.json").read_text() != key:
        shutil.rmtree(real_run, ignore_errors=True)  # trained for another synthetic run or pool: train it again
    (real_dir / "key.json").write_text(key)
    if not (real_run / "results.json").is_file():
        res = train(cfg, real_dir / "data", real_run, index=run / "index")
        print(f"real-trained rag+ft: best validation loss {res.best_val_loss:.3f} at step {res.best_step}")

    (out / "real-test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    strategies = (
        Strategy("rag", retrieval=True),
        Strategy("rag+ft synthetic", retrieval=True, adapter=str(synth_folder)),
        Strategy("rag+ft real", retrieval=True, adapter=str(real_run)),
    )
    exp = ExperimentConfig(index=str(run / "index"), questions=str(out / "real-test.jsonl"), max_questions=len(test),
                           fresh_edits=0, strategies=strategies, seed=0)  # fmt: skip
    res = run_experiment(exp, out / "training-value", progress=print)
    steps = f"{cfg.max_steps} {cfg.mode} steps"
    print(f"\nTested on {len(test)} real questions; {steps} each on {n_train} training questions")
    print("| strategy | EM | F1 |\n|---|---:|---:|")
    for name, agg in res.aggregates.items():
        print(f"| {name} | {agg['em']['mean']:.1f} | {agg['f1']['mean']:.1f} |")
    for p in res.paired:
        if p["metric"] == "f1":
            print(
                f"F1 {p['a']} - {p['b']}: {p['diff']:+.1f} [{p['low']:+.1f}, {p['high']:+.1f}], p={p['p_value']:.3f}"
            )
    figures = {"n_train": n_train, "steps": cfg.max_steps, "test": len(test),
               "f1": {n: a["f1"]["mean"] for n, a in res.aggregates.items()},
               "paired": [p for p in res.paired if p["metric"] == "f1"]}  # fmt: skip
    (out / "training-value.json").write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
