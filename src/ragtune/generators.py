"""Generators: chat messages in, text out, batch first."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from .devices import auto_dtype, cpu_has_native_bf16, resolve_device  # noqa: F401 (cpu_has_native_bf16: re-exported)
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
    if dtype == "auto":
        dtype = auto_dtype(device)
    return getattr(torch, dtype)


def _run_name(adapter: Path) -> str:
    """A fine-tuning run's name, whether given its folder or the weights inside it (names key
    per-generator state such as an index's calibrated gates)."""
    return adapter.parent.name if adapter.name in ("adapter", "model") and adapter.parent.name else adapter.name


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
    GPU, else MPS, else the CPU). float32 by default on a CPU, bfloat16 on a GPU that has it;
    `dtype="auto"` also uses bfloat16 where the CPU has it natively (faster, outputs may differ slightly)."""

    backend = "transformers"

    def __init__(
        self,
        model: str,
        adapter: str | Path | None = None,
        batch_size: int = 8,
        dtype: str = "float32",
        device: str | None = None,  # None: $RAGTUNE_DEVICE (`ragtune --device`), else auto
    ):
        self.name = model if adapter is None else f"{model}+{_run_name(Path(adapter))}"
        self.model_name = model
        self.adapter = adapter
        self.batch_size = batch_size
        torch_dtype(dtype)  # a bad name fails here, not at the first answer
        self.device = resolve_device(device)
        # float32 on a GPU wastes it: the default dtype means "the device's best" there.
        self.dtype = "auto" if dtype == "float32" and self.device.startswith("cuda") else dtype
        self._model = None
        self._tokenizer = None
        self._lock = threading.Lock()  # generate() mutates no state, but one forward at a time keeps memory flat

    @classmethod
    def from_loaded(cls, model, tokenizer, name: str = "in-memory") -> TransformersGenerator:
        """Wrap a model already in memory (e.g. right after training)."""
        gen = cls(name)
        gen._model, gen._tokenizer = model, tokenizer
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
        """`score` for many prompts at once: the prompts go through the model as one left-padded
        batch (position ids count real tokens only, so each row reads as it would alone), then
        every prompt's continuations as one batch over the shared cache. Prompts are taken in
        groups of at most `max_rows` continuations (memory stays flat), shortest first (less padding)."""
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
        groups: list[list[int]] = []
        rows = 0
        for i in sorted(todo, key=lambda i: len(prompt_ids[i])):
            if groups and rows + len(cont_ids[i]) <= max_rows:
                groups[-1].append(i)
                rows += len(cont_ids[i])
            else:
                groups.append([i])
                rows = len(cont_ids[i])
        was_training = model.training
        model.eval()
        try:
            with self._lock, torch.inference_mode():
                for group in groups:
                    scores = self._score_group([prompt_ids[i] for i in group], [cont_ids[i] for i in group])
                    for i, s in zip(group, scores):
                        out[i] = s
        finally:
            model.train(was_training)
        return out

    def _score_group(self, prompts: list[list[int]], continuations: list[list[list[int]]]) -> list[list[float]]:
        """Token ids in, log-likelihoods out (see `score_batch`); the caller holds the lock."""
        import torch

        model, pad, device = self.model, self.tokenizer.pad_token_id, self.model.device
        width = max(map(len, prompts))
        x = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros(len(prompts), width, dtype=torch.long)
        for b, ids in enumerate(prompts):  # left padding: every prompt ends at the right edge
            x[b, width - len(ids) :] = torch.tensor(ids)
            mask[b, width - len(ids) :] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(
            x.to(device), attention_mask=mask.to(device), position_ids=pos.to(device), use_cache=True, logits_to_keep=1
        )
        first = torch.log_softmax(out.logits[:, -1].float(), -1).cpu()
        named = "cache" in out  # transformers >= 5.2 names it `cache`, earlier `past_key_values`
        cache = out["cache"] if named else out.past_key_values
        rows = [(b, seq) for b, seqs in enumerate(continuations) for seq in seqs]
        owner = torch.tensor([b for b, _ in rows])
        cache.reorder_cache(owner.to(device))  # one copy of its prompt's cache per continuation
        cwidth = max(len(seq) for _, seq in rows)
        cx = torch.full((len(rows), cwidth), pad, dtype=torch.long)
        cmask = torch.zeros(len(rows), width + cwidth, dtype=torch.long)
        cmask[:, :width] = mask[owner]
        for r, (_, seq) in enumerate(rows):  # right padding: the continuations start where their prompt ends
            cx[r, : len(seq)] = torch.tensor(seq)
            cmask[r, width : width + len(seq)] = 1
        cpos = torch.tensor([len(prompts[b]) for b, _ in rows])[:, None] + torch.arange(cwidth)
        logits = model(
            cx.to(device),
            attention_mask=cmask.to(device),
            position_ids=cpos.to(device),
            **{"cache" if named else "past_key_values": cache},
        ).logits.float()
        # log-softmax only where it is read: the logit of the next token minus the log-normaliser
        targets = cx[:, 1:].to(device)
        picked = logits[:, :-1].gather(-1, targets[..., None])[..., 0] - torch.logsumexp(logits[:, :-1], -1)
        picked = picked.cpu()
        scores: list[list[float]] = [[] for _ in prompts]
        for r, (b, seq) in enumerate(rows):
            rest = picked[r, : len(seq) - 1].sum().item() if len(seq) > 1 else 0.0
            scores[b].append(first[b, seq[0]].item() + rest)
        return scores

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
