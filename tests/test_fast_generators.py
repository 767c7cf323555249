"""The CTranslate2 generator keeps TransformersGenerator's contract: the same greedy answers and
span scores, a fine-tuned adapter merged in, conversions cached once per model + adapter +
quantisation. Each backend's tests are skipped when its package (the optional `fast` extra) is
not installed."""

import pytest

from ragtune import make_generator, registry
from ragtune.errors import ConfigError
from ragtune.fast_generators import CT2Generator, OrtGenaiGenerator, converted, ort_converted
from ragtune.generators import TransformersGenerator

from .tiny_models import build_tiny_llama


@pytest.fixture(autouse=True)
def ct2(request):
    if "ort" not in request.node.name:
        pytest.importorskip("ctranslate2")


@pytest.fixture
def ort():
    pytest.importorskip("onnxruntime_genai")


PROMPTS = [
    [{"role": "user", "content": "question the capital of france is"}],
    [{"role": "system", "content": "answer w1 w2"}, {"role": "user", "content": "w3 w4 w5 rome italy question"}],
]
READER = [{"role": "system", "content": "answer"}, {"role": "user", "content": "paris is the capital of france"}]
SPANS = ["paris", "the capital", "france", "w7 w8 w9"]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """The tiny Llama, 64 wide (onnxruntime's attention wants heads of a multiple of 16), with weights
    drawn wider than its init, so greedy answers vary with the prompt (at the default init every
    prompt gets the same repeated word)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    path = build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")
    config = AutoConfig.from_pretrained(str(path))
    config.hidden_size, config.intermediate_size, config.head_dim = 64, 128, 16
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.25)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def lora(tiny_llama, tmp_path_factory):
    """A LoRA adapter on the tiny Llama with non-zero B matrices, so it changes the outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(tiny_llama)),
        LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False),
    )
    path = tmp_path_factory.mktemp("run") / "adapter"
    model.save_pretrained(path)
    return path


def test_conversion_is_cached_atomically_and_reused(tiny_llama, tmp_path, monkeypatch):
    import ctranslate2

    monkeypatch.setenv("RAGTUNE_CACHE", str(tmp_path))
    source, folder = converted(str(tiny_llama))
    assert source == tiny_llama and (folder / "model.bin").is_file() and folder.parent == tmp_path / "ct2"
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temp folder left behind

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(ctranslate2.converters, "TransformersConverter", no_conversion)
    assert converted(str(tiny_llama)) == (source, folder)
    with pytest.raises(AssertionError, match="converted again"):  # another quantisation is another folder
        converted(str(tiny_llama), quantisation="int8")


def test_greedy_answers_and_stream_equal_transformers(tiny_llama):
    fast, ref = CT2Generator(str(tiny_llama)), TransformersGenerator(str(tiny_llama))
    answers = fast.generate(PROMPTS, max_new_tokens=12)
    assert answers == ref.generate(PROMPTS, max_new_tokens=12)
    assert all(answers) and answers[0] != answers[1]
    assert "".join(fast.stream(PROMPTS[0], max_new_tokens=12)).strip() == answers[0]
    assert fast.render(PROMPTS[0]) == ref.render(PROMPTS[0])
    assert fast.count_tokens(["paris is the capital"]) == [4]
    assert fast.name == f"{tiny_llama}@ct2"


def test_span_scores_match_transformers(tiny_llama):
    fast, ref = CT2Generator(str(tiny_llama)), TransformersGenerator(str(tiny_llama))
    got, want = fast.score(READER, SPANS), ref.score(READER, SPANS)
    assert got == pytest.approx(want, abs=1e-3)
    assert fast.score(READER, []) == []
    batch = fast.score_batch([READER, PROMPTS[0], READER], [SPANS[:2], [], SPANS[2:]])
    assert (
        batch[0] == pytest.approx(got[:2], abs=1e-4) and batch[1] == [] and batch[2] == pytest.approx(got[2:], abs=1e-4)
    )


def test_adapter_is_merged_and_its_hash_keys_the_cache(tiny_llama, lora, tmp_path, monkeypatch):
    import shutil

    from safetensors.torch import load_file, save_file

    monkeypatch.setenv("RAGTUNE_CACHE", str(tmp_path / "cache"))
    fast = CT2Generator(str(tiny_llama), adapter=lora)
    ref = TransformersGenerator(str(tiny_llama), adapter=lora)
    assert fast.generate(PROMPTS, 12) == ref.generate(PROMPTS, 12)
    assert fast.score(READER, SPANS) == pytest.approx(ref.score(READER, SPANS), abs=1e-3)
    assert fast.generate(PROMPTS, 12) != CT2Generator(str(tiny_llama)).generate(PROMPTS, 12)  # the adapter matters
    assert fast.name == f"{tiny_llama}@ct2+{lora.parent.name}"

    # Retrained in place: same path, new weights -> converted again.
    changed = tmp_path / "run2" / "adapter"
    shutil.copytree(lora, changed)
    first = converted(str(tiny_llama), changed)[1]
    weights = load_file(str(changed / "adapter_model.safetensors"))
    save_file({k: v * 2 for k, v in weights.items()}, str(changed / "adapter_model.safetensors"))
    assert converted(str(tiny_llama), changed)[1] != first


def test_backend_is_picked_by_name_or_option(tiny_llama):
    assert {"smollm2-135m-instruct@ct2", "smollm2-135m-instruct@ort"} <= set(registry(reload=True).names("generator"))
    by_name = make_generator(f"{tiny_llama}@ct2")
    by_option = make_generator(str(tiny_llama), backend="ct2", quantisation="int8")
    assert isinstance(by_name, CT2Generator) and by_name._model is None  # nothing converted until used
    assert isinstance(by_option, CT2Generator) and by_option.quantisation == "int8"
    assert isinstance(make_generator(str(tiny_llama), backend="transformers"), TransformersGenerator)
    with pytest.raises(ConfigError, match="backend='vllm'"):
        make_generator(str(tiny_llama), backend="vllm")
    with pytest.raises(ConfigError, match="quantisation='int3'"):
        CT2Generator(str(tiny_llama), quantisation="int3")


def test_ort_build_is_cached_and_answers_equal_transformers(tiny_llama, lora, ort, tmp_path, monkeypatch):
    monkeypatch.setenv("RAGTUNE_CACHE", str(tmp_path))
    fast, ref = OrtGenaiGenerator(str(tiny_llama)), TransformersGenerator(str(tiny_llama))
    answers = fast.generate(PROMPTS, max_new_tokens=12)
    assert answers == ref.generate(PROMPTS, max_new_tokens=12) and answers[0] != answers[1]
    assert "".join(fast.stream(PROMPTS[0], max_new_tokens=12)).strip() == answers[0]
    assert fast.score(READER, SPANS) == pytest.approx(ref.score(READER, SPANS), abs=1e-3)
    folder = ort_converted(str(tiny_llama))[1]
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # built once, no temp folder left
    tuned = OrtGenaiGenerator(str(tiny_llama), adapter=lora)
    assert tuned.generate(PROMPTS, 12) == TransformersGenerator(str(tiny_llama), adapter=lora).generate(PROMPTS, 12)
    assert ort_converted(str(tiny_llama), lora)[1] != folder
    assert isinstance(make_generator(f"{tiny_llama}@ort"), OrtGenaiGenerator)
