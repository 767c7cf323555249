"""Fine-tuning configuration: one frozen dataclass, every field with its reason."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from ..config import DEFAULT_GENERATOR
from ..errors import ConfigError

MODES = ("corpus", "qa", "raft", "reader", "qg")
METHODS = ("lora", "top-layers", "full")
SCHEDULES = ("cosine", "linear", "constant")


def opt(default, help: str, choices: tuple | None = None, cli: str = ""):
    """A field whose help text (and choices) the CLI and docs derive from, as PEFT's configs do.
    `cli` renames the command-line option (default: the field name with dashes)."""
    meta = {"help": help, "choices": choices, "cli": cli}
    if isinstance(default, tuple):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class FinetuneConfig:
    base_model: str = opt(DEFAULT_GENERATOR, "base model: registry name, HF folder or .gguf", cli="model")
    mode: str = opt(
        "qa",
        "corpus: next-token on chunks | qa: question -> answer | raft: question + retrieved context -> cited answer"
        " | reader: the answer's sentence + question -> the answer span (the extracting reader of rag)"
        " | qg: passage + answer -> question (question generation)",
        MODES,
    )
    method: str = opt(
        "lora", "lora: low-rank adapters | top-layers: the top N blocks train | full: every weight trains", METHODS
    )
    # LoRA
    lora_r: int = opt(16, "LoRA rank")
    lora_alpha: int = opt(32, "LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = opt(0.05, "dropout on the LoRA path")
    target_modules: tuple[str, ...] = opt(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        "comma-separated modules LoRA adapts",
    )
    top_layers: int = opt(2, "top-layers: the top N decoder blocks and the final norm train, the rest is frozen")
    lora_layers: int = opt(
        0,
        "lora: adapt only the top N decoder blocks (0 = all); the backward pass then stops at the lowest "
        "adapted block, so a step costs less",
    )
    # optimisation
    lr: float = opt(3e-4, "peak learning rate: LoRA likes ~1e-4..5e-4; use ~2e-5 for full fine-tuning")
    schedule: str = opt("cosine", "learning-rate schedule after warm-up", SCHEDULES)
    warmup_steps: int = opt(10, "linear warm-up steps")
    batch_size: int = opt(8, "examples per step (before accumulation)")
    grad_accum: int = opt(1, "steps whose gradients are summed before an update")
    epochs: int = opt(2, "passes over the training split")
    max_steps: int = opt(0, "stop after this many steps (0 = run the epochs)")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    grad_clip: float = opt(1.0, "gradient norm clip")
    max_seq_len: int = opt(512, "tokens per example; cut from the left of the prompt, never in the answer")
    activations: str = opt(
        "auto",
        "keep: every layer's activations stay for the backward pass (fastest) | recompute-mlp: lora with"
        " lora_impl=lean: each MLP keeps only its input and computes gate and up again in the backward pass"
        " (0.6x keep's peak memory at 0.85x its speed) | recompute: gradient checkpointing, and freed"
        " memory goes back to the OS: far less memory, slower | auto: recompute-mlp for lean LoRA, keep"
        " otherwise (benchmarks/train_throughput.py)",
        ("auto", "keep", "recompute-mlp", "recompute"),
    )
    recompute_every: int = opt(1, "with activations=recompute: recompute every n-th layer only (2: half the layers)")
    lora_impl: str = opt(
        "lean",
        "lora: lean: LoRA projections and the SwiGLU MLP run as hand-written passes that keep only what the"
        " backward pass reads (dropout masks drawn again from a seed): the same gradients from under half the"
        " activation memory | peft: peft's modules as they are",
        ("lean", "peft"),
    )
    precision: str = opt(
        "auto",
        "fp32 | bf16: bfloat16 autocast | base-bf16: lora with lora_impl=lean: only the frozen base's matmuls"
        " in bfloat16, LoRA and the rest in float32 (on CPUs with AMX 1.3x faster steps, validation loss"
        " +0.14 %; without AMX far slower) | auto: bf16 autocast on a GPU that has it, base-bf16 for lean LoRA"
        " on a CPU with AMX, else fp32 (bf16 autocast on CPUs: >15x slower without AMX; 1.2x faster with AMX"
        " but a higher validation loss at equal time)",
        ("fp32", "bf16", "base-bf16", "auto"),
    )
    quantize: str = opt(
        "none",
        "none | 4bit: QLoRA, the frozen base held in 4-bit NF4 (bitsandbytes, CUDA only) under LoRA adapters"
        " computed in bf16: for models too large to train in bf16 (benchmarks/gpu_train.py)",
        ("none", "4bit"),
    )
    # monitoring
    eval_every: int = opt(25, "steps between validation losses (and checkpoints)")
    patience: int = opt(3, "evaluations without improvement before stopping early")
    eval_batches: int = opt(0, "batches of the validation (and test) split to score; 0 = all of it")
    generate_max: int = opt(100, "test examples answered for EM/F1/ROUGE/BLEU (generation is slow on a CPU)")
    seed: int = opt(0, "random seed (data order, LoRA init, RAFT sampling)")
    # raft
    raft_k: int = opt(4, "raft: sources per example, the gold chunk plus retrieved distractors")
    raft_p_no_gold: float = opt(0.2, "raft: share of examples whose sources leave out the gold chunk")
    raft_no_gold_target: str = opt(
        "abstain",
        "raft: target without the gold chunk: abstain (the abstention phrase) | answer (RAFT paper)",
        ("abstain", "answer"),
    )

    def __post_init__(self) -> None:
        checks = [
            (self.mode in MODES, "mode", f"one of {MODES}"),
            (self.method in METHODS, "method", f"one of {METHODS}"),
            (self.schedule in SCHEDULES, "schedule", f"one of {SCHEDULES}"),
            (self.lora_r >= 1, "lora_r", ">= 1"),
            (self.lora_alpha >= 1, "lora_alpha", ">= 1"),
            (0 <= self.lora_dropout < 1, "lora_dropout", "in [0, 1)"),
            (self.top_layers >= 1, "top_layers", ">= 1"),
            (self.lora_layers >= 0, "lora_layers", ">= 0 (0 = every block)"),
            (self.lr > 0, "lr", "> 0"),
            (self.warmup_steps >= 0, "warmup_steps", ">= 0"),
            (self.batch_size >= 1, "batch_size", ">= 1"),
            (self.grad_accum >= 1, "grad_accum", ">= 1"),
            (self.epochs >= 1, "epochs", ">= 1"),
            (self.max_steps >= 0, "max_steps", ">= 0"),
            (self.weight_decay >= 0, "weight_decay", ">= 0"),
            (self.max_seq_len >= 16, "max_seq_len", ">= 16"),
            (self.eval_every >= 1, "eval_every", ">= 1"),
            (self.patience >= 1, "patience", ">= 1"),
            (self.raft_k >= 1, "raft_k", ">= 1"),
            (0 <= self.raft_p_no_gold <= 1, "raft_p_no_gold", "in [0, 1]"),
            (self.raft_no_gold_target in ("abstain", "answer"), "raft_no_gold_target", "abstain or answer"),
            (
                self.activations in ("auto", "keep", "recompute-mlp", "recompute"),
                "activations",
                "auto, keep, recompute-mlp or recompute",
            ),
            (
                self.activations != "recompute-mlp" or self.lean_lora,
                "activations",
                "recompute-mlp only with method='lora' and lora_impl='lean'",
            ),
            (self.recompute_every >= 1, "recompute_every", ">= 1"),
            (self.lora_impl in ("lean", "peft"), "lora_impl", "lean or peft"),
            (self.precision in ("fp32", "bf16", "base-bf16", "auto"), "precision", "fp32, bf16, base-bf16 or auto"),
            (
                self.precision != "base-bf16" or self.lean_lora,
                "precision",
                "base-bf16 only with method='lora' and lora_impl='lean'",
            ),
            (self.quantize in ("none", "4bit"), "quantize", "none or 4bit"),
            (self.quantize == "none" or self.method == "lora", "quantize", "none unless method='lora' (QLoRA)"),
        ]
        for ok, name, want in checks:
            if not ok:
                raise ConfigError(f"{name}={getattr(self, name)!r}: must be {want}")

    @property
    def lean_lora(self) -> bool:
        """LoRA through lean.py's hand-written passes (what recompute-mlp and base-bf16 need)."""
        return self.method == "lora" and self.lora_impl == "lean"

    @property
    def activation_mode(self) -> str:
        """What `activations` means for this run: `auto` is recompute-mlp for lean LoRA (with base-bf16 on
        an AMX CPU 2.5x HF+PEFT's tokens/s at 0.31x its peak memory; keep: 2.95x at 0.49x), else keep."""
        if self.activations != "auto":
            return self.activations
        return "recompute-mlp" if self.lean_lora else "keep"

    def fingerprint(self) -> str:
        """What must match for a run to resume from a checkpoint (monitoring knobs excluded)."""
        d = asdict(self)
        for k in ("eval_every", "patience", "eval_batches", "generate_max", "max_steps", "epochs"):
            d.pop(k)
        # How activations are held changes memory, not the numbers; fp32 is what runs before it was a choice.
        d.pop("activations"), d.pop("recompute_every")
        if d["precision"] == "fp32":
            d.pop("precision")
        if d["quantize"] == "none":  # as before it was a choice
            d.pop("quantize")
        if d["lora_impl"] == "peft" or d["lora_dropout"] == 0 or d["method"] != "lora":
            d.pop("lora_impl")  # the same numbers as before it was a choice (lean draws other dropout masks)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
