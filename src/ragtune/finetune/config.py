"""Fine-tuning configuration: one frozen dataclass, every field with its reason."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from ..errors import ConfigError

MODES = ("corpus", "qa", "raft")
METHODS = ("lora", "top-layers", "full")
SCHEDULES = ("cosine", "linear", "constant")


@dataclass(frozen=True)
class FinetuneConfig:
    base_model: str = "smollm2-135m-instruct"  # registry name, HF folder or .gguf
    mode: str = "qa"  # corpus: next-token on chunks | qa: question -> answer | raft: question + retrieved context -> cited answer
    method: str = "lora"  # lora | top-layers | full
    # LoRA
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    # top-layers: the top N decoder blocks and the final norm train, the rest is frozen
    top_layers: int = 2
    # optimisation
    lr: float = 3e-4  # LoRA likes ~1e-4..5e-4; use ~2e-5 for full fine-tuning
    schedule: str = "cosine"
    warmup_steps: int = 10
    batch_size: int = 8
    grad_accum: int = 1
    epochs: int = 2
    max_steps: int = 0  # 0 = run the epochs
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    max_seq_len: int = 512  # examples are cut from the left of the prompt, never in the answer
    # monitoring
    eval_every: int = 25  # steps between validation losses (and checkpoints)
    patience: int = 3  # evaluations without improvement before stopping
    eval_batches: int = 0  # batches of the validation (and test) split to score; 0 = all of it
    generate_max: int = 100  # test examples answered for EM/F1/ROUGE/BLEU (generation is slow on a CPU)
    seed: int = 0
    # raft
    raft_k: int = 4  # sources per example: the gold chunk plus retrieved distractors
    raft_p_no_gold: float = 0.2  # share of examples whose sources leave out the gold chunk
    raft_no_gold_target: str = "abstain"  # abstain: the target is the abstention phrase | answer: answer anyway (RAFT paper)

    def __post_init__(self) -> None:
        checks = [
            (self.mode in MODES, "mode", f"one of {MODES}"),
            (self.method in METHODS, "method", f"one of {METHODS}"),
            (self.schedule in SCHEDULES, "schedule", f"one of {SCHEDULES}"),
            (self.lora_r >= 1, "lora_r", ">= 1"),
            (self.lora_alpha >= 1, "lora_alpha", ">= 1"),
            (0 <= self.lora_dropout < 1, "lora_dropout", "in [0, 1)"),
            (self.top_layers >= 1, "top_layers", ">= 1"),
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
        ]
        for ok, name, want in checks:
            if not ok:
                raise ConfigError(f"{name}={getattr(self, name)!r}: must be {want}")

    def fingerprint(self) -> str:
        """What must match for a run to resume from a checkpoint (monitoring knobs excluded)."""
        d = asdict(self)
        for k in ("eval_every", "patience", "eval_batches", "generate_max", "max_steps", "epochs"):
            d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
