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
    fast, ref = CT2Generator(str(tiny_llama)), TransformersGenerator(str(tiny_llama), dtype="float32")
    answers = fast.generate(PROMPTS, max_new_tokens=12)
    assert answers == ref.generate(PROMPTS, max_new_tokens=12)
    assert all(answers) and answers[0] != answers[1]
    assert "".join(fast.stream(PROMPTS[0], max_new_tokens=12)).strip() == answers[0]
    assert fast.render(PROMPTS[0]) == ref.render(PROMPTS[0])
    assert fast.count_tokens(["paris is the capital"]) == [4]
    assert fast.name == f"{tiny_llama}@ct2"


def test_span_scores_match_transformers(tiny_llama):
    fast, ref = CT2Generator(str(tiny_llama)), TransformersGenerator(str(tiny_llama), dtype="float32")
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
    ref = TransformersGenerator(str(tiny_llama), adapter=lora, dtype="float32")
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
    fast, ref = OrtGenaiGenerator(str(tiny_llama)), TransformersGenerator(str(tiny_llama), dtype="float32")
    answers = fast.generate(PROMPTS, max_new_tokens=12)
    assert answers == ref.generate(PROMPTS, max_new_tokens=12) and answers[0] != answers[1]
    assert "".join(fast.stream(PROMPTS[0], max_new_tokens=12)).strip() == answers[0]
    assert fast.score(READER, SPANS) == pytest.approx(ref.score(READER, SPANS), abs=1e-3)
    folder = ort_converted(str(tiny_llama))[1]
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # built once, no temp folder left
    tuned = OrtGenaiGenerator(str(tiny_llama), adapter=lora)
    assert tuned.generate(PROMPTS, 12) == TransformersGenerator(
        str(tiny_llama), adapter=lora, dtype="float32"
    ).generate(PROMPTS, 12)
    assert ort_converted(str(tiny_llama), lora)[1] != folder
    assert isinstance(make_generator(f"{tiny_llama}@ort"), OrtGenaiGenerator)


# -- prompt-lookup speculative decoding --------------------------------------------------------------


class ScriptedOrt:
    """A stand-in for an onnxruntime-genai `Generator` whose greedy answer to `prompt` is `answer`
    (then the end token 2): a position reads as `answer`'s next token only if everything read so far
    after the prompt is `answer`'s start, else as token 99. A rewind that leaves a rejected draft in
    the sequence therefore derails the rest."""

    def __init__(self, prompt, answer, vocab=100):
        self.prompt, self.answer, self.vocab = list(prompt), list(answer) + [2], vocab
        self.seq, self.logits, self.appends = [], None, []

    def _pick(self, upto):
        done = self.seq[len(self.prompt) : upto]
        ok = self.seq[: len(self.prompt)] == self.prompt and done == self.answer[: len(done)]
        return self.answer[len(done)] if ok and len(done) < len(self.answer) else 99

    def append_tokens(self, tokens):
        import numpy as np

        start = len(self.seq)
        self.seq += list(tokens)
        self.appends.append(len(tokens))
        self.logits = np.zeros((1, len(tokens), self.vocab), dtype=np.float32)
        for i in range(len(tokens)):
            self.logits[0, i, self._pick(start + i + 1)] = 1.0

    def get_output(self, name):
        assert name == "logits"
        return self.logits

    def get_logits(self):
        return self.logits[:, -1:]

    def rewind_to(self, n):
        assert n <= len(self.seq)
        del self.seq[n:]


def scripted(prompt, answer, max_new_tokens, **options):
    from ragtune.fast_generators import DraftCounts, prompt_lookup_decode

    gen, counts = ScriptedOrt(prompt, answer), DraftCounts()
    gen.append_tokens(prompt)
    out = list(prompt_lookup_decode(gen, prompt, max_new_tokens, eos=2, counts=counts, **options))
    return out, counts, gen


def test_prompt_lookup_keeps_drafts_the_model_agrees_with():
    prompt = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
    answer = [30, 12, 13, 14, 15, 16, 17, 31, 18, 19, 20, 21]  # copies two spans of the prompt
    out, counts, gen = scripted(prompt, answer, 32, draft_tokens=4, ngram=(3, 1))
    assert out == answer  # exactly greedy's answer, end token left out
    assert counts.accepted == 6 and counts.proposed > counts.accepted  # 4 + 2 copied tokens kept, wrong guesses dropped
    assert counts.passes == len(gen.appends) - 1 < len(answer)  # fewer passes than tokens
    assert gen.seq[len(prompt) :][: len(answer)] == answer  # nothing rejected left in the cache


