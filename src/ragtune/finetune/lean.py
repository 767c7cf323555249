"""Lean LoRA: the forward and backward passes of LoRA-adapted projections, of the SwiGLU MLP
around them and of RMSNorm, written out by hand so that a training step keeps only what its
backward pass reads.

Run as peft builds it, a LoRA projection with dropout keeps, per token, its input, the dropout's
noise and the dropped input, and a SwiGLU MLP keeps gate, SiLU(gate), up and their product on top
of that: 74 KB per token and layer for SmolLM2-135M, 6.1 GB of saved activations for one batch of
8 x 315 tokens. Here:
- a projection keeps its input and its rank-r LoRA activation; the output of an RMSNorm is kept as
  the norm's input and reciprocal RMS (which the norm keeps anyway) and computed again;
- the dropout mask is drawn again in the backward pass from a seed (no mask is stored), one mask an
  input: projections reading the same tensor (q, k and v; gate and up) share it, as a fused QKV
  projection does, and draw and apply it once;
- the MLP keeps its input, gate and up and recomputes SiLU(gate) * up (elementwise); with
  `recompute_mlp` it keeps only its input and computes gate and up again too;
- grouped-query attention on the CPU reads its key and value heads as they are (no copies repeated
  for every query head);
- `base_dtype=torch.bfloat16`: the frozen base's matmuls run in bfloat16 (4-6x faster on a CPU with
  AMX), LoRA's and everything else in float32.
The same gradients as peft's (`tests/test_lean_lora.py` compares them on the same masks), 2.6 GB
saved for that batch instead of 6.1; speeds and peak memory in README (benchmarks/train_throughput.py).

    enable(model)   # a peft LoRA model: its projections, MLPs and norms take the lean path

A module the lean path does not cover stays as it was: DoRA and other LoRA variants, several
active adapters, a merged or disabled adapter, a base layer that is not a plain `nn.Linear`
(QLoRA's 4-bit layers), autocast (bf16), and calls without gradients. An MLP or norm takes it only
when it computes down(SiLU(gate(x)) * up(x)) or weight * x / rms(x) — checked once on a random
input against the module's own forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MethodType


@dataclass
class Projection:
    """One projection as the lean functions read it: a frozen base (weight, bias), and where the
    module is LoRA-adapted its A (r x in) and B (out x r), scaling and dropout probability.
    `base_dtype` (bfloat16): the frozen base's matmuls run in it, on a copy of the weight made once
    (`low_precision`); LoRA's matmuls and everything else stay in the weights' dtype."""

    weight: object
    bias: object = None
    lora_a: object = None
    lora_b: object = None
    scaling: float = 1.0
    dropout: float = 0.0
    base_dtype: object = None

    def forward(self, x, seed: int):
        """y = x W^T + b + s * B A drop(x); also the rank-r activation A drop(x) (None without LoRA)."""
        import torch.nn.functional as F

        if self.base_dtype is None:
            y = F.linear(x, self.weight, self.bias)
        else:
            y = F.linear(_cast(x, self.base_dtype), low_precision(self.weight, self.base_dtype)).to(x.dtype)
            if self.bias is not None:
                y.add_(self.bias)
        if self.lora_a is None:
            return y, None
        a = F.linear(self.dropped(x, seed)[1], self.lora_a)
        return y.add_(F.linear(a, self.lora_b), alpha=self.scaling), a

    def backward(self, dy, x, a, seed: int, need_dx: bool = True, dropped=None):
        """Gradients of the input, A and B from the output's gradient `dy`, the input `x` and the
        rank-r activation `a`; the dropout mask is drawn again from `seed` (or given: `dropped`,
        the (mask, dropped input) pair of `dropped`)."""
        dx = None
        if need_dx and self.base_dtype is None:
            dx = dy.matmul(self.weight)
        elif need_dx:
            dx = dy.to(self.base_dtype).matmul(low_precision(self.weight, self.base_dtype)).to(dy.dtype)
        if self.lora_a is None:
            return dx, None, None
        rank, width = self.lora_a.shape
        d_b = dy.reshape(-1, dy.shape[-1]).t().matmul(a.reshape(-1, rank)).mul_(self.scaling)
        dz = dy.matmul(self.lora_b).mul_(self.scaling)
        keep, xd = dropped or self.dropped(x, seed)
        d_a = dz.reshape(-1, rank).t().matmul(xd.reshape(-1, width))
        del xd
        if need_dx:
            da_x = dz.matmul(self.lora_a)
            dx.add_(da_x if keep is None else self._drop(da_x, keep))
        return dx, d_a, d_b

    def dropped(self, x, seed: int) -> tuple:
        """(keep-mask, dropped input) for `x`: (None, x) without dropout. The same for the same seed;
        remembered on `x` while it lives, so projections reading one input with one seed (q, k and v;
        gate and up) draw and apply its mask once."""
        if not self.dropout:
            return None, x
        memo = getattr(x, "_lean_dropped", None)
        if memo is not None and memo[:2] == (seed, self.dropout):
            return memo[2:]
        keep = self._mask(x, seed)
        xd = self._drop(x, keep)
        x._lean_dropped = (seed, self.dropout, keep, xd)
        return keep, xd

    def _mask(self, x, seed: int):
        """The dropout's keep-mask for `x`, the same every time for the same seed. Drawn as 16 random
        bits an element (a quarter of the generator calls `torch.rand` makes, 2.4x faster on this
        project's CPU): an element is kept with probability 1 - round(p * 65536) / 65536."""
        import torch

        gen = torch.Generator(device=x.device)
        gen.manual_seed(seed)
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), 2**63 - 1, generator=gen)
        return bits.view(torch.int16)[:n].view(x.shape) >= round(self.dropout * 65536) - 32768

    def _drop(self, x, keep):
        """x with the dropped elements zeroed and the kept ones scaled by 1 / P(kept)."""
        import torch

        return torch.where(keep, x, 0).mul_(65536 / (65536 - round(self.dropout * 65536)))


