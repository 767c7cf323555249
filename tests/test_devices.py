"""Devices: `auto` picks what is present, an absent one is a clear error, and the GPU path gives
the CPU's answers (that test runs only where torch sees a CUDA GPU)."""

import pytest
import torch

from ragtune.devices import auto_dtype, cpu_has_native_bf16, describe, resolve_device
from ragtune.errors import ConfigError
from ragtune.generators import TransformersGenerator, torch_dtype

from .tiny_models import build_tiny_llama

CUDA = torch.cuda.is_available()


def test_auto_picks_what_is_present_and_absent_devices_are_named():
    assert resolve_device("auto") == ("cuda" if CUDA else "mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="use one of auto, cpu, cuda, mps"):
        resolve_device("tpu")
    if not CUDA:
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            TransformersGenerator("x", device="cuda")


def test_dtype_auto_follows_the_device():
    assert auto_dtype("cpu") == ("bfloat16" if cpu_has_native_bf16() else "float32")
    assert torch_dtype("auto", "cpu") is getattr(torch, auto_dtype("cpu"))
    assert torch_dtype("float16") is torch.float16
    with pytest.raises(ConfigError, match="dtype='int3'"):
        torch_dtype("int3")
    gen = TransformersGenerator("x", device="cpu")
    assert gen.device == "cpu" and gen.dtype == "auto" and gen.precision == auto_dtype("cpu")
    assert describe(gen)["dtype"] == gen.precision  # what results.json and index-info report
    assert TransformersGenerator("x", device="cpu", dtype="float32").precision == "float32"


def test_the_cli_dtype_reaches_every_generator(monkeypatch):
    monkeypatch.setenv("RAGTUNE_DTYPE", "float32")
    assert TransformersGenerator("x", device="cpu").precision == "float32"
    assert TransformersGenerator("x", device="cpu", dtype="bfloat16").precision == "bfloat16"  # explicit wins
    monkeypatch.setenv("RAGTUNE_DTYPE", "int3")
    with pytest.raises(ConfigError, match="dtype='int3'"):
        TransformersGenerator("x", device="cpu")


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_cuda_generates_and_scores_like_the_cpu(tmp_path):
    path = build_tiny_llama(tmp_path / "tiny")
    prompt = [{"role": "user", "content": "the capital of france is"}]
    cpu = TransformersGenerator(str(path), device="cpu", dtype="float32")
    gpu = TransformersGenerator(str(path), device="cuda", dtype="float32")
    assert gpu.model.device.type == "cuda"
    assert gpu.generate([prompt], 8) == cpu.generate([prompt], 8)
    # float32 sums in another order: an H200 gave -10.65624 where the CPU gave -10.65507 (rel 1.1e-4)
    assert gpu.score(prompt, ["paris", "rome"]) == pytest.approx(cpu.score(prompt, ["paris", "rome"]), rel=1e-3)
    assert "".join(gpu.stream(prompt, 8)).strip() == cpu.generate([prompt], 8)[0]
    assert TransformersGenerator(str(path), device="cuda").dtype == "auto"  # bf16 (or fp16) on the GPU


def test_the_cli_device_reaches_every_model(monkeypatch):
    monkeypatch.setenv("RAGTUNE_DEVICE", "cpu")
    assert TransformersGenerator("x").device == "cpu"
    monkeypatch.setenv("RAGTUNE_DEVICE", "quantum")
    with pytest.raises(ConfigError, match="device='quantum'"):
        TransformersGenerator("x")
