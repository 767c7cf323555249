"""Generators: chat messages in, text out, batch first."""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from .devices import (  # noqa: F401 (cpu_has_native_bf16: re-exported)
    cpu_has_native_bf16,
    dtype_setting,
    resolve_device,
    resolve_dtype,
)
from .errors import ConfigError, ModelNotFoundError
from .models import resolve_generator
from .prompts import Messages


class Generator(Protocol):
    name: str

    def generate(self, prompts: Sequence[Messages], max_new_tokens: int) -> list[str]:
        """One completion per chat prompt, greedy."""

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def render(self, prompt: Messages) -> str:
        """The exact text the model reads for a prompt."""

    def stream(self, prompt: Messages, max_new_tokens: int) -> Iterator[str]:
        """The completion of one prompt, piece by piece as the model writes it."""


DTYPES = ("float32", "bfloat16", "float16", "auto")


def torch_dtype(dtype: str, device: str = "cpu"):
    """`float32`, `bfloat16`, `float16`, or `auto`: bfloat16 where `device` has it natively
    (a recent GPU, a CPU with AVX512-BF16/AMX), else float32 (float16 on older GPUs)."""
    import torch

    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r}: use one of {', '.join(DTYPES)}")
    return getattr(torch, resolve_dtype(dtype, device))


def _run_name(adapter: Path) -> str:
    """A fine-tuning run's name, whether given its folder or the weights inside it (names key
    per-generator state such as an index's calibrated gates)."""
    return adapter.parent.name if adapter.name in ("adapter", "model") and adapter.parent.name else adapter.name


@functools.lru_cache(maxsize=64)
def adapter_mode(adapter: str | Path | None) -> str:
    """The fine-tuning mode (`FinetuneConfig.mode`) an adapter was trained in: "reader" adapters
    answer by picking a span of the sources, as they were trained to; "" for no adapter or a
    folder without ragtune's manifest."""
    if adapter is None:
        return ""
    from .finetune.run import RunFolder

    try:
        return str(RunFolder.open(adapter).config.get("mode", ""))
    except (OSError, ValueError, ModelNotFoundError):
        return ""


def model_sources(model: str, adapter: str | Path | None) -> tuple[Path, Path | None]:
    """(the model folder to load, the PEFT adapter folder to merge into it or None) for a base
    model and a fine-tuning run: a fine-tuned whole model (top-layers / full) replaces the base."""
    if adapter is None:
        return resolve_generator(model), None
    from .finetune.run import RunFolder

    weights = RunFolder.open(adapter).weights
    if (weights / "config.json").exists():
        return weights, None
    if not (weights / "adapter_config.json").exists():
        raise ModelNotFoundError(f"{str(weights)!r} holds no adapter (adapter_config.json) or model (config.json)")
    return resolve_generator(model), weights


class ChatModel:
    """What every local chat model shares: a tokenizer and a model loaded together on first use
    (`_load` sets `_tokenizer` and `_model`), the chat template and token counts."""

    _tokenizer = None
    _model = None

    def _load(self) -> None:
        raise NotImplementedError

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._load()
        return self._tokenizer

    @property
    def model(self):
        if self._model is None:
            self._load()
        return self._model

    def render(self, prompt: Messages) -> str:
        return self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]]


