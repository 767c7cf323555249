"""Training on a GPU: LoRA under bf16 autocast (its frozen base held in bf16), full fine-tuning,
and QLoRA (a 4-bit NF4 base through bitsandbytes) train to what the CPU's float32 run trains to.
The CUDA tests run only where torch sees a CUDA GPU (QLoRA also needs bitsandbytes); the checks
that a CPU machine refuses QLoRA with a clear error run everywhere."""

import json

import pytest
import torch

from ragtune.errors import ConfigError
from ragtune.finetune.config import FinetuneConfig
from ragtune.finetune.data import PrepareConfig, prepare
from ragtune.finetune.train import LOG, load_base, train

from .tiny_models import build_tiny_llama

CUDA = torch.cuda.is_available()
try:
    import bitsandbytes  # noqa: F401

    BNB = True
except ImportError:
    BNB = False
WORDS = "paris france rome italy capital".split()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    # 64 wide: bitsandbytes quantises in blocks of 64 weights
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama", hidden_size=64, intermediate_size=128)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    rows = [
        {"id": f"q{i}", "question": f"w{i} w{i + 1} w{i + 2} the capital of w{i % 7} w{(i * 3) % 11}",
         "answer": f"{WORDS[i % 5]} w{i % 13}"}
        for i in range(48)
    ]  # fmt: skip
    (d / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    prepare([d / "qa.jsonl"], d / "prep", PrepareConfig(ratios=(0.75, 0.125, 0.125)))
    return d / "prep"


def cfg_for(tiny, **kw):
    base = dict(base_model=str(tiny), mode="qa", method="lora", lora_r=4, lora_alpha=8, lora_dropout=0.0,
                batch_size=4, lr=1e-2, warmup_steps=0, max_steps=6, eval_every=3, patience=50, generate_max=4,
                max_seq_len=64)  # fmt: skip
    base.update(kw)
    return FinetuneConfig(**base)


def losses(out):
    return [json.loads(line) for line in (out / LOG).read_text().splitlines()]


def run_on(device, monkeypatch, cfg, data_dir, out):
    monkeypatch.setenv("RAGTUNE_DEVICE", device)
    return train(cfg, data_dir, out), losses(out)


def test_qlora_is_lora_only_and_needs_a_cuda_gpu(tiny, data_dir, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="quantize.*method='lora'"):
        FinetuneConfig(method="full", quantize="4bit")
    with pytest.raises(ConfigError, match="quantize='8bit'"):
        FinetuneConfig(quantize="8bit")
    # The resume fingerprint: unchanged for runs without quantisation, different with it.
    assert FinetuneConfig().fingerprint() != FinetuneConfig(quantize="4bit").fingerprint()
    monkeypatch.setenv("RAGTUNE_DEVICE", "cpu")
    with pytest.raises(ConfigError, match="needs a CUDA GPU; this run's device is 'cpu'"):
        train(cfg_for(tiny, quantize="4bit"), data_dir, tmp_path / "out")
    assert not (tmp_path / "out" / "adapter").exists()


def test_the_cli_offers_quantize():
    from ragtune.cli import build_parser

    args = build_parser().parse_args(["finetune", "--data", "d", "--out", "o", "--quantize", "4bit"])
    assert args.quantize == "4bit"


@needs_cuda
def test_lora_in_bf16_on_cuda_trains_like_float32_on_the_cpu(tiny, data_dir, tmp_path, monkeypatch):
    cpu, cpu_log = run_on("cpu", monkeypatch, cfg_for(tiny), data_dir, tmp_path / "cpu")
    gpu, gpu_log = run_on("cuda", monkeypatch, cfg_for(tiny, precision="auto"), data_dir, tmp_path / "gpu")
    assert gpu.steps == cpu.steps == 6
    for a, b in zip(cpu_log, gpu_log):  # bf16 rounding, not a different run
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.05), (a, b)
    assert gpu.best_val_loss == pytest.approx(cpu.best_val_loss, rel=0.05)
    assert gpu_log[-1]["train_loss"] < gpu_log[0]["train_loss"]  # it learns
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "gpu" / "adapter" / "adapter_model.safetensors")
    assert all(w.dtype == torch.float32 for w in weights.values())  # the adapter itself stays float32
    assert gpu.generation["n"] == 4  # evaluated by generating on the GPU


@needs_cuda
@pytest.mark.parametrize("method", ["full", "top-layers"])
def test_float32_on_cuda_gives_the_cpu_losses(tiny, data_dir, tmp_path, monkeypatch, method):
    cfg = cfg_for(tiny, method=method, top_layers=1, lr=1e-3)
    cpu, cpu_log = run_on("cpu", monkeypatch, cfg, data_dir, tmp_path / "cpu")
    gpu, gpu_log = run_on("cuda", monkeypatch, cfg, data_dir, tmp_path / "gpu")
    for a, b in zip(cpu_log, gpu_log):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=2e-3, abs=2e-3), (a, b)
    assert gpu.test_loss == pytest.approx(cpu.test_loss, rel=2e-3)