_LOW_PRECISION: dict = {}  # id(weight) -> (weakref to it, its version and dtype, its copy in that dtype)


def low_precision(weight, dtype):
    """`weight` in `dtype`, converted once and again only after the weight changes in place."""
    import weakref

    key = id(weight)
    memo = _LOW_PRECISION.get(key)
    if memo is None or memo[0]() is not weight or memo[1] != (weight._version, dtype):
        ref = weakref.ref(weight, lambda _, key=key: _LOW_PRECISION.pop(key, None))
        memo = (ref, (weight._version, dtype), weight.detach().to(dtype))
        _LOW_PRECISION[key] = memo
    return memo[2]


def _cast(x, dtype):
    """x in `dtype`, remembered on x while it lives (q, k and v cast their shared input once)."""
    memo = getattr(x, "_lean_cast", None)
    if memo is None or memo.dtype != dtype:
        memo = x.to(dtype)
        x._lean_cast = memo
    return memo


def _seed() -> int:
    """A mask seed drawn from torch's global generator: a run's seed fixes its masks, and a resumed
    run (which restores the generator) draws the same ones."""
    import torch

    return int(torch.randint(0, 2**62, ()).item())


def _input_seed(x) -> int:
    """The mask seed of input `x`: drawn at its first projection, shared by every projection that
    reads it (one dropout mask an input, as a fused QKV projection has)."""
    seed = getattr(x, "_lean_seed", None)
    if seed is None:
        seed = _seed()
        x._lean_seed = seed
    return seed


_BACKWARD_DROPPED: list = []  # the last (seed, p, shape, mask, dropped input) the backward pass drew


def _dropped_again(proj: Projection, x, seed: int) -> tuple:
    """`proj.dropped(x, seed)` in the backward pass, where q, k and v come one after another for one
    input: the last pair drawn is used again (the norm's backward pass, after theirs, forgets it)."""
    if not proj.dropout:
        return None, x
    key = (seed, proj.dropout, tuple(x.shape))
    if not _BACKWARD_DROPPED or _BACKWARD_DROPPED[0] != key:
        _BACKWARD_DROPPED[:] = [key, proj.dropped(x, seed)]
    return _BACKWARD_DROPPED[1]


def _normalize(h, rstd, weight):
    """RMSNorm's output from its input and reciprocal RMS: weight * (h / rms(h)), in h's dtype."""
    return weight * (h.float() * rstd).to(h.dtype)