def test_prompt_lookup_respects_max_new_tokens_and_stops_at_the_end_token():
    prompt = [10, 11, 12, 13, 14, 15, 16, 17]
    answer = [11, 12, 13, 14, 15, 16, 17]
    for limit in range(1, 10):
        out, _, gen = scripted(prompt, answer, limit, draft_tokens=5)
        assert out == answer[:limit]  # exactly `limit` tokens, or the answer if it ends first
        assert len(gen.seq) <= len(prompt) + limit  # never read past the budget
    out, _, _ = scripted(prompt, [], 8, draft_tokens=5)
    assert out == []  # the end token first: nothing
    out, counts, _ = scripted(prompt, [40, 41, 42], 8, draft_tokens=5)  # nothing to copy
    assert out == [40, 41, 42] and counts.proposed == 0


def test_prompt_lookup_finds_the_latest_occurrence_of_the_longest_tail():
    from ragtune.fast_generators import PromptLookup

    lookup = PromptLookup([5, 6, 7, 8, 9, 5, 6], max_ngram=3, min_ngram=1)
    assert lookup.propose(2) == [7, 8]
    lookup.extend([1, 6])  # tail (1, 6) unseen, (6,) last followed by 1
    assert lookup.propose(3) == [1, 6]
    assert PromptLookup([5, 6, 7, 6], max_ngram=3, min_ngram=2).propose(2) == []  # only a 1-token match


def test_ort_speculative_decoding_equals_plain_greedy(tiny_llama, ort, tmp_path, monkeypatch):
    monkeypatch.setenv("RAGTUNE_CACHE", str(tmp_path))
    plain = OrtGenaiGenerator(str(tiny_llama), draft_tokens=0)
    spec = OrtGenaiGenerator(str(tiny_llama), draft_tokens=4, ngram=3, min_ngram=1)
    # Prompts that repeat themselves, so an answer that repeats them draws drafts from them.
    prompts = PROMPTS + [[{"role": "user", "content": " ".join(["w5 w6 w7 w8 w9 paris france"] * 4)}]]
    for limit in (1, 2, 5, 24):
        for p in prompts:
            want = list(plain.token_ids(p, limit))
            assert list(spec.token_ids(p, limit)) == want and len(want) <= limit
    assert spec.drafts.passes > 0 and spec.drafts.accepted > 0
    assert spec.generate(prompts, 24) == TransformersGenerator(str(tiny_llama), dtype="float32").generate(prompts, 24)
    assert "".join(spec.stream(prompts[2], 24)).strip() == spec.generate(prompts[2:], 24)[0]
    with pytest.raises(ConfigError, match="min_ngram=4"):
        OrtGenaiGenerator(str(tiny_llama), ngram=3, min_ngram=4)


def test_ort_reused_prefix_gives_the_same_answers(tiny_llama, ort, tmp_path, monkeypatch):
    monkeypatch.setenv("RAGTUNE_CACHE", str(tmp_path))
    fresh = OrtGenaiGenerator(str(tiny_llama))
    kept = OrtGenaiGenerator(str(tiny_llama), reuse_prefix=True, draft_tokens=3)
    system = {"role": "system", "content": "answer w1 w2 w3 from the sources"}
    prompts = [[system, {"role": "user", "content": f"w{i} w{i + 1} paris question"}] for i in range(4)]
    prompts += [PROMPTS[0], prompts[0], prompts[0]]  # nothing shared, then all of it
    for p in prompts:
        assert list(kept.token_ids(p, 10)) == list(fresh.token_ids(p, 10))
        first = kept._kept
    assert kept.generate(prompts[:2], 10) == fresh.generate(prompts[:2], 10) and kept._kept is first  # one generator
    kept._kept_length = 128
    long = [{"role": "user", "content": "w1 w2 " * 100}]  # past the kept generator's cache: a fresh one
    assert list(kept.token_ids(long, 4)) == list(fresh.token_ids(long, 4)) and kept._kept is first