@needs_cuda
@pytest.mark.skipif(not BNB, reason="needs bitsandbytes (pip install 'ragtune[qlora]')")
def test_qlora_trains_a_4bit_base_and_its_adapter_serves_on_the_full_model(tiny, data_dir, tmp_path, monkeypatch):
    import bitsandbytes as bnb

    _, model, _ = load_base(str(tiny), "4bit", "cuda")
    quantised = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantised) == 2 * 7  # every attention and MLP projection of both blocks
    del model
    cpu, cpu_log = run_on("cpu", monkeypatch, cfg_for(tiny), data_dir, tmp_path / "cpu")
    q, q_log = run_on("cuda", monkeypatch, cfg_for(tiny, quantize="4bit", precision="auto"), data_dir, tmp_path / "q")
    assert q.steps == 6 and q_log[-1]["train_loss"] < q_log[0]["train_loss"]
    # 4-bit weights are not the float32 ones, but the model is the same: losses stay close.
    assert q.best_val_loss == pytest.approx(cpu.best_val_loss, rel=0.15)
    manifest = json.loads((tmp_path / "q" / "ragtune-finetune.json").read_text())
    assert manifest["config"]["quantize"] == "4bit"
    # The adapter is an ordinary PEFT adapter: it loads onto the unquantised base, on either device.
    from ragtune.generators import TransformersGenerator

    prompt = [{"role": "user", "content": "w1 w2 w3 the capital of w1 w3"}]
    on_cpu = TransformersGenerator(str(tiny), adapter=str(tmp_path / "q" / "adapter"), device="cpu", dtype="float32")
    on_gpu = TransformersGenerator(str(tiny), adapter=str(tmp_path / "q" / "adapter"), device="cuda", dtype="float32")
    assert on_cpu.generate([prompt], 4) == on_gpu.generate([prompt], 4)


# -- the embedder --------------------------------------------------------------------------------


def test_device_cuda_puts_the_embedder_on_the_gpu_not_on_the_cpu(tmp_path, monkeypatch):
    """`--device cuda` with a CPU-only onnxruntime: sentence-transformers on the GPU (an error
    naming the missing GPU on a machine without one), never a silent CPU run."""
    from ragtune.embedders import SentenceTransformerEmbedder, sentence_embedder
    from ragtune.onnx_embedder import OnnxEmbedder

    from .tiny_models import build_tiny_sentence_bert

    folder = str(build_tiny_sentence_bert(tmp_path / "st"))
    monkeypatch.setenv("RAGTUNE_DEVICE", "cpu")
    assert isinstance(sentence_embedder(folder), OnnxEmbedder)
    assert SentenceTransformerEmbedder(folder).device == "cpu"
    monkeypatch.setenv("RAGTUNE_DEVICE", "cuda")
    if not CUDA:
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            sentence_embedder(folder)
        return
    import onnxruntime as ort

    emb = sentence_embedder(folder)
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert isinstance(emb, OnnxEmbedder)
    else:
        assert isinstance(emb, SentenceTransformerEmbedder) and emb.device == "cuda"
    texts = ["w1 w2 the capital of france", "paris is the capital", "w7"]
    on_gpu = emb.embed(texts)
    monkeypatch.setenv("RAGTUNE_DEVICE", "cpu")
    on_cpu = sentence_embedder(folder).embed(texts)
    assert on_gpu.shape == on_cpu.shape == (3, 32)
    assert abs(on_gpu - on_cpu).max() < 1e-4


# -- generation ----------------------------------------------------------------------------------


@needs_cuda
def test_batched_generation_on_cuda_gives_each_prompt_its_own_answer(tmp_path):
    """Prompts of different lengths in one batch (left padding on the GPU) answer as each alone
    on the CPU; in bf16 (the GPU default) they still answer, one answer per prompt."""
    from ragtune.generators import TransformersGenerator

    path = build_tiny_llama(tmp_path / "tiny")
    prompts = [[{"role": "user", "content": text}] for text in
               ("the capital of france is", "w1", "w3 w4 w5 w6 w7 w8 w9 the capital of italy is rome or")]  # fmt: skip
    cpu = TransformersGenerator(str(path), device="cpu", dtype="float32")
    gpu = TransformersGenerator(str(path), device="cuda", dtype="float32")
    assert gpu.generate(prompts, 6) == [cpu.generate([p], 6)[0] for p in prompts]
    spans = [["paris", "rome"], ["w2"], ["rome", "italy", "w9 w1"]]
    batched = gpu.score_batch(prompts, spans)
    for got, p, c in zip(batched, prompts, spans):
        assert got == pytest.approx(cpu.score(p, c), rel=1e-3)
    half = TransformersGenerator(str(path), device="cuda")
    answers = half.generate(prompts, 6)
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
