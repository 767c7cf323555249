"""Reproduce the bundled question-generation adapter (src/ragtune/data/qg-adapter/) from SQuAD v1.1 dev.

    python scripts/train_qg_adapter.py [--examples N] [--out /tmp/qg-run] [--install]

Examples: every question of every SQuAD v1.1 dev article except HELD_OUT_ARTICLES (the demo's and the
quality benchmark's; 8,062, or a seeded sample of --examples); passage = the gold answer's sentence and one
neighbour each side; target = the real question. Trained with ragtune's own trainer (mode qg, LoRA r=8),
one epoch; re-running the same command resumes. With --install the adapter is converted to float16 and
written to the package.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SQUAD_DEV = Path(os.environ.get("SQUAD_DEV", ROOT.parent / "shared" / "datasets" / "squad_v1.1_dev" / "dev-v1.1.json"))
TARGET = ROOT / "src" / "ragtune" / "data" / "qg-adapter"
MODULES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "up_proj",
    "down_proj",
)  # r=8 on these: ~1.9M params, ~3.9 MB in fp16


def install(run: Path, target: Path, info: dict) -> Path:
    """Copy the adapter into the package as float16 safetensors, naming the registry base model."""
    from safetensors.torch import load_file, save_file

    src = run / "adapter"
    target.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.half().contiguous() for k, v in load_file(str(src / "adapter_model.safetensors")).items()}
    save_file(tensors, str(target / "adapter_model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((src / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "smollm2-135m-instruct"
    (target / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    (target / "training.json").write_text(json.dumps(info, indent=2))
    size = (target / "adapter_model.safetensors").stat().st_size
    if size > 5_000_000:
        sys.exit(f"adapter is {size / 1e6:.2f} MB: over the 5 MB budget; use a smaller rank or fewer modules")
    return target


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--examples",
        type=int,
        default=0,
        help="examples sampled (0, the default: all 8,062; one epoch of 953 steps of 8 took 44 min on 2 cores)",
    )
    ap.add_argument("--out", default="/tmp/ragtune-qg-run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-steps", type=int, default=0, help="stop early (for a quick check)")
    ap.add_argument("--install", action="store_true", help="write the fp16 adapter into src/ragtune/data/qg-adapter")
    args = ap.parse_args()

    from ragtune.finetune.config import FinetuneConfig
    from ragtune.finetune.data import PrepareConfig, prepare
    from ragtune.finetune.train import train
    from ragtune.synth.qg import HELD_OUT_ARTICLES, qg_examples_from_squad

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = qg_examples_from_squad(SQUAD_DEV, exclude=HELD_OUT_ARTICLES)
    articles = {r["doc_id"].rsplit("/", 1)[0] for r in records}
    assert not articles & set(HELD_OUT_ARTICLES), "a held-out article leaked into the training data"
    random.Random(args.seed).shuffle(records)
    records = records[: args.examples or None]
    (out / "qg.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    print(
        f"{len(records)} examples from {len(articles)} articles (held out: {', '.join(HELD_OUT_ARTICLES)})", flush=True
    )
    prep = prepare([out / "qg.jsonl"], out / "data", PrepareConfig(ratios=(0.95, 0.05, 0.0), seed=args.seed))
    print(f"prepared: {prep.kept} kept, splits {prep.splits}", flush=True)

    cfg = FinetuneConfig(mode="qg", method="lora", lora_r=8, lora_alpha=16, lora_dropout=0.05, target_modules=MODULES,
                         lr=4e-4, batch_size=8, epochs=1, max_steps=args.max_steps, warmup_steps=20, eval_every=50,
                         patience=3, eval_batches=8, generate_max=0, max_seq_len=192, seed=args.seed)  # fmt: skip
    t0 = time.perf_counter()
    last = {"t": 0.0}

    def progress(step, total, loss, tps):
        if time.perf_counter() - last["t"] > 30 or step == total:
            last["t"] = time.perf_counter()
            print(f"step {step}/{total} loss {loss:.3f} {tps:.0f} tokens/s {time.perf_counter() - t0:.0f}s", flush=True)

    res = train(cfg, out / "data", out / "run", progress=progress)
    print(f"trained {res.steps} steps in {res.wall_s:.0f}s ({res.tokens_per_s:.0f} tokens/s); best validation loss "
          f"{res.best_val_loss:.3f} at step {res.best_step}", flush=True)  # fmt: skip
    if args.install:
        log = [
            json.loads(line) for line in (out / "run" / "training_log.jsonl").read_text().splitlines() if line.strip()
        ]
        info = {"config": asdict(cfg), "examples": prep.splits, "articles": len(articles), "wall_s": res.wall_s,
                "tokens_per_s": res.tokens_per_s, "steps": res.steps, "best_val_loss": res.best_val_loss,
                "best_step": res.best_step, "validation": [r for r in log if "val_loss" in r],
                "held_out_articles": list(HELD_OUT_ARTICLES), "source": "SQuAD v1.1 dev (CC BY-SA 4.0)"}  # fmt: skip
        target = install(out / "run", TARGET, info)
        shutil.copy(out / "data" / "report.md", target / "data-report.md")
        print(f"installed: {target} ({(target / 'adapter_model.safetensors').stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