def _stash(x, after_use: bool = False) -> tuple:
    """What a function keeps of its input `x`: the output of a lean RMSNorm is kept as that norm's
    input and reciprocal RMS (which the norm keeps anyway) and computed again in the backward pass;
    any other input as itself, without what the forward pass remembered on it (its dropped and cast
    copies would otherwise live until the backward pass)."""
    source = getattr(x, "_lean_norm", None)
    if source is not None:
        return None, *source[:2]
    if after_use:
        vars(x).pop("_lean_dropped", None), vars(x).pop("_lean_cast", None)
    return x, None, None


def _unstash(x, h, rstd, weight):
    return x if x is not None else _normalize(h, rstd, weight)


def _function_classes():
    import torch

    class NormFn(torch.autograd.Function):
        """RMSNorm keeping its input and the reciprocal RMS (one number a token)."""

        @staticmethod
        def forward(ctx, h, weight, eps: float):
            rstd = torch.rsqrt(h.float().pow(2).mean(-1, keepdim=True).add_(eps))
            ctx.save_for_backward(h, rstd, weight)
            ctx.mark_non_differentiable(rstd)
            return _normalize(h, rstd, weight), rstd

        @staticmethod
        def backward(ctx, dy, _):
            h, rstd, weight = ctx.saved_tensors
            _BACKWARD_DROPPED.clear()
            xhat = h.float() * rstd
            g = dy.float() * weight.float()
            dh = g.sub_(xhat * (g * xhat).mean(-1, keepdim=True)).mul_(rstd).to(h.dtype)
            dw = (
                (dy.float() * xhat).reshape(-1, h.shape[-1]).sum(0).to(weight.dtype)
                if ctx.needs_input_grad[1]
                else None
            )
            return dh, dw, None

    class LinearFn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, lora_a, lora_b, proj: Projection, seed: int, norm_weight):
            y, a = proj.forward(x, seed)
            ctx.save_for_backward(*_stash(x, after_use=True), a, norm_weight)
            ctx.proj, ctx.seed = proj, seed
            return y

        @staticmethod
        def backward(ctx, dy):
            x, h, rstd, a, norm_weight = ctx.saved_tensors
            x = _unstash(x, h, rstd, norm_weight)
            dropped = _dropped_again(ctx.proj, x, ctx.seed)
            dx, d_a, d_b = ctx.proj.backward(dy, x, a, ctx.seed, ctx.needs_input_grad[0], dropped)
            return dx, d_a, d_b, None, None, None

    class SwiGLUFn(torch.autograd.Function):
        """down(SiLU(gate(x)) * up(x)), keeping x, gate and up (and the rank-r activations); with
        `recompute`, x alone: gate and up are computed again in the backward pass."""

        @staticmethod
        def forward(ctx, x, ga, gb, ua, ub, da, db, projs, seeds, norm_weight, recompute: bool):
            gate, up, down = projs
            g, a_g = gate.forward(x, seeds[0])
            u, a_u = up.forward(x, seeds[1])
            h = torch.nn.functional.silu(g).mul_(u)
            y, a_d = down.forward(h, seeds[2])
            kept = (None, None, None, None) if recompute else (g, u, a_g, a_u)
            ctx.save_for_backward(*_stash(x, after_use=True), *kept, a_d, norm_weight)
            ctx.projs, ctx.seeds = projs, seeds
            return y

        @staticmethod
        def backward(ctx, dy):
            x, h_in, rstd, g, u, a_g, a_u, a_d, norm_weight = ctx.saved_tensors
            x = _unstash(x, h_in, rstd, norm_weight)
            gate, up, down = ctx.projs
            if g is None:  # recomputed: the same masks from the same seeds
                g, a_g = gate.forward(x, ctx.seeds[0])
                u, a_u = up.forward(x, ctx.seeds[1])
            sig = torch.sigmoid(g)
            silu = g * sig
            dh, d_da, d_db = down.backward(dy, silu * u, a_d, ctx.seeds[2])
            du = dh * silu
            del silu
            # d SiLU(g) / dg = sig * (1 + g * (1 - sig))
            dg = dh.mul_(u).mul_(sig.mul_(g.mul(sig.neg().add_(1)).add_(1)))
            del sig
            need_dx = ctx.needs_input_grad[0]
            dropped = gate.dropped(x, ctx.seeds[0])  # up's too when it has gate's dropout (one mask an input)
            dx, d_ga, d_gb = gate.backward(dg, x, a_g, ctx.seeds[0], need_dx, dropped)
            shared = up.dropout == gate.dropout and ctx.seeds[1] == ctx.seeds[0]
            dx_u, d_ua, d_ub = up.backward(du, x, a_u, ctx.seeds[1], need_dx, dropped if shared else None)
            if need_dx:
                dx.add_(dx_u)
            return dx, d_ga, d_gb, d_ua, d_ub, d_da, d_db, None, None, None, None

    return LinearFn, SwiGLUFn, NormFn


