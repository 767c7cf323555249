import json
import subprocess
import sys

import pytest
import torch

from ragtune.finetune import train as train_mod
from ragtune.finetune.config import FinetuneConfig
from ragtune.finetune.data import PrepareConfig, prepare
from ragtune.finetune.examples import IGNORE, encode_chat
from ragtune.finetune.train import choose_trainable, collate, lm_loss, load_base, train
from ragtune.prompts import closed_book_messages

from .tiny_models import build_tiny_llama

WORDS = "paris france rome italy capital".split()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    rows = [
        {
            "id": f"q{i}",
            "question": f"w{i} w{i + 1} w{i + 2} the capital of w{i % 7} w{(i * 3) % 11}",
            "answer": f"{WORDS[i % 5]} w{i % 13}",
        }
        for i in range(48)
    ]
    (d / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    prepare([d / "qa.jsonl"], d / "prep", PrepareConfig(ratios=(0.75, 0.125, 0.125)))
    return d / "prep"


def cfg_for(tiny, **kw):
    base = dict(
        base_model=str(tiny),
        mode="qa",
        method="lora",
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        batch_size=4,
        lr=1e-2,
        warmup_steps=0,
        epochs=1,
        eval_every=2,
        patience=50,
        generate_max=4,
        max_seq_len=64,
    )
    base.update(kw)
    return FinetuneConfig(**base)


def test_loss_mask_covers_only_answer_tokens(tiny):
    tok, _, _ = load_base(str(tiny))
    t = encode_chat(tok, closed_book_messages("the capital of france"), "paris", 64)
    answer_ids = tok("paris", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    trained = [l for l in t.labels if l != IGNORE]
    assert trained == answer_ids
    assert t.input_ids[-len(answer_ids) :] == answer_ids and len(t.labels) == len(t.input_ids)
    assert all(l == IGNORE for l in t.labels[: -len(answer_ids)])


def test_selective_logits_loss_equals_full_logits_loss(tiny):
    tok, model, _ = load_base(str(tiny))
    items = [
        encode_chat(tok, closed_book_messages(q), a, 64)
        for q, a in (("the capital of france", "paris"), ("rome", "italy w3 w4"))
    ]
    ids, mask, labels = collate(items, tok.pad_token_id)
    loss, n = lm_loss(model, ids, mask, labels)
    ref = model(input_ids=ids, attention_mask=mask, labels=labels).loss  # HF: mean over target tokens
    assert n == sum(sum(1 for l in x.labels[1:] if l != IGNORE) for x in items)
    assert torch.allclose(loss / n, ref, atol=1e-5)


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _three_steps(model, tok, items):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        loss, n = lm_loss(model, *collate(items, tok.pad_token_id))
        (loss / n).backward()
        opt.step()
        opt.zero_grad()


def test_lora_steps_change_only_adapter_parameters(tiny):
    tok, model, _ = load_base(str(tiny))
    model = choose_trainable(model, cfg_for(tiny))
    before = _snapshot(model)
    _three_steps(model, tok, [encode_chat(tok, closed_book_messages("the capital of france"), "paris", 64)])
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert any("lora_B" in n for n in changed)  # B starts at zero; it must have moved


def test_top_layers_changes_only_top_blocks_and_final_norm(tiny):
    tok, model, _ = load_base(str(tiny))
    model = choose_trainable(model, cfg_for(tiny, method="top-layers", top_layers=1))
    before = _snapshot(model)
    _three_steps(model, tok, [encode_chat(tok, closed_book_messages("the capital of france"), "paris", 64)])
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed
    assert all(n.startswith("model.layers.1.") or n == "model.norm.weight" for n in changed), changed
    assert any(n.startswith("model.layers.1.") for n in changed)


def test_lora_layers_adapts_only_top_blocks_and_backward_stops_there(tiny):
    from ragtune.errors import ConfigError

    tok, model, _ = load_base(str(tiny))
    model = choose_trainable(model, cfg_for(tiny, lora_layers=1))
    reached = []
    bottom = train_mod.decoder_layers(model)[0]
    bottom.register_full_backward_hook(lambda *a: reached.append("layer 0"))
    before = _snapshot(model)
    _three_steps(model, tok, [encode_chat(tok, closed_book_messages("the capital of france"), "paris", 64)])
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n and ".layers.1." in n for n in changed), changed
    assert not any(".layers.0." in n and "lora_" in n for n, _ in model.named_parameters())
    assert reached == []  # no gradient was computed through the unadapted block
    with pytest.raises(ConfigError, match="lora_layers=3"):
        choose_trainable(load_base(str(tiny))[1], cfg_for(tiny, lora_layers=3))


def test_early_stopping_fires_on_rising_validation_loss(tiny, data_dir, tmp_path, monkeypatch):
    rising = iter([1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9])
    real = train_mod.estimate_loss

    def fake(model, data, *a, **kw):
        return next(rising) if data is not None and len(data) and fake.in_loop else real(model, data, *a, **kw)

    fake.in_loop = True
    monkeypatch.setattr(train_mod, "estimate_loss", fake)
    cfg = cfg_for(tiny, epochs=5, eval_every=1, patience=2)
    original_save = train_mod.save_model

    def stop_faking(*a, **kw):
        fake.in_loop = False
        return original_save(*a, **kw)

    monkeypatch.setattr(train_mod, "save_model", stop_faking)
    monkeypatch.setattr(train_mod, "evaluate_generation", lambda *a, **k: {})
    res = train(cfg, data_dir, tmp_path / "run")
    assert res.stopped_early and res.steps == 3 and res.best_step == 1  # 1.0 best, then two worse
    log = [json.loads(l) for l in (tmp_path / "run" / "training_log.jsonl").read_text().splitlines()]
    assert log[-1]["early_stop"] is True and [r["step"] for r in log] == [1, 2, 3]


def test_resume_continues_from_checkpoint_and_matches_uninterrupted(tiny, data_dir, tmp_path):
    cfg = cfg_for(tiny, epochs=2, eval_every=2, generate_max=2)
    full = train(cfg, data_dir, tmp_path / "full")
    part = train(cfg, data_dir, tmp_path / "cut", stop_after=3)  # as if killed after step 3
    assert part.steps == 3 and (tmp_path / "cut" / "checkpoint.pt").exists()
    resumed = train(cfg, data_dir, tmp_path / "cut")
    assert resumed.resumed_from_step == 3 and resumed.steps == full.steps
    log = [json.loads(l)["step"] for l in (tmp_path / "cut" / "training_log.jsonl").read_text().splitlines()]
    assert log == list(range(1, full.steps + 1))
    from safetensors.torch import load_file

    a = load_file(tmp_path / "full" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "cut" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert abs(full.best_val_loss - resumed.best_val_loss) < 1e-5
    res = json.loads((tmp_path / "full" / "results.json").read_text())
    assert {"em", "f1", "rouge_l", "bleu"} <= set(res["generation"]) and res["test_loss"] > 0


def test_adapter_reloads_in_a_fresh_process_with_the_same_logits(tiny, data_dir, tmp_path):
    cfg = cfg_for(tiny, max_steps=3, generate_max=1)
    train(cfg, data_dir, tmp_path / "run")
    from ragtune.finetune.data import question_key, read_split
    from ragtune.finetune.run import RunFolder

    # The run records what it trained on (so that no gate is calibrated on it), and nothing else.
    trained = RunFolder.open(tmp_path / "run" / "adapter").trained_on
    assert trained == {question_key(e.question) for e in read_split(data_dir / "train.jsonl")}
    assert not trained & {question_key(e.question) for e in read_split(data_dir / "test.jsonl")}
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 5, 6, 7, 8, 9]])
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(tiny)), str(tmp_path / "run" / "adapter")
    ).eval()
    with torch.no_grad():
        here = model(input_ids=ids).logits
    code = (
        "import sys, torch; from peft import PeftModel; from transformers import AutoModelForCausalLM\n"
        f"base = AutoModelForCausalLM.from_pretrained({str(tiny)!r})\n"
        f"m = PeftModel.from_pretrained(base, {str(tmp_path / 'run' / 'adapter')!r}).eval()\n"
        f"torch.save(m(input_ids=torch.tensor({ids.tolist()})).logits.detach(), {str(tmp_path / 'logits.pt')!r})\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    there = torch.load(tmp_path / "logits.pt")
    assert torch.allclose(here, there, atol=1e-5)
    # And the adapter really changed the model.
    base = AutoModelForCausalLM.from_pretrained(str(tiny)).eval()
    with torch.no_grad():
        assert not torch.allclose(base(input_ids=ids).logits, here, atol=1e-4)

    # Export merges it into a plain model with the same logits.
    from ragtune.finetune.export import export_merged

    merged = AutoModelForCausalLM.from_pretrained(str(export_merged(tmp_path / "run", tmp_path / "merged"))).eval()
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, here, atol=1e-4)


