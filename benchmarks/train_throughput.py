"""Training throughput and peak memory: ragtune's trainer vs Hugging Face Trainer + PEFT.

Same model (SmolLM2-135M-Instruct), same data (SQuAD dev: passage + question -> answer, loss
on the answer tokens only), same batch size, sequence length, LoRA settings, optimizer and
steps. Each side runs in its own process, so its peak RSS is its own.
ragtune runs once per variant, ACTIVATIONS:PRECISION[:EVERY[:IMPL]] — activations keep |
recompute-mlp | recompute | auto, precision fp32 | base-bf16 | bf16 | auto (auto:auto: the
defaults), recompute every n-th block, LoRA implementation lean (default) | peft — and each
reports its final training loss, so a variant is judged at equal loss, not speed alone.
Targets (issue 12): tokens/s >= 2x HF and peak memory <= 1/3 of HF's.

    python benchmarks/train_throughput.py [--examples 48] [--batch 8] [--steps 6]
        [--variants keep:fp32 keep:fp32:1:peft recompute-mlp:base-bf16 recompute:fp32] [--val-steps 24]

`base-bf16` (the frozen base's matmuls in bfloat16, LoRA in float32) needs a CPU with AMX: without
it bf16 matmuls are far slower than float32 (on an avx512_bf16-only host one bf16 autocast step took
over 10 minutes against 40 s). `--val-steps 24` then trains each variant 24 steps on other examples
and prints its validation loss every 6 steps and its wall time (equal loss is the test).

(examples = batch x steps: one epoch)
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import squad_dev  # noqa: E402

LORA = dict(lora_r=16, lora_alpha=32, lora_dropout=0.05)


def write_qa(n: int, seed: int, path: Path) -> None:
    """`n` SQuAD dev examples (passage + question -> answer) drawn with `seed`, as QA JSONL at `path`."""
    _, examples = squad_dev()
    with path.open("w") as fh:
        for e in random.Random(seed).sample(examples, n):
            fh.write(
                json.dumps({"id": e.id, "question": f"{e.context}\n\nQuestion: {e.question}", "answer": e.answers[0]})
                + "\n"
            )


def make_data(folder: Path, name: str, n: int, seed: int, validation: int = 0) -> None:
    """`n` training and `validation` validation examples drawn with `seed`, prepared in `{name}prep`."""
    from ragtune.finetune.data import PrepareConfig, prepare

    write_qa(n + validation, seed, folder / f"{name}qa.jsonl")
    share = n / (n + validation)
    prepare(
        [folder / f"{name}qa.jsonl"],
        folder / f"{name}prep",
        PrepareConfig(ratios=(share, 1 - share, 0.0), near_dup_threshold=1.0),
    )


def ragtune_config(batch: int, steps: int, variant: str, **options):
    """ragtune's LoRA settings for `variant` (keep|recompute:fp32|bf16[:every n-th layer[:lean|peft]]),
    no warm-up."""
    from ragtune.finetune.config import FinetuneConfig

    activations, precision, every, impl = (variant.split(":") + ["", ""])[:4]
    return FinetuneConfig(
        mode="qa",
        method="lora",
        batch_size=batch,
        max_steps=steps,
        generate_max=0,
        warmup_steps=0,
        lr=2e-4,
        max_seq_len=512,
        activations=activations,
        precision=precision,
        recompute_every=int(every or 1),
        lora_impl=impl or "lean",
        **LORA,
        **options,
    )


def side_ragtune(folder: Path, batch: int, steps: int, variant: str = "keep:fp32") -> dict:
    from ragtune.finetune.train import LOG, train

    cfg = ragtune_config(batch, steps, variant, eval_every=10_000, eval_batches=1)
    out = folder / f"ragtune-out-{variant.replace(':', '-')}"
    res = train(cfg, folder / "prep", out)
    losses = [json.loads(line)["train_loss"] for line in (out / LOG).read_text().splitlines() if line.strip()]
    return {"tokens_per_s": res.tokens_per_s, "final_train_loss": losses[-1]}


def side_val(folder: Path, batch: int, steps: int, variant: str) -> dict:
    """`variant` trained `steps` steps on `val-prep`'s train split, validation loss every steps/4."""
    from ragtune.finetune.train import LOG, train

    cfg = ragtune_config(batch, steps, variant, eval_every=max(1, steps // 4), patience=1000, eval_batches=0)
    out = folder / f"val-out-{variant.replace(':', '-')}"
    t0 = time.perf_counter()
    train(cfg, folder / "val-prep", out)
    log = [json.loads(line) for line in (out / LOG).read_text().splitlines() if line.strip()]
    vals = [[r["step"], r["val_loss"]] for r in log if r.get("val_loss") is not None]
    return {"seconds": time.perf_counter() - t0, "val_loss": vals}


def side_hf(folder: Path, batch: int, steps: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    from ragtune.finetune.config import FinetuneConfig
    from ragtune.finetune.data import read_split
    from ragtune.finetune.examples import encode_examples
    from ragtune.finetune.train import IGNORE, load_base

    cfg = FinetuneConfig(mode="qa", max_seq_len=512, **LORA)
    tok, model, _ = load_base(cfg.base_model)
    model = get_peft_model(
        model,
        LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.target_modules),
            task_type="CAUSAL_LM",
        ),
    )
    data = encode_examples(read_split(folder / "prep" / "train.jsonl"), tok, cfg)
    train_ds = [{"input_ids": x.input_ids, "labels": x.labels} for x in data]

    def collate(items):
        width = max(len(x["input_ids"]) for x in items)
        ids = torch.full((len(items), width), tok.pad_token_id)
        labels = torch.full((len(items), width), IGNORE)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for i, x in enumerate(items):
            n = len(x["input_ids"])
            ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(x["input_ids"]), torch.tensor(x["labels"]), 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    args = TrainingArguments(
        output_dir=str(folder / "hf-out"),
        per_device_train_batch_size=batch,
        max_steps=steps,
        learning_rate=2e-4,
        warmup_steps=0,
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        seed=0,
        data_seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, data_collator=collate)
    if steps * batch != len(train_ds):
        raise SystemExit(
            f"--examples must equal --steps x --batch so both sides see each example once"
            f" ({len(train_ds)} vs {steps * batch})"
        )
    tokens = sum(len(x["input_ids"]) for x in train_ds)
    t0 = time.perf_counter()
    trainer.train()
    return {"tokens_per_s": tokens / (time.perf_counter() - t0)}


def run_side(name: str, folder: Path, batch: int, steps: int, variant: str) -> dict | None:
    """One side in a process of its own (its peak RSS is its own): its RESULT, or None (output printed)."""
    out = subprocess.run(
        [sys.executable, __file__, "--side", name, "--folder", str(folder), "--batch", str(batch),
         "--steps", str(steps), "--variant", variant],
        capture_output=True,
        text=True,
    )  # fmt: skip
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        print(out.stdout[-2000:], out.stderr[-4000:])
        return None
    return json.loads(line[7:])


def default_variants() -> list[str]:
    """fp32 lean (keep, recompute-mlp), peft, recompute; base-bf16 too where the CPU has AMX (without
    it bf16 matmuls are far slower than float32)."""
    variants = ["keep:fp32", "recompute-mlp:fp32", "keep:fp32:1:peft", "recompute:fp32"]
    try:
        amx = " amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        amx = False
    return variants + (["keep:base-bf16", "recompute-mlp:base-bf16"] if amx else [])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=48)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--side", choices=("ragtune", "hf", "val"))
    ap.add_argument("--val-steps", type=int, default=0, help="also train each variant this long; validation losses")
    ap.add_argument("--variant", default="keep:fp32", help="for --side ragtune: ACTIVATIONS:PRECISION")
    ap.add_argument("--variants", nargs="+", default=default_variants())
    ap.add_argument("--folder")
    args = ap.parse_args()
    if args.side:
        folder = Path(args.folder)
        if args.side == "ragtune":
            res = side_ragtune(folder, args.batch, args.steps, args.variant)
        elif args.side == "val":
            res = side_val(folder, args.batch, args.steps, args.variant)
        else:
            res = side_hf(folder, args.batch, args.steps)
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(res), flush=True)
        return 0

    folder = Path(tempfile.mkdtemp(prefix="ragtune-train-bench-"))
    make_data(folder, "", args.examples, 0)
    results = {}
    for side in ["hf"] + [f"ragtune {v}" for v in args.variants]:
        name, _, variant = side.partition(" ")
        r = run_side(name, folder, args.batch, args.steps, variant or "keep:fp32")
        if r is None:
            return 1
        results[side] = r
        loss = f"   final train loss {r['final_train_loss']:.3f}" if r.get("final_train_loss") is not None else ""
        print(f"{side:<26} {r['tokens_per_s']:8.1f} tokens/s   peak RSS {r['peak_rss_mb']:8.0f} MB{loss}", flush=True)
    hf = results["hf"]
    print(f"\n{'ragtune variant':<26} {'tokens/s vs HF':>15} {'peak RSS vs HF':>15}   (targets >= 2.0, <= 0.33)")
    ok = False
    for side, r in results.items():
        if side == "hf":
            continue
        speed, mem = r["tokens_per_s"] / hf["tokens_per_s"], r["peak_rss_mb"] / hf["peak_rss_mb"]
        ok |= speed >= 2.0 and mem <= 1 / 3
        print(f"{side:<26} {speed:>15.2f} {mem:>15.2f}")
    if args.val_steps:
        make_data(folder, "val-", args.val_steps * args.batch, 1, validation=64)
        print(f"\nvalidation loss over {args.val_steps} steps of {args.batch} (64 validation examples)")
        for variant in args.variants:
            r = run_side("val", folder, args.batch, args.val_steps, variant)
            if r is None:
                return 1
            curve = "  ".join(f"step {s}: {v:.4f}" for s, v in r["val_loss"])
            print(f"ragtune {variant:<18} {r['seconds']:6.0f} s   {curve}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