class TransformersGenerator(ChatModel):
    """A causal LM through transformers, optionally with a PEFT adapter, on `device` (auto: a CUDA
    GPU, else MPS, else the CPU). `dtype` None means $RAGTUNE_DTYPE (`ragtune --dtype`), else `auto`:
    bfloat16 on a GPU that has it and on a CPU that computes it natively (AVX512-BF16 or AMX), float32
    elsewhere. On this AMX CPU bfloat16 reads the reader's prompts 2x faster at batch 1 and 4x at
    batch 16, with the same answer on 199 of 200 demo questions (docs/generation-backends.md);
    `dtype="float32"` is the reference the fast backends are checked against."""

    backend = "transformers"

    def __init__(
        self,
        model: str,
        adapter: str | Path | None = None,
        batch_size: int = 8,
        dtype: str | None = None,  # None: $RAGTUNE_DTYPE (`ragtune --dtype`), else auto
        device: str | None = None,  # None: $RAGTUNE_DEVICE (`ragtune --device`), else auto
    ):
        self.name = model if adapter is None else f"{model}+{_run_name(Path(adapter))}"
        self.model_name = model
        self.adapter = adapter
        self.batch_size = batch_size
        dtype = dtype_setting(dtype)
        torch_dtype(dtype)  # a bad name fails here, not at the first answer
        self.device = resolve_device(device)
        self.dtype = dtype
        self._model = None
        self._tokenizer = None
        self._lock = threading.Lock()  # generate() mutates no state, but one forward at a time keeps memory flat

    @property
    def precision(self) -> str:
        """The dtype the weights run in here (what `auto` resolves to on this device)."""
        return resolve_dtype(self.dtype, self.device)

    @classmethod
    def from_loaded(cls, model, tokenizer, name: str = "in-memory") -> TransformersGenerator:
        """Wrap a model already in memory (e.g. right after training)."""
        gen = cls(name)
        gen._model, gen._tokenizer = model, tokenizer
        gen.dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        return gen

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path, adapter = model_sources(self.model_name, self.adapter)
        tok = AutoTokenizer.from_pretrained(str(path))
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model = AutoModelForCausalLM.from_pretrained(str(path))
        if adapter is not None:
            from peft import PeftModel

            # Folded into the weights: the same outputs, ~12% faster on a CPU (no separate LoRA matmuls).
            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        model = model.to(device=self.device, dtype=torch_dtype(self.dtype, self.device))
        model.eval()
        self._tokenizer, self._model = tok, model

    def generate(self, prompts: Sequence[Messages], max_new_tokens: int = 48) -> list[str]:
        import torch

        model, tok = self.model, self.tokenizer
        out: list[str] = []
        tok.padding_side = "left"  # generation continues from the right edge
        was_training = model.training
        model.eval()
        with self._lock, torch.inference_mode():
            for start in range(0, len(prompts), self.batch_size):
                texts = [self.render(p) for p in prompts[start : start + self.batch_size]]
                enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
                gen = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=tok.eos_token_id,
                )
                new = gen[:, enc["input_ids"].shape[1] :]
                out.extend(t.strip() for t in tok.batch_decode(new, skip_special_tokens=True))
        model.train(was_training)
        return out

    def score(self, prompt: Messages, continuations: Sequence[str]) -> list[float]:
        """Log-likelihood of each continuation as the whole reply to `prompt` (its tokens and the
        end of the turn, so a span cut short scores low). The prompt is read once; its cache is
        shared by the continuations, which go through the model as one batch."""
        return self.score_batch([prompt], [continuations])[0]

    def score_batch(
        self, prompts: Sequence[Messages], continuations: Sequence[Sequence[str]], max_rows: int = 64
    ) -> list[list[float]]:
        """`score` for many prompts at once, in one forward pass per group of prompts. A prompt and
        its continuations are one row: the prompt, then each continuation (its last token needs no
        input), every continuation seeing the prompt and its own earlier tokens only (a tree
        attention mask, positions as if it followed the prompt alone). So the prompt is read once,
        nothing is copied per continuation, continuations are not padded to the longest, and the
        vocabulary is scored only where a continuation's next token is read. Prompts that share most
        of their tokens (the span reader's question and content-free prompts over one sentence) share
        a row too: their common prefix is read once and each prompt's rest branches off it. Rows are
        left-padded in groups of at most `max_rows` continuations (memory stays flat), shortest first
        (less padding)."""
        import torch

        if len(prompts) != len(continuations):
            raise ValueError(f"score_batch: {len(prompts)} prompts but {len(continuations)} continuation lists")
        out: list[list[float]] = [[] for _ in prompts]
        todo = [i for i, c in enumerate(continuations) if c]
        if not todo:
            return out
        model, tok = self.model, self.tokenizer
        end = tok.eos_token_id
        prompt_ids = dict(
            zip(todo, tok([self.render(prompts[i]) for i in todo], add_special_tokens=False)["input_ids"])
        )
        cont_ids = {i: [tok(c, add_special_tokens=False)["input_ids"] + [end] for c in continuations[i]] for i in todo}
        rows_of = {i: len(cont_ids[i]) for i in todo}
        units = _shared_prefixes(todo, prompt_ids, rows_of, max_rows)
        size = [
            head + sum(len(prompt_ids[i]) - head + sum(len(c) - 1 for c in cont_ids[i]) for i in members)
            for head, members in units
        ]
        groups: list[list[int]] = []
        rows = 0
        for u in sorted(range(len(units)), key=size.__getitem__):
            n = sum(rows_of[i] for i in units[u][1])
            if groups and rows + n <= max_rows:
                groups[-1].append(u)
                rows += n
            else:
                groups.append([u])
                rows = n
        # The part every prompt shares (the system message and the template's head) is read once for
        # the whole call and its keys and values lent to every row; never a prompt's last token. With
        # fewer than 3 rows the extra pass costs more than it saves (benchmarks/score_prefix.py).
        shared = _common_prefix([prompt_ids[i] for i in todo]) if len(units) >= 3 else 0
        if shared < MIN_SHARED_PREFIX or getattr(model.config, "sliding_window", None):
            shared = 0
        was_training = model.training
        model.eval()
        try:
            with self._lock, torch.inference_mode():
                past = None
                if shared:
                    head = torch.tensor([prompt_ids[todo[0]][:shared]], device=model.device)
                    read = model(head, use_cache=True)
                    past = read.cache if hasattr(read, "cache") else read.past_key_values
                for group in groups:
                    trees = [
                        (prompt_ids[units[u][1][0]][shared : units[u][0]],
                         [(prompt_ids[i][units[u][0] :], cont_ids[i]) for i in units[u][1]])
                        for u in group
                    ]  # fmt: skip
                    scores = iter(self._score_group(trees, past, shared))
                    for u in group:
                        for i in units[u][1]:
                            out[i] = next(scores)
        finally:
            model.train(was_training)
        return out

    def _score_group(
        self, trees: list[tuple[list[int], list[tuple[list[int], list[list[int]]]]]], past=None, shared: int = 0
    ) -> list[list[float]]:
        """Token ids in, log-likelihoods out, in one forward pass (see `score_batch`): one row per
        (shared prefix, [(the rest of a prompt, its continuations)]); the scores of every prompt of
        every row in order. `past`: the cache of the `shared` tokens that come before every row (seen
        by all, positions counted after them). The caller holds the lock."""
        import copy

        import torch

        model, pad, device = self.model, self.tokenizer.pad_token_id, self.model.device
        # Per row: its tokens and positions; the tree is laid out at the row's right edge.
        seqs = [
            head + [t for rest, cs in branches for t in rest + [t for c in cs for t in c[:-1]]]
            for head, branches in trees
        ]
        width = max(map(len, seqs))
        x = torch.full((len(seqs), width), pad, dtype=torch.long)
        pos = torch.zeros(len(seqs), width, dtype=torch.long)
        seen = torch.zeros(len(seqs), width, width, dtype=torch.bool)
        targets: list[tuple[int, int, int, int]] = []  # (row, logit column, next token, continuation number)
        n = 0
        for b, ((head, branches), seq) in enumerate(zip(trees, seqs)):
            start = width - len(seq)
            x[b, start:] = torch.tensor(seq)
            seen[b, range(start), range(start)] = True  # padding sees itself only (a row seeing nothing is NaN)
            at = start + len(head)
            seen[b, start:at, start:at] = torch.ones(len(head), len(head), dtype=torch.bool).tril()
            pos[b, start:at] = torch.arange(shared, shared + len(head))
            for rest, cs in branches:
                # the prompt's rest sees the prefix and itself
                r = len(rest)
                seen[b, at : at + r, start : start + len(head)] = True
                seen[b, at : at + r, at : at + r] = torch.ones(r, r, dtype=torch.bool).tril()
                pos[b, at : at + r] = torch.arange(shared + len(head), shared + len(head) + r)
                last = at + r - 1  # the prompt's last token (never in the prefix: `_shared_prefixes`)
                tail = (slice(start, start + len(head)), slice(at, at + r))  # what a continuation sees of the prompt
                at += r
                length = shared + len(head) + r
                for c in cs:
                    # the logit at the prompt's last token scores c[0]; at c[j], c[j + 1]
                    targets += [(b, last if j == 0 else at + j - 1, t, n) for j, t in enumerate(c)]
                    m = len(c) - 1
                    for cols in tail:
                        seen[b, at : at + m, cols] = True
                    seen[b, at : at + m, at : at + m] = torch.ones(m, m, dtype=torch.bool).tril()
                    pos[b, at : at + m] = torch.arange(length, length + m)
                    at += m
                    n += 1
        keep = width - min(col for _, col, _, _ in targets)  # the positions whose logits are read
        targets = [(b, col - (width - keep), t, k) for b, col, t, k in targets]
        # additive form: every attention implementation reads it (sdpa also takes booleans, eager does not)
        dtype = next(model.parameters()).dtype
        if past is not None:  # every row sees the shared tokens (padding too: a row seeing nothing is NaN)
            seen = torch.cat([torch.ones(len(seqs), width, shared, dtype=torch.bool), seen], -1)
            past = copy.deepcopy(past)
            past.batch_repeat_interleave(len(seqs))
        mask = torch.zeros(seen.shape, dtype=dtype).masked_fill_(~seen, torch.finfo(dtype).min)[:, None]
        mask = self._windowed(mask, pos)  # (no shared part on a sliding-window model: score_batch)
        lent = {_cache_argument(type(model)): past} if past is not None else {}
        logits = model(
            x.to(device), attention_mask=_to(mask, device), position_ids=pos.to(device), use_cache=past is not None,
            logits_to_keep=keep, **lent,
        ).logits.float()  # fmt: skip
        row, col, token, owner = (torch.tensor(v, device=logits.device) for v in zip(*targets))
        picked = logits[row, col, token] - torch.logsumexp(logits[row, col], -1)
        totals = torch.zeros(n, dtype=torch.float64, device=logits.device).index_add_(0, owner, picked.double())
        totals = totals.tolist()
        scores: list[list[float]] = []
        for _, branches in trees:
            for _, cs in branches:
                scores.append(totals[: len(cs)])
                totals = totals[len(cs) :]
        return scores

    def _windowed(self, mask, pos):
        """The attention mask for a model with sliding-window layers: those layers also hide keys
        `sliding_window` or more positions back (as the model's own masks would); others get `mask`."""
        import torch

        config = self.model.config
        window = getattr(config, "sliding_window", None)
        if not window or int(pos.max()) < window:
            return mask
        far = (pos[:, :, None] - pos[:, None, :]) >= window
        narrow = mask.masked_fill(far[:, None], torch.finfo(mask.dtype).min)
        types = getattr(config, "layer_types", None)
        if types is None:
            return narrow
        return {"full_attention": mask, "sliding_attention": narrow}

    def stream(self, prompt: Messages, max_new_tokens: int = 48) -> Iterator[str]:
        """Yield the completion of one prompt piece by piece as the model writes it."""
        import torch
        from transformers import TextIteratorStreamer

        model, tok = self.model, self.tokenizer
        enc = tok([self.render(prompt)], return_tensors="pt", add_special_tokens=False).to(model.device)
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)

        def work():
            with self._lock, torch.inference_mode():
                model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=tok.eos_token_id,
                    streamer=streamer,
                )

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        yield from (piece for piece in streamer if piece)
        thread.join()


