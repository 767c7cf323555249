"""Lean LoRA (ragtune.finetune.lean): the hand-written forward and backward passes give peft's
loss and gradients, draw the same dropout mask in both passes, and keep less than half the
activations peft keeps."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from ragtune.finetune import lean  # noqa: E402
from ragtune.finetune.train import lm_loss  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_lora(dropout: float = 0.0, **lora):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)  # fmt: skip
    model = get_peft_model(
        LlamaForCausalLM(cfg),
        LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=TARGETS, task_type="CAUSAL_LM", **lora),
    )
    with torch.no_grad():  # peft starts B at zero: no gradient would reach A
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    model.train()
    return model


def batch(rows: int = 3, width: int = 12):
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(4, 64, (rows, width), generator=gen)
    mask = torch.ones(rows, width, dtype=torch.long)
    mask[0, 8:] = 0  # a padded row
    labels = ids.clone()
    labels[:, :4] = -100
    labels[mask == 0] = -100
    return ids, mask, labels


def grads(model) -> dict:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def step_both(ref, model, seed: int | None = None) -> list[tuple[float, dict]]:
    """One loss and backward pass on the same batch for each model (after `seed`, if given, so both
    draw the same masks): [(loss, gradients) of ref, (loss, gradients) of model]."""
    out = []
    for m in (ref, model):
        if seed is not None:
            torch.manual_seed(seed)
        loss, _ = lm_loss(m, *batch())
        loss.backward()
        out.append((float(loss.detach()), grads(m)))
    return out


def test_lean_gives_peft_loss_and_gradients():
    ref = tiny_lora()
    model = copy.deepcopy(ref)
    assert lean.enable(model) == {"linear": 14, "mlp": 2, "norm": 5, "attention": 2}
    (want, g_ref), (got, g) = step_both(ref, model)
    assert got == pytest.approx(want, rel=1e-5)
    assert set(g) == set(g_ref) and len(g) == 2 * 2 * len(TARGETS)
    for name in g:
        assert torch.allclose(g[name], g_ref[name], rtol=1e-4, atol=1e-6), name
    # the lean path really ran: routed modules have a forward of their own, and disable() undoes it
    mlp = model.base_model.model.model.layers[0].mlp
    assert "forward" in vars(mlp)
    lean.disable(model)
    assert "forward" not in vars(mlp)


def reference_projection(x, proj: lean.Projection, seed: int):
    """x W^T + s B A drop(x) in plain autograd, with the mask `proj` draws for `seed`."""
    keep = proj._mask(x, seed)
    p = round(proj.dropout * 65536) / 65536  # lean draws 16 bits an element: p in steps of 1 / 65536
    xd = x * keep / (1 - p)
    return x @ proj.weight.t() + proj.scaling * (xd @ proj.lora_a.t()) @ proj.lora_b.t()


def random_projection(gen, width: int, out: int, dropout: float) -> lean.Projection:
    a = (torch.randn(4, width, generator=gen) / width**0.5).requires_grad_()
    b = (torch.randn(out, 4, generator=gen) / 2).requires_grad_()
    return lean.Projection(torch.randn(out, width, generator=gen) / width**0.5, None, a, b, 2.0, dropout)


def test_dropout_mask_is_drawn_again_in_backward():
    gen = torch.Generator().manual_seed(2)
    proj = random_projection(gen, 16, 8, 0.3)
    x = torch.randn(5, 7, 16, generator=gen, requires_grad=True)
    dy = torch.randn(5, 7, 8, generator=gen)
    linear_fn = lean._functions()[0]
    y = linear_fn.apply(x, proj.lora_a, proj.lora_b, proj, 1234, None)
    got = torch.autograd.grad(y, (x, proj.lora_a, proj.lora_b), dy)
    y_ref = reference_projection(x, proj, 1234)
    want = torch.autograd.grad(y_ref, (x, proj.lora_a, proj.lora_b), dy)
    assert torch.allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=1e-4, atol=1e-5)
    # another seed, another mask; about 30 % dropped
    wide = torch.zeros(200, 100)
    keep = proj._mask(wide, 1234)
    assert torch.equal(keep, proj._mask(wide, 1234)) and not torch.equal(keep, proj._mask(wide, 1235))
    assert 0.28 < 1 - keep.float().mean() < 0.32


def test_swiglu_with_dropout_matches_plain_autograd():
    gen = torch.Generator().manual_seed(3)
    gate, up = random_projection(gen, 16, 24, 0.2), random_projection(gen, 16, 24, 0.2)
    down = random_projection(gen, 24, 16, 0.2)
    x = torch.randn(3, 5, 16, generator=gen, requires_grad=True)
    dy = torch.randn(3, 5, 16, generator=gen)
    seeds = (11, 12, 13)
    swiglu_fn = lean._functions()[1]
    params = [gate.lora_a, gate.lora_b, up.lora_a, up.lora_b, down.lora_a, down.lora_b]
    y = swiglu_fn.apply(x, *params, (gate, up, down), seeds, None, False)
    got = torch.autograd.grad(y, [x, *params], dy)
    h = torch.nn.functional.silu(reference_projection(x, gate, 11)) * reference_projection(x, up, 12)
    y_ref = reference_projection(h, down, 13)
    want = torch.autograd.grad(y_ref, [x, *params], dy)
    assert torch.allclose(y, y_ref, rtol=1e-4, atol=1e-5)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=1e-4, atol=1e-4)


def test_rms_norm_gradients_match_the_model_norm():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    gen = torch.Generator().manual_seed(4)
    norm = LlamaRMSNorm(16, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(16, generator=gen) + 0.5)
    h = torch.randn(3, 5, 16, generator=gen, requires_grad=True)
    dy = torch.randn(3, 5, 16, generator=gen)
    want = torch.autograd.grad(norm(h), (h, norm.weight), dy)
    y, rstd = lean._functions()[2].apply(h, norm.weight, 1e-6)
    assert torch.allclose(y, norm(h), rtol=1e-5, atol=1e-6)
    got = torch.autograd.grad(y, (h, norm.weight), dy)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, rtol=1e-4, atol=1e-5)


def saved_bytes(model) -> int:
    """Bytes of the tensors autograd keeps for one training step's backward pass (each storage
    once; parameters left out)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = lm_loss(model, *batch(4, 48))
    loss.backward()
    return sum(seen.values())


