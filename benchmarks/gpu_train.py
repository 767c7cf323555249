"""Training on a CUDA GPU: tokens/s and peak GPU memory of ragtune's trainer per precision and
method, at the bundled model's shape (SmolLM2-135M) and one ten times larger (SmolLM2-1.7B's
shape), against LoRA in float32 at the same shape (the baseline of each ratio).

Variants (method:precision:activations): LoRA in float32; LoRA under bf16 autocast with its
frozen base held in bf16 (`--precision auto` on a GPU); the same with recomputed activations;
QLoRA (`--quantize 4bit`: NF4 base, bf16 compute); full fine-tuning in float32 and bf16 autocast.
Weights are random (speed and memory do not depend on their values), so no model is downloaded;
the tokenizer is word-level (one token per word). The loss is on the answer tokens only, as in
`finetune --mode qa`. Each variant runs `ragtune.finetune.train.train`, the code users run.

    python benchmarks/gpu_train.py [--shapes 135m 1.7b] [--batch 8] [--seq 512] [--steps 12]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.tiny_models import build_tiny_llama  # noqa: E402

SHAPES = {  # the configs of HuggingFaceTB/SmolLM2-135M-Instruct (the bundled model) and SmolLM2-1.7B
    "135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                 num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192),
    "1.7b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                 num_key_value_heads=32, vocab_size=49152, max_position_embeddings=8192),
}  # fmt: skip
VARIANTS = {
    "135m": ["lora:fp32:keep", "lora:auto:keep", "lora:auto:recompute", "qlora:auto:keep", "full:fp32:keep",
             "full:auto:keep"],
    "1.7b": ["lora:fp32:keep", "lora:auto:keep", "lora:auto:recompute", "qlora:auto:keep", "qlora:auto:recompute"],
}  # fmt: skip
WORDS = 5000


def make_data(folder: Path, n: int, seq: int) -> Path:
    from ragtune.finetune.data import PrepareConfig, prepare

    rng = random.Random(0)
    with (folder / "qa.jsonl").open("w") as fh:
        for i in range(n):
            question = " ".join(f"w{rng.randrange(WORDS)}" for _ in range(seq - 30))
            answer = " ".join(f"w{rng.randrange(WORDS)}" for _ in range(8))
            fh.write(json.dumps({"id": f"q{i}", "question": question, "answer": answer}) + "\n")
    prepare([folder / "qa.jsonl"], folder / "prep", PrepareConfig(ratios=(0.9, 0.1, 0.0), near_dup_threshold=1.0))
    return folder / "prep"


def run(model: Path, data: Path, out: Path, variant: str, batch: int, seq: int, steps: int) -> dict:
    import torch

    from ragtune.finetune.config import FinetuneConfig
    from ragtune.finetune.train import LOG, train

    method, precision, activations = variant.split(":")
    cfg = FinetuneConfig(
        base_model=str(model), mode="qa", method="full" if method == "full" else "lora",
        quantize="4bit" if method == "qlora" else "none", precision=precision, activations=activations,
        batch_size=batch, max_steps=steps, eval_every=10_000, eval_batches=1, generate_max=0, warmup_steps=0,
        lr=2e-4 if method != "full" else 2e-5, max_seq_len=seq, lora_r=16, lora_alpha=32, lora_dropout=0.05,
    )  # fmt: skip
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = train(cfg, data, out)
    wall = time.perf_counter() - t0
    log = [json.loads(line) for line in (out / LOG).read_text().splitlines() if line.strip()]
    per_step = [r["tokens_per_s"] for r in log[2:]] or [r["tokens_per_s"] for r in log]  # after warm-up
    return {
        "variant": variant,
        "tokens_per_s": statistics.median(per_step),
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "first_loss": log[0]["train_loss"],
        "final_loss": log[-1]["train_loss"],
        "val_loss": res.best_val_loss,
        "trainable": res.trainable_params,
        "wall_s": wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--variants", nargs="*", help="only these (method:precision:activations)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu_train.py needs a CUDA GPU (torch sees none)")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        print("bitsandbytes is not installed: the QLoRA variants are left out", flush=True)
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | batch {a.batch} x {a.seq} tokens, "
          f"{a.steps} steps (median tokens/s after 2 warm-up steps)", flush=True)  # fmt: skip
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_data(tmp, a.batch * (a.steps + 2) + 16, a.seq)
        for shape in a.shapes:
            t0 = time.perf_counter()
            model = build_tiny_llama(tmp / shape, n_words=WORDS, device="cuda", **SHAPES[shape])
            print(f"\n{shape}: random weights built and saved in {time.perf_counter() - t0:.0f} s", flush=True)
            rows = []
            for variant in a.variants or VARIANTS[shape]:
                if variant.startswith("qlora") and "bitsandbytes" not in sys.modules:
                    continue
                try:
                    rows.append(run(model, data, tmp / f"out-{shape}-{variant.replace(':', '-')}", variant,
                                    a.batch, a.seq, a.steps))  # fmt: skip
                except torch.cuda.OutOfMemoryError as exc:
                    rows.append({"variant": variant, "error": f"out of memory: {exc}"[:200]})
                r = rows[-1]
                print(json.dumps(r), flush=True)
            base = next((r for r in rows if r["variant"] == "lora:fp32:keep" and "error" not in r), None)
            print(f"\n{shape} | variant | tokens/s | x lora fp32 | peak GiB | x lora fp32 | loss first -> last | val")
            for r in rows:
                if "error" in r:
                    print(f"{shape} | {r['variant']} | {r['error']}")
                    continue
                sp = r["tokens_per_s"] / base["tokens_per_s"] if base else float("nan")
                mem = r["peak_gib"] / base["peak_gib"] if base else float("nan")
                print(f"{shape} | {r['variant']} | {r['tokens_per_s']:.0f} | {sp:.2f} | {r['peak_gib']:.2f} | "
                      f"{mem:.2f} | {r['first_loss']:.3f} -> {r['final_loss']:.3f} | {r['val_loss']:.3f}")  # fmt: skip
            results[shape] = rows
            import shutil

            shutil.rmtree(model, ignore_errors=True)
    if a.json:
        a.json.write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                      "batch": a.batch, "seq": a.seq, "steps": a.steps, "results": results},
                                     indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