# Below this many tokens common to every prompt of a `score_batch` call, reading them once saves less
# than copying their cache to every row costs.
MIN_SHARED_PREFIX = 8


@functools.lru_cache(maxsize=8)
def _cache_argument(model_class) -> str:
    """The forward's name for a cache of earlier tokens: `cache` in recent transformers 5 releases,
    `past_key_values` before (deprecated there, to be removed in 5.40)."""
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def _common_prefix(seqs: list[list[int]]) -> int:
    """How many leading tokens every sequence shares, leaving each at least one of its own."""
    first, n = seqs[0], min(map(len, seqs)) - 1
    return next((k for k in range(n) if any(s[k] != first[k] for s in seqs)), max(n, 0))


def _shared_prefixes(
    todo: list[int], prompt_ids: dict[int, list[int]], rows_of: dict[int, int], max_rows: int
) -> list[tuple[int, list[int]]]:
    """Prompts that share most of their tokens, as (length of the common prefix, the prompts): in
    token order, a prompt joins the ones before it when their common prefix is at least half of each
    of them (a short prompt sharing only the system message would shrink the shared part for all)
    and the prompts' continuations stay within `max_rows`. The common prefix is never the whole of a
    prompt, so every prompt's last token is its own."""
    units: list[tuple[int, list[int]]] = []
    for i in sorted(todo, key=prompt_ids.__getitem__):
        ids = prompt_ids[i]
        if units:
            head, members = units[-1]
            common = min(head, _common_prefix([prompt_ids[members[0]], ids]))
            longest = max(len(ids), *(len(prompt_ids[j]) for j in members))
            if 2 * common >= longest and sum(rows_of[j] for j in members) + rows_of[i] <= max_rows:
                units[-1] = (common, members + [i])
                continue
        units.append((len(ids) - 1, [i]))
    return units


def _to(mask, device):
    """A mask, or a dict of masks per layer type, on `device`."""
    return {k: v.to(device) for k, v in mask.items()} if isinstance(mask, dict) else mask.to(device)