def test_raft_examples_cite_the_gold_source_or_abstain_without_it(tiny, tmp_path, corpus_dir, embedder, small_chunking):
    import random

    from ragtune.finetune.data import Example
    from ragtune.finetune.examples import raft_prompt
    from ragtune.index import Index
    from ragtune.prompts import ABSTAIN

    index = Index.create(tmp_path / "ix", embedder=embedder, chunking=small_chunking)
    index.ingest([corpus_dir])
    ex = Example(
        "e1",
        "qa",
        question="When was the Eiffel Tower built?",
        answer="1889",
        answers=("1889",),
        doc_id="corpus/paris.txt",
    )
    messages, target = raft_prompt(
        ex, index, cfg_for(tiny, mode="raft", raft_k=3, raft_p_no_gold=0.0), random.Random(0)
    )
    user = messages[-1]["content"]
    number = target.split("[")[1].rstrip("]")
    assert target.startswith("1889 [")
    gold_block = user.split(f'<source id="{number}"')[1].split("</source>")[0]
    assert "1889" in gold_block  # the cited number is the gold chunk's
    assert user.count("<source id=") >= 2  # distractors came along
    messages, target = raft_prompt(
        ex, index, cfg_for(tiny, mode="raft", raft_k=3, raft_p_no_gold=1.0), random.Random(0)
    )
    assert target == ABSTAIN and "1889" not in messages[-1]["content"]
    # Without a doc_id the gold chunk is found from the example's context.
    ex2 = Example(
        "e2",
        "qa",
        question="When was the Eiffel Tower built?",
        answer="1889",
        answers=("1889",),
        context="The Eiffel Tower was built in 1889.",
    )
    _, target = raft_prompt(ex2, index, cfg_for(tiny, mode="raft", raft_k=3, raft_p_no_gold=0.0), random.Random(0))
    assert target.startswith("1889 [")


