"""The llama.cpp generator keeps TransformersGenerator's contract on a tiny GGUF: the same greedy
answers and span scores at float32, a fine-tuned adapter written into a GGUF of its own (cached by the
adapter's hash), and clear refusals. Skipped when llama-cpp-python (the `llama` extra) is not installed.

The tiny GGUF has the bundled SmolLM2 GGUF's tokenizer (its metadata copied) and a 2-layer, 64-wide
Llama with random weights; transformers reads it through its own GGUF loader (the reference), and
the llama backend writes it back from those Hugging Face weights, so a wrong name or head layout
anywhere shows up as different answers."""

import shutil

import numpy as np
import pytest

from ragtune import make_generator, registry
from ragtune.errors import ConfigError
from ragtune.generators import TransformersGenerator
from ragtune.models import gguf_file, resolve_generator
from ragtune.rag import score_spans

pytest.importorskip("llama_cpp")
gguf = pytest.importorskip("gguf")

from ragtune.llama_generator import LlamaCppGenerator, gguf_converted, llama_tensors, write_gguf  # noqa: E402

PROMPTS = [
    [{"role": "user", "content": "The capital of France is"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Rome is in Italy. Where is Rome?"}],
]
READER = [{"role": "system", "content": "Answer."}, {"role": "user", "content": "Paris is the capital of France."}]
SPANS = ["Paris", "the capital", "France", "a city on the Seine"]
SHAPE = {"llama.block_count": 2, "llama.embedding_length": 64, "llama.feed_forward_length": 128}
SHAPE |= {"llama.attention.head_count": 4, "llama.attention.head_count_kv": 2, "llama.rope.dimension_count": 16}
SHAPE |= {"llama.context_length": 512}


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    import torch
    from gguf import GGUFValueType as V
    from transformers import LlamaConfig, LlamaForCausalLM

    donor = gguf_file("smollm2-135m-instruct")
    reader = gguf.GGUFReader(str(donor))
    field = reader.fields
    config = LlamaConfig(
        vocab_size=len(field["tokenizer.ggml.tokens"].contents()),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=float(field["llama.attention.layer_norm_rms_epsilon"].contents()),
        rope_theta=float(field["llama.rope.freq_base"].contents()),
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # wider than the init, so greedy answers vary with the prompt
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.25)
    root = tmp_path_factory.mktemp("tiny-gguf")
    model.save_pretrained(root / "hf")
    path = root / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    for key, f in field.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        vtype = f.types[0]
        value = SHAPE.get(key, f.contents())
        writer.add_key_value(key, value, vtype, sub_type=f.types[-1] if vtype == V.ARRAY else None)
    for name, x in llama_tensors(root / "hf", 4, 2).items():
        writer.add_tensor(name, x)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def lora(tiny_gguf, tmp_path_factory):
    """A LoRA adapter on the tiny model with non-zero B matrices (q and k included: their head
    layout is what the GGUF writer permutes)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(resolve_generator(str(tiny_gguf)))),
        LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "k_proj", "down_proj"], init_lora_weights=False),
    )
    path = tmp_path_factory.mktemp("run") / "adapter"
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("llama-cache")


@pytest.fixture(autouse=True)
def cache(module_cache, monkeypatch):
    """One cache for the module (not the shared test cache: what this module writes is checked here)."""
    monkeypatch.setenv("RAGTUNE_CACHE", str(module_cache))


def test_the_gguf_written_back_from_transformers_weights_is_the_gguf_read(tiny_gguf, tmp_path):
    out = tmp_path / "back.gguf"
    write_gguf(tiny_gguf, resolve_generator(str(tiny_gguf)), out, "f32")
    a, b = gguf.GGUFReader(str(tiny_gguf)), gguf.GGUFReader(str(out))
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    for x, y in zip(a.tensors, b.tensors):
        assert np.array_equal(np.asarray(x.data), np.asarray(y.data)), x.name  # q/k heads laid out as llama.cpp's
    assert b.fields["tokenizer.ggml.tokens"].contents() == a.fields["tokenizer.ggml.tokens"].contents()


def test_greedy_answers_stream_and_scores_equal_transformers(tiny_gguf):
    fast, ref = LlamaCppGenerator(str(tiny_gguf)), TransformersGenerator(str(tiny_gguf), dtype="float32")
    answers = fast.generate(PROMPTS, max_new_tokens=12)
    assert answers == ref.generate(PROMPTS, max_new_tokens=12)
    assert all(answers) and answers[0] != answers[1]
    assert "".join(fast.stream(PROMPTS[0], max_new_tokens=12)).strip() == answers[0]
    assert fast.name == f"{tiny_gguf}@llama" and fast.backend == "llama.cpp"
    got, want = fast.score(READER, SPANS), ref.score(READER, SPANS)
    assert got == pytest.approx(want, abs=1e-3)
    assert fast.score(READER, []) == []
    batch = score_spans(fast, [READER, PROMPTS[0], READER], [SPANS[:2], [], SPANS[2:]])  # as the reader calls it
    assert (
        batch[0] == pytest.approx(got[:2], abs=1e-4) and batch[1] == [] and batch[2] == pytest.approx(got[2:], abs=1e-4)
    )


def test_scoring_more_continuations_than_one_context_holds(tiny_gguf, monkeypatch):
    fast = LlamaCppGenerator(str(tiny_gguf))
    want = fast.score(READER, SPANS)
    monkeypatch.setattr(LlamaCppGenerator, "SEQUENCES", 3)  # groups of 2 continuations
    assert fast.score(READER, SPANS) == pytest.approx(want, abs=1e-4)


def test_prompts_decoded_together_give_the_one_by_one_answers(tiny_gguf, monkeypatch):
    from ragtune.fast_generators import _TokenStream

    monkeypatch.setattr(LlamaCppGenerator, "GROUP", 2)  # 5 prompts: groups of 2, 2 and the long one alone
    monkeypatch.setattr(LlamaCppGenerator, "GROUP_CELLS", 64)
    long = [{"role": "user", "content": "Rome is in Italy. " * 12 + "Where is Rome?"}]
    prompts = [PROMPTS[0], long, PROMPTS[1], [{"role": "user", "content": "Berlin is"}], PROMPTS[0]]
    fast = LlamaCppGenerator(str(tiny_gguf))
    assert len(fast.tokenizer(fast.render(long))["input_ids"]) + 12 > 64  # too long for a group stream
    for new in (1, 12):
        together = fast.generate(prompts, max_new_tokens=new)
        assert together == _TokenStream.generate(fast, prompts, new)  # one by one, in the main context
        assert together == TransformersGenerator(str(tiny_gguf), dtype="float32").generate(prompts, max_new_tokens=new)
    assert together[0] == together[4] and len(set(together)) > 2
    assert fast.generate(prompts, max_new_tokens=0) == [""] * 5


def test_speculative_drafts_give_the_plain_greedy_answers(tiny_gguf):
    plain = LlamaCppGenerator(str(tiny_gguf), draft_tokens=0)
    drafted = LlamaCppGenerator(str(tiny_gguf), draft_tokens=4, min_ngram=1)
    echo = [{"role": "user", "content": "Paris Paris Paris is the capital capital of France France"}]
    for prompt in [*PROMPTS, echo]:
        assert drafted.generate([prompt], 16) == plain.generate([prompt], 16)
    assert drafted.drafts.passes > 0


def test_adapter_is_written_into_its_own_gguf_keyed_by_its_hash(tiny_gguf, lora, tmp_path):
    from safetensors.torch import load_file, save_file

    fast = LlamaCppGenerator(str(tiny_gguf), adapter=lora)
    ref = TransformersGenerator(str(tiny_gguf), adapter=lora, dtype="float32")
    assert fast.generate(PROMPTS, 12) == ref.generate(PROMPTS, 12)
    assert fast.score(READER, SPANS) == pytest.approx(ref.score(READER, SPANS), abs=1e-3)
    assert fast.generate(PROMPTS, 12) != LlamaCppGenerator(str(tiny_gguf)).generate(PROMPTS, 12)
    assert fast.name == f"{tiny_gguf}@llama+{lora.parent.name}"

    first = gguf_converted(str(tiny_gguf), lora)[1]
    assert gguf_converted(str(tiny_gguf), lora)[1] == first  # cached
    changed = tmp_path / "run2" / "adapter"
    shutil.copytree(lora, changed)
    weights = load_file(str(changed / "adapter_model.safetensors"))
    save_file({k: v * 2 for k, v in weights.items()}, str(changed / "adapter_model.safetensors"))
    assert gguf_converted(str(tiny_gguf), changed)[1] != first  # retrained in place: written again


def test_f16_q8_and_the_source_gguf_run_and_name_themselves(tiny_gguf):
    half = LlamaCppGenerator(str(tiny_gguf), precision="f16")
    assert half.name == f"{tiny_gguf}@llama-f16" and half.generate(PROMPTS[:1], 4)[0]
    assert gguf_converted(str(tiny_gguf), precision="gguf")[1] == tiny_gguf  # run as shipped, nothing written
    for precision, matrix in (("f16", "F16"), ("q8_0", "Q8_0")):
        written = gguf_converted(str(tiny_gguf), precision=precision)[1]
        types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(written)).tensors}
        assert types["blk.0.ffn_up.weight"] == matrix and types["blk.0.attn_norm.weight"] == "F32"
    q8 = LlamaCppGenerator(str(tiny_gguf), precision="q8_0")
    ref = TransformersGenerator(str(tiny_gguf), dtype="float32")
    # 8-bit weights move the scores a little, not the ranking of clearly different spans
    assert q8.score(READER, SPANS) == pytest.approx(ref.score(READER, SPANS), abs=0.5)


def test_refusals_name_the_problem(tiny_gguf, tmp_path):
    from transformers import AutoModelForCausalLM

    hf = resolve_generator(str(tiny_gguf))
    with pytest.raises(ConfigError, match="runs GGUF models"):
        LlamaCppGenerator(str(hf)).generate(PROMPTS[:1], 4)
    with pytest.raises(ConfigError, match="precision='q3'"):
        LlamaCppGenerator(str(tiny_gguf), precision="q3")
    wider = AutoModelForCausalLM.from_pretrained(str(hf))
    wider.resize_token_embeddings(wider.config.vocab_size + 64)  # another vocabulary than the GGUF's
    wider.save_pretrained(tmp_path / "wider")
    with pytest.raises(ConfigError, match="token_embd.weight has shape"):
        write_gguf(tiny_gguf, tmp_path / "wider", tmp_path / "out.gguf", "f32")
    short = LlamaCppGenerator(str(tiny_gguf), n_ctx=16)
    with pytest.raises(ConfigError, match="n_ctx=16"):
        short.generate(PROMPTS[1:], 8)


def test_backend_is_picked_by_name_or_option(tiny_gguf):
    assert "smollm2-135m-instruct@llama" in registry(reload=True).names("generator")
    by_name = make_generator(f"{tiny_gguf}@llama")
    by_option = make_generator(str(tiny_gguf), backend="llama", precision="f16")
    assert isinstance(by_name, LlamaCppGenerator) and by_name._model is None  # nothing written until used
    assert isinstance(by_option, LlamaCppGenerator) and by_option.precision == "f16"
