"""A fine-tuning run folder: the one place that knows what `ragtune finetune` leaves behind.

run/
  ragtune-finetune.json   manifest: the FinetuneConfig, base model path, parameter counts
  adapter/ | model/       weights: a PEFT adapter (lora) or a whole model (top-layers, full)
  results.json            TrainResult: losses, test metrics, wall and CPU time
  training_log.jsonl      one line per step / evaluation
  trained-questions.json  a short hash of each question trained on (`data.question_key`): a gate is
                          never calibrated on them (`ragtune tune --generator RUN/model`)
  checkpoint.pt, best.pt  while training (resume: weights, optimizer, RNG states, data position;
                          best validation state with its step); checkpoint.pt goes when the run ends

Every file is written whole (a temp file or folder, then a rename) and results.json last, so a
run killed at any moment leaves either a finished folder or one the same command resumes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelNotFoundError

MANIFEST = "ragtune-finetune.json"
RESULTS = "results.json"
LOG = "training_log.jsonl"
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
TRAINED_ON = "trained-questions.json"


def weights_dir(cfg_method: str) -> str:
    """Where a run of this method keeps its weights."""
    return "adapter" if cfg_method == "lora" else "model"


def _has_weights(p: Path) -> bool:
    return (p / "adapter_config.json").exists() or (p / "config.json").exists()


@dataclass(frozen=True)
class RunFolder:
    """A finished (or foreign) run. `root` is the run folder; `weights` the adapter/model folder."""

    root: Path
    weights: Path

    @classmethod
    def open(cls, path: str | Path) -> RunFolder:
        """A run folder, or its adapter/ or model/ folder, or any PEFT adapter / HF model folder."""
        p = Path(path)
        for cand in (p, p / "adapter", p / "model"):
            if _has_weights(cand):
                root = cand.parent if (cand.parent / MANIFEST).exists() and not (cand / MANIFEST).exists() else cand
                return cls(root, cand)
        raise ModelNotFoundError(f"{str(p)!r} holds no adapter (adapter_config.json) or model (config.json)")

    @property
    def is_adapter(self) -> bool:
        return (self.weights / "adapter_config.json").exists()

    @property
    def manifest(self) -> dict:
        mf = self.root / MANIFEST
        return json.loads(mf.read_text()) if mf.is_file() else {}

    @property
    def config(self) -> dict:
        return self.manifest.get("config", {})

    @property
    def base_model(self) -> str | None:
        """The base model the run started from: the manifest's, else the adapter's own record."""
        if self.config.get("base_model"):
            return self.config["base_model"]
        if self.is_adapter:
            return json.loads((self.weights / "adapter_config.json").read_text()).get("base_model_name_or_path")
        return None

    @property
    def trained_on(self) -> frozenset[str]:
        """The keys (`data.question_key`) of the questions this run trained on; empty when not recorded."""
        f = self.root / TRAINED_ON
        return frozenset(json.loads(f.read_text()).get("questions", ())) if f.is_file() else frozenset()

    @property
    def results(self) -> dict:
        """The run's TrainResult as a dict (wall_s, cpu_s, train_examples, ...), {} for foreign folders."""
        rf = self.root / RESULTS
        return json.loads(rf.read_text()) if rf.is_file() else {}
