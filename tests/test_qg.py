"""Question generation: the prompt, the passage window, the qg training mode (on a tiny model),
the SQuAD example builder's held-out articles, and the adapter that ships in the package."""

import json

import pytest

from ragtune.finetune.config import FinetuneConfig
from ragtune.finetune.data import Example
from ragtune.finetune.examples import IGNORE, encode_examples
from ragtune.synth.qg import HELD_OUT_ARTICLES, bundled_adapter, qg_examples_from_squad, qg_messages, qg_passage

from .tiny_models import build_tiny_llama


def test_prompt_holds_passage_and_answer_not_a_question():
    msgs = qg_messages("Paris is the capital of France.", "Paris")
    user = msgs[-1]["content"]
    assert msgs[0]["role"] == "system" and "Paris is the capital of France." in user and "Answer: Paris" in user
    assert "?" not in user


def test_passage_window():
    s = ["A one.", "B two.", "C three.", "D four."]
    assert qg_passage(s, 0, 1) == "A one. B two."
    assert qg_passage(s, 2, 1) == "B two. C three. D four."
    assert qg_passage(s, 3, 0) == "D four."


def test_squad_builder_leaves_out_held_out_articles(tmp_path):
    def article(title, q):
        ctx = "Filler sentence one here. The river is 1,230 km long. Another sentence follows it."
        ans = [{"text": "1,230 km", "answer_start": 43}]
        qas = [{"id": f"{title}-1", "question": q, "answers": ans},
               {"id": f"{title}-2", "question": "Is it 1,230 km long?", "answers": ans}]  # fmt: skip
        return {"title": title, "paragraphs": [{"context": ctx, "qas": qas}]}

    data = {"data": [article("Rhine", "How long is the river?"), article("Danube", "How long is it?")]}
    (tmp_path / "squad.json").write_text(json.dumps(data))
    assert "Rhine" in HELD_OUT_ARTICLES
    rows = qg_examples_from_squad(tmp_path / "squad.json")
    assert [r["id"] for r in rows] == ["Danube-1"]  # held-out article dropped; a question holding its answer dropped
    assert rows[0]["context"] == "Filler sentence one here. The river is 1,230 km long. Another sentence follows it."
    assert rows[0]["answer"] == "1,230 km" and rows[0]["doc_id"] == "Danube/0"


def test_qg_mode_trains_on_the_question_tokens_only(tmp_path):
    from transformers import AutoTokenizer

    tiny = build_tiny_llama(tmp_path / "tiny")
    tok = AutoTokenizer.from_pretrained(str(tiny))
    cfg = FinetuneConfig(base_model=str(tiny), mode="qg", max_seq_len=128)
    ex = Example("e", "qa", question="w5 w6 w7", answer="paris", context="paris is the capital of france")
    (t,) = encode_examples([ex], tok, cfg)
    target = [i for i, lab in zip(t.input_ids, t.labels) if lab != IGNORE]
    assert tok.decode(target[:-1]).split() == ["w5", "w6", "w7"]  # the question, then end of turn
    prompt = tok.decode([i for i, lab in zip(t.input_ids, t.labels) if lab == IGNORE])
    assert "paris is the capital of france" in prompt and "w5" not in prompt


def test_qg_mode_runs_through_the_trainer(tmp_path):
    from ragtune.finetune.data import PrepareConfig, prepare
    from ragtune.finetune.train import train

    tiny = build_tiny_llama(tmp_path / "tiny")
    rows = [
        {"id": f"q{i}", "question": f"w{i} w{i + 1} capital", "answer": "paris", "context": f"paris w{i} the capital"}
        for i in range(24)
    ]
    (tmp_path / "qg.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    prepare([tmp_path / "qg.jsonl"], tmp_path / "prep", PrepareConfig(ratios=(0.8, 0.2, 0.0)))
    cfg = FinetuneConfig(base_model=str(tiny), mode="qg", lora_r=4, lora_alpha=8, batch_size=4, lr=1e-2, warmup_steps=0,
                         epochs=1, eval_every=2, patience=50, generate_max=4, max_seq_len=64)  # fmt: skip
    res = train(cfg, tmp_path / "prep", tmp_path / "run")
    assert res.steps >= 4 and res.best_val_loss < 20 and res.generation == {}  # no QA metrics for qg


def test_the_shipped_adapter_is_small_half_precision_and_names_its_base():
    from safetensors import safe_open

    path = bundled_adapter()
    weights = path / "adapter_model.safetensors"
    assert weights.stat().st_size < 5_000_000
    cfg = json.loads((path / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "smollm2-135m-instruct" and cfg["r"] <= 16
    with safe_open(str(weights), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float16"}
    info = json.loads((path / "training.json").read_text())
    assert set(info["held_out_articles"]) == set(HELD_OUT_ARTICLES) and info["wall_s"] < 3600
    assert (path / "README.md").read_text().count("CC BY-SA 4.0") >= 1


@pytest.mark.e2e
def test_the_shipped_adapter_writes_questions():
    from ragtune import make_generator
    from ragtune.synth.generate import clean_question

    gen = make_generator(adapter=bundled_adapter())
    passages = [
        ("The Eiffel Tower was completed in 1889 for the World's Fair in Paris.", "1889"),
        ("Marie Curie was the first woman to win a Nobel Prize, in 1903.", "Marie Curie"),
    ]
    raws = gen.generate([qg_messages(p, a) for p, a in passages], 32)
    questions = [clean_question(r) for r in raws]
    assert all(q and q.endswith("?") for q in questions), raws
    assert all(a.lower() not in q.lower() for q, (_, a) in zip(questions, passages)), questions


@pytest.mark.e2e
def test_span_scores_equal_a_plain_forward_pass():
    """`score` shares the prompt's cache across a padded batch of continuations: each score must be
    the log-likelihood a plain, uncached forward pass gives the same tokens."""
    import torch

    from ragtune import make_generator
    from ragtune.synth.qg import reader_messages

    gen = make_generator(dtype="float32")  # exact to 1e-4 (bfloat16 rounds by batch shape)
    prompt = reader_messages("Rollo led the Norse raiders from Denmark, Iceland and Norway.", "Who led the raiders?")
    spans = ["Rollo", "Denmark, Iceland and Norway", "Norse raiders"]
    scores = gen.score(prompt, spans)
    tok, model = gen.tokenizer, gen.model
    p = tok(gen.render(prompt), add_special_tokens=False)["input_ids"]
    for span, got in zip(spans, scores):
        c = tok(span, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        with torch.inference_mode():
            logp = torch.log_softmax(model(torch.tensor([p + c])).logits[0].float(), -1)
        want = sum(logp[len(p) - 1 + j, t].item() for j, t in enumerate(c))
        assert got == pytest.approx(want, abs=1e-3), span
    assert len(set(scores)) == 3


def test_generator_dtype_is_checked_up_front_and_auto_follows_the_cpu():
    import torch

    from ragtune.errors import ConfigError
    from ragtune.generators import TransformersGenerator, cpu_has_native_bf16, torch_dtype

    with pytest.raises(ConfigError, match="dtype='half'"):
        TransformersGenerator("smollm2-135m-instruct", dtype="half")
    assert torch_dtype("float32") is torch.float32 and torch_dtype("bfloat16") is torch.bfloat16
    assert torch_dtype("auto") is (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
