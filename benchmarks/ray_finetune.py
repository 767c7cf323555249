"""`finetune --ray --workers 2` against 1 worker and against a local run, on the same examples.

The bundled generator, LoRA, QA mode on the demo's SQuAD questions (prepared once), `--steps`
optimizer steps of `--batch` examples: each run sees the same examples per step. Prints wall time
of training, tokens/s, the final training and best validation losses, and the ratios.
A local Ray with `--cpus` CPUs; each Ray worker gets an equal share of them.

    python benchmarks/ray_finetune.py [--steps 6] [--batch 8] [--cpus 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--cpus", type=int, default=2)
    args = ap.parse_args()

    import ray

    from ragtune.demo import demo_data_path
    from ragtune.distributed import ray_finetune
    from ragtune.finetune.config import FinetuneConfig
    from ragtune.finetune.data import PrepareConfig, prepare
    from ragtune.finetune.train import train

    tmp = Path(tempfile.mkdtemp(prefix="ray-finetune-"))
    prepare([demo_data_path()], tmp / "data", PrepareConfig())
    cfg = FinetuneConfig(mode="qa", method="lora", batch_size=args.batch, max_steps=args.steps,
                         eval_every=args.steps, eval_batches=4, generate_max=0, warmup_steps=0)  # fmt: skip

    def row(name: str, out: Path, res) -> dict:
        log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
        return {"run": name, "wall_s": res.wall_s, "tok_s": res.tokens_per_s, "train_loss": log[-1]["train_loss"],
                "val_loss": res.best_val_loss}  # fmt: skip

    rows = [row("local", tmp / "local", train(cfg, tmp / "data", tmp / "local"))]
    print(rows[-1], flush=True)
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    for n in (1, 2):
        out = tmp / f"ray{n}"
        rows.append(row(f"ray {n} worker(s)", out, ray_finetune(cfg, tmp / "data", out, workers=n)))
        print(rows[-1], flush=True)
    ray.shutdown()

    base = rows[0]
    print(f"\n{args.steps} LoRA steps x {args.batch} examples, bundled generator, local Ray with {args.cpus} CPUs")
    print(f"{'run':<18} {'train s':>8} {'tok/s':>7} {'vs local':>9} {'train loss':>11} {'val loss':>9}")
    for r in rows:
        print(f"{r['run']:<18} {r['wall_s']:>8.1f} {r['tok_s']:>7.1f} {r['tok_s'] / base['tok_s']:>9.2f} "
              f"{r['train_loss']:>11.4f} {r['val_loss']:>9.4f}")  # fmt: skip
    print(f"2 workers vs 1: {rows[2]['tok_s'] / rows[1]['tok_s']:.2f}x tokens/s")


if __name__ == "__main__":
    main()
