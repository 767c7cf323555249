"""Export: merge a LoRA adapter into its base model -> a standalone Hugging Face model folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import RagtuneError


def find_weights(path: str | Path) -> Path | None:
    """A run's output folder or its `adapter/` / `model/` subfolder -> the folder with the weights."""
    p = Path(path)
    for cand in (p, p / "adapter", p / "model"):
        if (cand / "adapter_config.json").exists() or (cand / "config.json").exists():
            return cand
    return None


def export_merged(adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Load base + adapter, merge the LoRA weights in, and save model + tokenizer (safetensors).
    `adapter_dir` is a run's output folder or its `adapter/` (or `model/`) subfolder."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = find_weights(adapter_dir)
    if src is None:
        raise RagtuneError(f"{str(adapter_dir)!r} holds no adapter (adapter_config.json) or model (config.json)")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise RagtuneError(f"{str(out)!r} exists and is not empty; choose a new --out")
    if (src / "config.json").exists():  # top-layers / full: already a whole model
        shutil.copytree(src, out, dirs_exist_ok=True)
        return out
    base_path = json.loads((src / "adapter_config.json").read_text())["base_model_name_or_path"]
    if not Path(base_path).exists():
        from ..models import resolve_generator

        base_path = str(resolve_generator(base_path))
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), str(src))
    merged = model.merge_and_unload()
    merged.save_pretrained(str(out), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(src) if (src / "tokenizer_config.json").exists() else base_path).save_pretrained(str(out))
    return out