@pytest.mark.parametrize("every", [1, 2])
def test_recomputed_activations_train_to_the_same_losses(tiny, data_dir, tmp_path, every):
    """Gradient checkpointing changes memory, not the numbers: same validation losses as keeping
    every activation, and the same configuration fingerprint (a run may resume in either mode)."""
    keep = train(cfg_for(tiny, max_steps=4, generate_max=0), data_dir, tmp_path / "keep")
    rc = cfg_for(tiny, max_steps=4, generate_max=0, activations="recompute", recompute_every=every)
    recompute = train(rc, data_dir, tmp_path / "recompute")
    assert abs(keep.best_val_loss - recompute.best_val_loss) < 1e-4
    assert rc.fingerprint() == cfg_for(tiny, max_steps=4, generate_max=0).fingerprint()
    tok, model, _ = load_base(str(tiny))
    model = choose_trainable(model, rc)
    train_mod.prepare_memory(model, rc)
    layers = model.get_base_model().model.layers
    flags = [bool(getattr(m, "gradient_checkpointing", False)) for m in layers]
    assert sum(flags) == -(-len(layers) // every)  # every layer, or every other one


def test_only_recompute_hands_freed_memory_back_to_the_os(tiny, monkeypatch):
    """`keep` is the fast mode: the heap stays (faulting memory in again cost 1.5x the step time on
    the project's VM); `recompute` is the frugal one: freed activations go back to the OS."""
    calls = []
    monkeypatch.setattr(train_mod, "fixed_mmap_threshold", lambda *a: calls.append(a) or True)
    for activations, expected in (("keep", 0), ("recompute", 1), ("auto", 1)):  # auto: recompute-mlp here
        calls.clear()
        rc = cfg_for(tiny, activations=activations)
        _, model, _ = load_base(str(tiny))
        train_mod.prepare_memory(choose_trainable(model, rc), rc)
        assert len(calls) == expected, activations


def test_keep_hands_memory_back_once_the_machine_runs_short(tiny, data_dir, tmp_path, monkeypatch):
    """`keep` keeps its heap while memory is plentiful; once the process holds more than RELEASE_AT
    of the machine's memory it hands freed memory back (once), and the step's log line says so."""
    calls = []
    monkeypatch.setattr(train_mod, "fixed_mmap_threshold", lambda *a: calls.append(a) or True)
    shares = iter([0.2, 0.5, 0.9, 0.95, 0.99])
    monkeypatch.setattr(train_mod, "memory_share", lambda: next(shares))
    train(cfg_for(tiny, max_steps=4, generate_max=0, activations="keep"), data_dir, tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run" / train_mod.LOG).read_text().splitlines()]
    assert len(calls) == 1  # at the third step, and not again
    assert [x.get("memory_released_at") for x in lines] == [None, None, 0.9, None]
    monkeypatch.undo()
    share = train_mod.memory_share()
    assert share is None or 0 < share < 1  # this process, read from /proc


def test_precision_and_memory_settings_are_checked():
    from ragtune.errors import ConfigError

    for bad in ({"activations": "drop"}, {"recompute_every": 0}, {"precision": "fp8"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            FinetuneConfig(**bad)
    assert train_mod.training_precision(FinetuneConfig(precision="bf16"), "cpu") == torch.bfloat16
    assert train_mod.training_precision(FinetuneConfig(), "cpu") is None
    if sys.platform.startswith("linux"):
        assert train_mod.fixed_mmap_threshold()  # glibc took the setting


def test_auto_precision_keeps_the_cpu_in_float32():
    assert train_mod.training_precision(FinetuneConfig(precision="auto"), "cpu") is None


def test_reader_examples_read_the_answers_sentence(tiny, tmp_path, corpus_dir, embedder, small_chunking):
    from ragtune.errors import InputError
    from ragtune.finetune.data import Example
    from ragtune.finetune.examples import reader_example
    from ragtune.index import Index
    from ragtune.prompts import reader_messages

    context = "Paris is large. The Eiffel Tower was built in 1889 for a fair. It is tall."
    ex = Example("e1", "qa", question="When was the tower built?", answer="1889", context=context)
    messages, target = reader_example(ex)
    assert target == "1889"
    # exactly the prompt the extracting reader reads at answer time, with the answer's sentence only
    assert messages == reader_messages("The Eiffel Tower was built in 1889 for a fair.", "When was the tower built?")
    bare = Example("e2", "qa", question="When was the Eiffel Tower built?", answer="1889", doc_id="corpus/paris.txt")
    with pytest.raises(InputError, match="e2.*no passage.*--index"):
        reader_example(bare)
    index = Index.create(tmp_path / "ix", embedder=embedder, chunking=small_chunking)
    index.ingest([corpus_dir])
    messages, _ = reader_example(bare, index)  # the passage comes from its document
    assert "1889" in messages[-1]["content"]


def test_a_reader_run_trains_and_its_adapter_answers_by_extracting(
    tiny, tmp_path, corpus_dir, embedder, small_chunking
):
    from ragtune.config import RagConfig
    from ragtune.generators import TransformersGenerator, adapter_mode
    from ragtune.index import Index
    from ragtune.rag import Pipeline

    rows = [
        {"id": f"r{i}", "question": f"what is w{i} of {WORDS[i % 5]}?", "answer": f"w{i + 1}",
         "context": f"Some words here. The w{i} of {WORDS[i % 5]} is w{i + 1} today. More words."}
        for i in range(24)
    ]  # fmt: skip
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    prepare([tmp_path / "qa.jsonl"], tmp_path / "prep", PrepareConfig(ratios=(0.75, 0.125, 0.125)))
    res = train(cfg_for(tiny, mode="reader", max_steps=4), tmp_path / "prep", tmp_path / "run")
    assert res.steps == 4 and res.generation["n"] > 0  # judged reading the answer's sentence
    assert adapter_mode(tmp_path / "run") == "reader" and adapter_mode(tmp_path / "run" / "adapter") == "reader"
    assert adapter_mode(None) == "" and adapter_mode(tmp_path / "nothing") == ""
    index = Index.create(tmp_path / "ix", embedder=embedder, chunking=small_chunking)
    index.ingest([corpus_dir])
    gen = TransformersGenerator(str(tiny), adapter=tmp_path / "run")
    assert Pipeline(index, gen, RagConfig(k=2), gate=False).extracts  # auto: a reader adapter extracts
    assert not Pipeline(index, gen, RagConfig(k=2, answer_mode="generate"), gate=False).extracts
    qa_gen = TransformersGenerator(str(tiny), adapter=tmp_path / "nothing")
    assert not Pipeline(index, qa_gen, RagConfig(k=2), gate=False).extracts  # other adapters keep writing