def test_lean_keeps_less_than_half_the_activations():
    ref = tiny_lora(dropout=0.05)
    model = copy.deepcopy(ref)
    lean.enable(model)
    peft_bytes, lean_bytes = saved_bytes(ref), saved_bytes(model)
    assert lean_bytes < 0.5 * peft_bytes, (lean_bytes, peft_bytes)


def test_modules_the_lean_path_does_not_cover_stay_as_they_were():
    model = tiny_lora(use_dora=True)
    assert lean.enable(model) == {"linear": 0, "mlp": 0, "norm": 5, "attention": 2}  # norms have no adapter
    plain = tiny_lora()
    layer = plain.base_model.model.model.layers[0]
    assert lean.projection(layer.self_attn.q_proj) is not None
    layer.self_attn.q_proj.merge()
    assert lean.projection(layer.self_attn.q_proj) is None
    # dropout only in training mode
    drop = tiny_lora(dropout=0.1).base_model.model.model.layers[0].self_attn.q_proj
    assert lean.projection(drop).dropout == 0.1
    drop.eval()
    assert lean.projection(drop).dropout == 0.0


def test_without_gradients_the_module_computes_as_before():
    ref = tiny_lora()
    model = copy.deepcopy(ref)
    lean.enable(model)
    ids, mask, labels = batch()
    with torch.no_grad():
        a, _ = lm_loss(ref, ids, mask, labels)
        b, _ = lm_loss(model, ids, mask, labels)
    assert float(a) == pytest.approx(float(b), rel=1e-6)


