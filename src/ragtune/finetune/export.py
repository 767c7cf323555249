"""Export: merge a LoRA adapter into its base model -> a standalone Hugging Face model folder."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import ConfigError
from .run import RunFolder


def export_merged(adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Load base + adapter, merge the LoRA weights in, and save model + tokenizer (safetensors).
    `adapter_dir` is a run's output folder or its `adapter/` (or `model/`) subfolder."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = RunFolder.open(adapter_dir)
    src = run.weights
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{str(out)!r} exists and is not empty; choose a new --out")
    if (src / "config.json").exists():  # top-layers / full: already a whole model
        shutil.copytree(src, out, dirs_exist_ok=True)
        return out
    base_path = run.base_model
    if not base_path or not Path(base_path).exists():
        from ..models import resolve_generator

        base_path = str(resolve_generator(base_path))
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), str(src))
    merged = model.merge_and_unload()
    merged.save_pretrained(str(out), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(src) if (src / "tokenizer_config.json").exists() else base_path).save_pretrained(
        str(out)
    )
    return out
