"""What the round-trip filter does to training: rag+ft's reader trained on the synthetic training split
(questions that passed every filter), on as many synthetic questions written *without* the round trip, and
on the training split plus the questions that failed only the round trip — each tested on real questions
against rag and against the same training on real questions (benchmarks/training_value.py's adapter).

Runs on the output of `benchmarks/evaluate_folder.py` made *before* evaluate trained on round-trip failures
(its data/train.jsonl holds filtered questions only), after `benchmarks/training_value.py --test T` on it:

    python benchmarks/evaluate_folder.py --budget-min 30 --real-test 200 --out DIR   # (code before d801c13)
    python benchmarks/training_value.py --out DIR --test 160
    python benchmarks/round_trip_training.py --out DIR --test 160

Measured 2026-12-06 (DIR of cd45303, 234 training questions, 66 reader steps; 160 real test questions): rag 37.8;
filtered 234: 37.9; unfiltered 234: 39.0 (+1.2, p 0.54); 234 + 180 failures: 40.2 (+2.4, p 0.21); real 235: 41.6.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/ragtune-bench/evaluate")
    ap.add_argument("--test", type=int, default=160, help="as given to training_value.py")
    args = ap.parse_args()

    from ragtune import Index
    from ragtune.evaluation.compare import ExperimentConfig, load_results, run_experiment
    from ragtune.evaluation.metrics import normalize_answer
    from ragtune.evaluation.stats import paired_bootstrap
    from ragtune.evaluation.strategies import Strategy
    from ragtune.finetune.config import FinetuneConfig
    from ragtune.finetune.data import PrepareConfig, prepare
    from ragtune.finetune.run import RunFolder
    from ragtune.finetune.train import train
    from ragtune.synth.generate import SynthConfig, synthesize, write_questions

    out = Path(args.out)
    run = out / "run"
    rows = lambda p: [json.loads(x) for x in Path(p).read_text().splitlines() if x.strip()]  # noqa: E731
    n_train, n_val = len(rows(run / "data" / "train.jsonl")), len(rows(run / "data" / "validation.jsonl"))
    if any(r["id"].startswith("synth-t-") for r in rows(run / "data" / "train.jsonl")):
        print(f"{run / 'data'} already trains on round-trip failures: use a folder made before d801c13")
        return 1
    cfg = FinetuneConfig(**RunFolder.open(run / "ft-reader").config)

    # Every filter but the round trip: the same writer and seed, the reader's rank recorded (0 = beyond its top 3).
    x = out / "round-trip-training"
    x.mkdir(parents=True, exist_ok=True)
    loose = x / "unfiltered.jsonl"
    if not loose.is_file():
        qs, rep = synthesize(list(Index.open(run / "index").chunks()), SynthConfig(n=400, seed=0, round_trip_top=1000))
        write_questions(qs, rep, loose)
    unfiltered = rows(loose)
    random.Random(0).shuffle(unfiltered)
    pool = unfiltered[: n_train + n_val]
    (x / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool))
    ratios = (round(n_train / len(pool), 4), round(1 - n_train / len(pool), 4), 0.0)
    prepare([x / "pool.jsonl"], x / "unfiltered-data", PrepareConfig(ratios=ratios, seed=0))

    # The training split plus the failures (beyond the top 3), none with a test question's document and answer.
    test = rows(run / "data" / "test.jsonl")
    taken = {(r["doc_id"], normalize_answer(r["answer"])) for r in test}
    asked = {normalize_answer(r["question"]) for r in test}
    fails = [r for r in unfiltered if r["scores"]["round_trip_rank"] > 3
             and (r["doc_id"], normalize_answer(r["answer"])) not in taken
             and normalize_answer(r["question"]) not in asked]  # fmt: skip
    plus = x / "plus-failures-data"
    plus.mkdir(exist_ok=True)
    keys = ("id", "question", "answer", "answers", "context", "doc_id")
    added = [{**{k: r[k] for k in keys}, "id": r["id"] + "-f", "kind": "qa", "text": "", "source": str(loose)}
             for r in fails]  # fmt: skip
    (plus / "train.jsonl").write_text(
        (run / "data" / "train.jsonl").read_text() + "".join(json.dumps(r) + "\n" for r in added)
    )
    (plus / "validation.jsonl").write_text((run / "data" / "validation.jsonl").read_text())
    (plus / "test.jsonl").write_text("")
    print(f"unfiltered: {len(unfiltered)} written, pool {len(pool)}; failures added to training: {len(fails)}")

    strategies = []
    for name, data in (("unfiltered", x / "unfiltered-data"), ("plus failures", plus)):
        folder = x / name.replace(" ", "-") / "ft-reader"  # the same generator name as evaluate's adapter
        if not (folder / "results.json").is_file():
            res = train(cfg, data, folder, index=run / "index")
            print(f"{name}: best validation loss {res.best_val_loss:.3f} at step {res.best_step}")
        strategies.append(Strategy(f"rag+ft {name}", retrieval=True, adapter=str(folder)))
    exp = ExperimentConfig(index=str(run / "index"), questions=str(out / "real-test.jsonl"), max_questions=args.test,
                           fresh_edits=0, strategies=tuple(strategies), seed=0)  # fmt: skip
    new = run_experiment(exp, x / "compare", progress=print)
    old = load_results(out / "training-value")  # rag, rag+ft synthetic (filtered), rag+ft real
    f1 = lambda res, s: {r.question_id: 100 * r.f1 for r in res.records if r.strategy == s and r.kind == "answerable"}  # noqa: E731
    for s in strategies:
        mine = f1(new, s.name)
        for other in ("rag", "rag+ft synthetic", "rag+ft real"):
            theirs = f1(old, other)
            ids = [i for i in mine if i in theirs]
            p = paired_bootstrap([mine[i] for i in ids], [theirs[i] for i in ids], (s.name, other), "f1", 5000, 0)
            print(f"F1 {s.name} {sum(mine[i] for i in ids) / len(ids):.1f} - {other} "
                  f"{sum(theirs[i] for i in ids) / len(ids):.1f}: {p.diff:+.1f} [{p.low:+.1f}, {p.high:+.1f}], "
                  f"p={p.p_value:.3f} (n {len(ids)})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