_FUNCTIONS: tuple | None = None


def _functions():
    global _FUNCTIONS
    if _FUNCTIONS is None:
        _FUNCTIONS = _function_classes()
    return _FUNCTIONS


# -- which modules, and their projections -------------------------------------------------------


def _is_lora_linear(module) -> bool:
    from peft.tuners.lora import Linear as LoraLinear

    return isinstance(module, LoraLinear)


def projection(module) -> Projection | None:
    """`module`'s projection as it computes now, or None where the lean path does not cover it."""
    import torch

    base_dtype = getattr(module, "_lean_base_dtype", None)
    if type(module) is torch.nn.Linear:
        return None if module.weight.requires_grad else Projection(module.weight, module.bias, base_dtype=base_dtype)
    if not _is_lora_linear(module) or module.merged or module.disable_adapters:
        return None
    active = list(module.active_adapters)
    if len(active) != 1 or active[0] not in module.lora_A or active[0] in getattr(module, "lora_variant", {}):
        return None
    name = active[0]
    base, lora_a, lora_b, drop = module.base_layer, module.lora_A[name], module.lora_B[name], module.lora_dropout[name]
    if type(base) is not torch.nn.Linear or base.weight.requires_grad:
        return None
    if lora_a.bias is not None or lora_b.bias is not None or not isinstance(drop, torch.nn.Dropout | torch.nn.Identity):
        return None
    p = drop.p if isinstance(drop, torch.nn.Dropout) and module.training else 0.0
    scaling = float(module.scaling[name])
    return Projection(base.weight, base.bias, lora_a.weight, lora_b.weight, scaling, p, base_dtype)


def _lean_call(x) -> bool:
    import torch

    return torch.is_grad_enabled() and not torch.is_autocast_enabled(x.device.type)


def _linear_forward(self, x, *args, **kwargs):
    proj = projection(self) if not args and not kwargs and _lean_call(x) else None
    if proj is None:
        return type(self).forward(self, x, *args, **kwargs)
    seed = _input_seed(x) if proj.dropout else 0
    return _functions()[0].apply(x, proj.lora_a, proj.lora_b, proj, seed, _norm_weight(x))


def _mlp_forward(self, x):
    projs = [projection(self.gate_proj), projection(self.up_proj), projection(self.down_proj)] if _lean_call(x) else []
    if len(projs) < 3 or None in projs:
        return type(self).forward(self, x)
    seed_x = _input_seed(x) if projs[0].dropout or projs[1].dropout else 0
    seeds = (seed_x, seed_x, _seed() if projs[2].dropout else 0)
    loras = [t for p in projs for t in (p.lora_a, p.lora_b)]
    recompute = getattr(self, "_lean_recompute", False)
    return _functions()[1].apply(x, *loras, tuple(projs), seeds, _norm_weight(x), recompute)


def _norm_weight(x):
    source = getattr(x, "_lean_norm", None)
    return None if source is None else source[2]


def _norm_forward(self, h):
    if not _lean_call(h):
        return type(self).forward(self, h)
    y, rstd = _functions()[2].apply(h, self.weight, float(self.variance_epsilon))
    y._lean_norm = (h, rstd, self.weight)  # read by the lean function y feeds, if any
    return y


def _attention_forward(self, *args, **kwargs):
    """The attention module's own forward; on the CPU with gradients, SDPA reads the grouped key and
    value heads as they are (`enable_gqa`, which transformers asks for on CUDA only) instead of
    copies repeated for every query head: the same numbers, without keeping the copies."""
    import os

    x = kwargs.get("hidden_states", args[0] if args else None)
    if x is None or x.device.type != "cpu" or not _lean_call(x) or os.environ.get(_FORCE_GQA) == "1":
        return type(self).forward(self, *args, **kwargs)
    os.environ[_FORCE_GQA] = "1"
    try:
        return type(self).forward(self, *args, **kwargs)
    finally:
        del os.environ[_FORCE_GQA]