def test_projections_reading_one_input_share_its_mask():
    gen = torch.Generator().manual_seed(5)
    q, k = random_projection(gen, 16, 8, 0.1), random_projection(gen, 16, 8, 0.1)
    x = torch.randn(4, 16, generator=gen)
    seed = lean._input_seed(x)
    assert lean._input_seed(x) == seed and lean._input_seed(torch.randn(4, 16)) != seed
    keep_q, xd_q = q.dropped(x, seed)
    keep_k, xd_k = k.dropped(x, seed)
    assert xd_k is xd_q and torch.equal(keep_q, keep_k)  # drawn and applied once
    assert torch.equal(keep_q, q._mask(x, seed))  # the mask the backward pass draws again


def test_base_in_bfloat16_keeps_lora_in_float32_and_close_gradients():
    ref = tiny_lora(dropout=0.0)
    model = copy.deepcopy(ref)
    lean.enable(model, base_dtype=torch.bfloat16)
    (want, g_ref), (got, g) = step_both(ref, model)
    assert got == pytest.approx(want, rel=2e-2)
    assert got != want  # the base really ran in bfloat16
    for name in g:
        assert g[name].dtype == torch.float32
        cos = torch.nn.functional.cosine_similarity(g[name].flatten(), g_ref[name].flatten(), dim=0)
        assert cos > 0.99, name
    layer = model.base_model.model.model.layers[0]
    weight = layer.self_attn.q_proj.base_layer.weight
    assert lean.low_precision(weight, torch.bfloat16).dtype == torch.bfloat16
    with torch.no_grad():  # a changed weight is converted again
        weight.add_(1.0)
    assert torch.allclose(lean.low_precision(weight, torch.bfloat16).float(), weight, rtol=1e-2)


def test_recomputed_mlp_gives_the_same_gradients_from_less_memory():
    ref = tiny_lora(dropout=0.1)
    keep, again = copy.deepcopy(ref), copy.deepcopy(ref)
    lean.enable(keep)
    lean.enable(again, recompute_mlp=True)
    (_, g_keep), (_, g_again) = step_both(keep, again, seed=7)
    for name in g_keep:
        assert torch.allclose(g_again[name], g_keep[name], rtol=1e-5, atol=1e-7), name
    torch.manual_seed(7)
    kept = saved_bytes(keep)
    torch.manual_seed(7)
    assert saved_bytes(again) < 0.8 * kept


def test_auto_precision_takes_base_bf16_on_a_cpu_with_amx_only(monkeypatch):
    from ragtune import devices
    from ragtune.finetune.config import FinetuneConfig
    from ragtune.finetune.train import lean_base_bf16, training_precision

    auto = FinetuneConfig(precision="auto")
    monkeypatch.setattr(devices, "cpu_has_amx", lambda: True)
    assert lean_base_bf16(auto, "cpu") and training_precision(auto, "cpu") is None  # no autocast
    assert not lean_base_bf16(FinetuneConfig(precision="auto", lora_impl="peft"), "cpu")
    assert not lean_base_bf16(FinetuneConfig(precision="auto", method="full"), "cpu")
    assert not lean_base_bf16(FinetuneConfig(precision="fp32"), "cpu")  # fp32 stays fp32
    assert FinetuneConfig().precision == "auto" and lean_base_bf16(FinetuneConfig(), "cpu")  # the default
    assert lean_base_bf16(FinetuneConfig(precision="base-bf16"), "cpu")
    monkeypatch.setattr(devices, "cpu_has_amx", lambda: False)
    assert not lean_base_bf16(auto, "cpu")
    assert lean_base_bf16(FinetuneConfig(precision="base-bf16"), "cpu")  # asked for: done (slowly)
    with pytest.raises(Exception, match="base-bf16 only with method='lora'"):
        FinetuneConfig(precision="base-bf16", method="full")
