"""Where models run: `auto` picks CUDA, then Apple's MPS, then the CPU; bfloat16 where it pays."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")


def _cpu_flags() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), where it runs a small
    model about 1.6x faster than float32 (benchmarks/synth_quality.py); elsewhere it is slower."""
    flags = _cpu_flags()
    return " avx512_bf16" in flags or " amx_bf16" in flags


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles for bfloat16: there a bf16 matmul of a training step's shape
    ran 4-6x faster than float32 (without AMX, far slower)."""
    return " amx_bf16" in _cpu_flags()


def resolve_device(device: str | None = None) -> str:
    """`auto` -> the best device present; an explicit one must be present (a clear error if not).
    None: $RAGTUNE_DEVICE (`ragtune --device`), else auto."""
    import torch

    name = (device or os.environ.get("RAGTUNE_DEVICE") or "auto").lower()
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise ConfigError(f"device={name!r}: use one of {', '.join(DEVICES)} (cuda:N for a given GPU)")
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if kind == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if kind == "cuda" and not cuda:
        raise ConfigError(f"device={device!r}: this torch ({torch.__version__}) sees no CUDA GPU")
    if kind == "mps" and not mps:
        raise ConfigError(f"device={device!r}: Apple's MPS is not available here")
    return name


def auto_dtype(device: str) -> str:
    """The dtype `auto` means on a device: bfloat16 on a GPU that supports it and on CPUs with native
    bfloat16, float32 elsewhere (MPS included: its bfloat16 support varies by OS version)."""
    import torch

    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device == "cpu" and cpu_has_native_bf16():
        return "bfloat16"
    return "float32"


def dtype_setting(dtype: str | None = None) -> str:
    """A generator's dtype as set: `dtype`, else $RAGTUNE_DTYPE (`ragtune --dtype`), else auto."""
    return dtype or os.environ.get("RAGTUNE_DTYPE") or "auto"


def resolve_dtype(setting: str, device: str) -> str:
    """The dtype a setting computes in on `device` (`auto` -> `auto_dtype`)."""
    return auto_dtype(device) if setting == "auto" else setting


def describe(model) -> dict:
    """What runs a model and where: {"name", "backend", "device"} (for results.json and index-info)."""
    if model is None:
        return {}
    backend = getattr(model, "backend", None) or type(model).__name__
    device = getattr(model, "device", None)
    precision = getattr(model, "precision", None)  # a transformers generator's resolved dtype
    return {"name": getattr(model, "name", type(model).__name__), "backend": str(backend),
            "device": str(device) if device is not None else "cpu",
            **({"dtype": precision} if isinstance(precision, str) else {})}  # fmt: skip