_FORCE_GQA = "TRANSFORMERS_SDPA_FORCE_GQA"  # read by transformers' sdpa_attention_forward on every call


def _is_grouped_sdpa(module) -> bool:
    config = getattr(module, "config", None)
    return (
        getattr(module, "num_key_value_groups", 1) > 1
        and getattr(config, "_attn_implementation", None) == "sdpa"
        and all(hasattr(module, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
    )


def _is_rms_norm(module) -> bool:
    return (
        type(module).__name__.endswith("RMSNorm") and hasattr(module, "weight") and hasattr(module, "variance_epsilon")
    )


def _is_swiglu(module) -> bool:
    import torch

    parts = ("gate_proj", "up_proj", "down_proj")
    act = getattr(module, "act_fn", None)
    silu = isinstance(act, torch.nn.SiLU) or type(act).__name__ == "SiLUActivation"  # transformers' own class
    return all(hasattr(module, n) for n in parts) and silu


def _same_as_own_forward(module, lean_forward, width: int, weight, rtol: float, atol: float) -> bool:
    """`lean_forward` against the module's own forward on a random input of `width` features
    (dropout off, the module in eval mode): a module named like an RMSNorm or a SwiGLU MLP that
    computes something else (Gemma's 1 + weight norm) is left alone. `atol` is relative to the
    largest output."""
    import torch

    was = module.training
    module.eval()
    try:
        x = torch.randn(2, 3, width, generator=torch.Generator().manual_seed(0)).to(weight)
        with torch.no_grad():
            want = type(module).forward(module, x)
        with torch.enable_grad():
            got = lean_forward(module, x)
        return bool(torch.allclose(got, want, rtol=rtol, atol=atol * float(want.abs().max()) + 1e-6))
    finally:
        module.train(was)


def _norm_matches(norm) -> bool:
    return _same_as_own_forward(norm, _norm_forward, norm.weight.shape[0], norm.weight, 1e-4, 1e-5)


def _mlp_matches(mlp) -> bool:
    weight = mlp.gate_proj.weight if hasattr(mlp.gate_proj, "weight") else mlp.gate_proj.base_layer.weight
    return _same_as_own_forward(mlp, _mlp_forward, weight.shape[1], weight, 1e-3, 1e-4)


def enable(model, base_dtype=None, recompute_mlp: bool = False) -> dict:
    """Route `model`'s LoRA projections, SwiGLU MLPs and RMSNorms through the lean functions (from
    now on, for calls with gradients), and grouped-query attention through SDPA's own grouping;
    `base_dtype` (torch.bfloat16): the frozen base weights' matmuls in it; `recompute_mlp`: each MLP
    keeps only its input and computes gate and up again in the backward pass. The counts of modules
    routed: {"linear": n, "mlp": m, "norm": k, "attention": a}."""
    import torch

    counts = {"linear": 0, "mlp": 0, "norm": 0, "attention": 0}
    for module in model.modules():
        if _is_grouped_sdpa(module):
            module.forward = MethodType(_attention_forward, module)
            counts["attention"] += 1
        elif _is_rms_norm(module) and _norm_matches(module):
            module.forward = MethodType(_norm_forward, module)
            counts["norm"] += 1
        elif _is_lora_linear(module) and projection(module) is not None:
            module.forward = MethodType(_linear_forward, module)
            counts["linear"] += 1
        elif _is_swiglu(module):
            projs = [projection(getattr(module, n)) for n in ("gate_proj", "up_proj", "down_proj")]
            if None not in projs and any(p.lora_a is not None for p in projs) and _mlp_matches(module):
                module.forward = MethodType(_mlp_forward, module)
                module._lean_recompute = recompute_mlp
                counts["mlp"] += 1
    if base_dtype is not None:  # after the checks above, which compare in the model's own dtype
        for module in model.modules():
            if _is_lora_linear(module) or type(module) is torch.nn.Linear:
                module._lean_base_dtype = base_dtype
    return counts


def disable(model) -> None:
    """Undo `enable`: every module computes with its own forward again."""
    for module in model.modules():
        if getattr(module.forward, "__func__", None) in (
            _linear_forward,
            _mlp_forward,
            _norm_forward,
            _attention_forward,
        ):
            del module.forward
        vars(module).pop("_lean_base_dtype", None), vars(module).pop("_lean_recompute", None)
