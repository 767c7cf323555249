"""Fast CPU generators: the model converted once to CTranslate2 or onnxruntime-genai and run there.

Same protocol as `TransformersGenerator` (name, generate, stream, score, count_tokens, render). On a
2-core laptop CPU, at full precision with the same greedy answers: onnxruntime-genai decodes ~2.4x
as fast as transformers fp32 (~2.7x with prompt-lookup speculative decoding, its default),
CTranslate2 ~1.4x with half the time to first token; their int8/int4 builds are faster and answer
differently (docs/generation-backends.md). A fine-tuned LoRA adapter is
merged into its base first (PEFT `merge_and_unload`); the converted folder is cached in
`cache_dir()/ct2` or `cache_dir()/ort`, keyed by the source model folder, the adapter's content hash
and the quantisation, and written atomically (a temp folder renamed into place)::

    gen = make_generator("smollm2-135m-instruct@ort")          # or make_generator(name, backend="ort")
    gen.generate([[{"role": "user", "content": "Hi"}]], max_new_tokens=16)

Needs the optional dependency `ctranslate2` or `onnxruntime-genai` (+ `onnx`, `onnx-ir` for its model
builder): pip wheels, no compiler.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, ModelNotFoundError
from .generators import ChatModel, _run_name, model_sources
from .models import cache_dir
from .prompts import Messages

# float32: greedy answers as transformers fp32 (same weights, same arithmetic up to rounding);
# int8 / int8_float32: int8 weights, 1.9x transformers' decode here, but most answers change (measured).
QUANTISATIONS = ("float32", "int8", "int8_float32")
BACKENDS = ("transformers", "ct2", "ort", "llama")


def available() -> bool:
    """Whether CTranslate2 is installed (the optional extra)."""
    return importlib.util.find_spec("ctranslate2") is not None


def _folder_key(folder: Path) -> str:
    """A folder's identity for a cache key: its path and each file's name, size and mtime
    (the bundled base model folder is itself content-keyed, so this is cheap and exact enough)."""
    h = hashlib.sha256(str(folder.resolve()).encode())
    for f in sorted(p for p in folder.iterdir() if p.is_file()):
        st = f.stat()
        h.update(f"|{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()


def adapter_hash(adapter: Path) -> str:
    """The content hash of a PEFT adapter folder (its config and weights), so a retrained adapter
    written to the same path is converted again."""
    h = hashlib.sha256()
    for f in sorted(p for p in adapter.iterdir() if p.is_file() and p.name.startswith("adapter_")):
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _cached_build(kind: str, model: str, adapter, variant: str, version: str, marker: str, build) -> tuple[Path, Path]:
    """(the folder holding the tokenizer, `cache_dir()/kind/...`: `build(source folder, out folder)`
    run once for `model` + `adapter` at `variant`, keyed by the source folder, the adapter's content
    hash, the variant and the backend's `version`). A PEFT adapter is merged into the float32 base
    first. Built in a temporary folder and renamed into place (atomic); `marker` names the file
    that says a build is complete."""
    source, peft = model_sources(model, adapter)
    parts = [_folder_key(source), adapter_hash(peft) if peft else "", variant, version]
    key = hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
    target = cache_dir() / kind / f"{source.name}-{variant}-{key}"
    if (target / marker).exists():
        return source, target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        src = source
        if peft is not None:
            src = tmp / "merged"
            _merge(source, peft, src)
        build(src, tmp / "out")
        os.replace(tmp / "out", target)  # atomic: a half-written cache is never seen
    except OSError:
        if not (target / marker).exists():  # another process won the race: use its copy
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return source, target


def converted(model: str, adapter: str | Path | None = None, quantisation: str = "float32") -> tuple[Path, Path]:
    """(the folder holding the tokenizer, the CTranslate2 folder for `model` + `adapter` at
    `quantisation`), converted once and cached."""
    if quantisation not in QUANTISATIONS:
        raise ConfigError(f"quantisation={quantisation!r}: use one of {', '.join(QUANTISATIONS)}")
    import ctranslate2

    def build(src: Path, out: Path) -> None:
        converter = ctranslate2.converters.TransformersConverter(str(src), low_cpu_mem_usage=True)
        converter.convert(str(out), quantization=quantisation, force=True)

    return _cached_build("ct2", model, adapter, quantisation, ctranslate2.__version__, "model.bin", build)


def _merge(base: Path, adapter: Path, out: Path) -> None:
    """Fold a PEFT adapter into float32 base weights (the same weights TransformersGenerator runs)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype="float32")
    model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(out)


def backend_name(model: str, adapter, tag: str, variant: str, default: str) -> str:
    """`MODEL@TAG` (`MODEL@TAG-VARIANT` off the default variant), `+RUN` with an adapter."""
    base = f"{model}@{tag}" if variant == default else f"{model}@{tag}-{variant}"
    return base if adapter is None else f"{base}+{_run_name(Path(adapter))}"


def check_speculation(draft_tokens: int, ngram: int, min_ngram: int) -> None:
    """The prompt-lookup settings of `prompt_lookup_decode`, or a ConfigError naming the bad one."""
    if not 0 <= draft_tokens <= 64:
        raise ConfigError(f"draft_tokens={draft_tokens!r}: use 0 (no speculation) to 64")
    if not 1 <= min_ngram <= ngram <= 8:
        raise ConfigError(f"ngram={ngram!r}, min_ngram={min_ngram!r}: use 1 <= min_ngram <= ngram <= 8")


def log_softmax(logits):
    """Log-probabilities over the last axis, in float64 (numpy)."""
    import numpy as np

    x = np.asarray(logits, dtype=np.float64)
    return x - np.logaddexp.reduce(x, axis=-1, keepdims=True)


class _TokenStream(ChatModel):
    """A generator that decodes one token at a time (`token_ids`): completions and streams from it."""

    def token_ids(self, prompt: Messages, max_new_tokens: int = 48) -> Iterator[int]:
        raise NotImplementedError

    def generate(self, prompts: Sequence[Messages], max_new_tokens: int = 48) -> list[str]:
        tok = self.tokenizer
        return [tok.decode(list(self.token_ids(p, max_new_tokens)), skip_special_tokens=True).strip() for p in prompts]

    def stream(self, prompt: Messages, max_new_tokens: int = 48) -> Iterator[str]:
        """The completion of one prompt piece by piece (whole characters only: a piece is emitted
        once the text decoded so far no longer ends in a partial UTF-8 sequence)."""
        tok, ids, sent = self.tokenizer, [], ""
        for token_id in self.token_ids(prompt, max_new_tokens):
            ids.append(token_id)
            text = tok.decode(ids, skip_special_tokens=True)
            if len(text) > len(sent) and not text.endswith("\ufffd"):
                yield text[len(sent) :]
                sent = text


class CT2Generator(_TokenStream):
    """A causal LM through CTranslate2 on the CPU, optionally with a fine-tuned adapter merged in.
    It generates one prompt at a time: CTranslate2 batches of unequal prompt lengths decode the tail
    of the longer ones token by token, slower than one by one on a CPU.

    `quantisation="float32"` (default) keeps transformers' greedy answers; `threads=0` uses every core."""

    backend = "ctranslate2"
    device = "cpu"

    def __init__(
        self,
        model: str,
        adapter: str | Path | None = None,
        quantisation: str = "float32",
        threads: int = 0,
        batch_size: int = 8,
    ):
        if quantisation not in QUANTISATIONS:
            raise ConfigError(f"quantisation={quantisation!r}: use one of {', '.join(QUANTISATIONS)}")
        if not available():
            raise ModelNotFoundError("the ct2 backend needs CTranslate2: pip install 'ctranslate2>=4.8'")
        self.name = backend_name(model, adapter, "ct2", quantisation, "float32")
        self.model_name = model
        self.adapter = adapter
        self.quantisation = quantisation
        self.threads = threads
        self.batch_size = batch_size
        self._lock = threading.Lock()

    def _load(self) -> None:
        import ctranslate2
        from transformers import AutoTokenizer

        source, folder = converted(self.model_name, self.adapter, self.quantisation)
        tok = AutoTokenizer.from_pretrained(str(source))
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        self._model = ctranslate2.Generator(str(folder), device="cpu", intra_threads=self.threads)
        self._tokenizer = tok

    generator = ChatModel.model  # the `ctranslate2.Generator` (converted if need be, loaded on first use)

    def _tokens(self, text: str) -> list[str]:
        tok = self.tokenizer
        return tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])

    def token_ids(self, prompt: Messages, max_new_tokens: int = 48) -> Iterator[int]:
        """The greedy completion's token ids, one by one as they are decoded (the end token left out)."""
        gen, end = self.generator, self.tokenizer.eos_token
        with self._lock:
            for step in gen.generate_tokens(
                self._tokens(self.render(prompt)), max_length=max_new_tokens, sampling_topk=1, end_token=end
            ):
                if step.token == end:
                    break
                yield step.token_id

    def score(self, prompt: Messages, continuations: Sequence[str]) -> list[float]:
        """Log-likelihood of each continuation as the whole reply to `prompt` (its tokens and the end
        of the turn), as `TransformersGenerator.score`."""
        return self.score_batch([prompt], [continuations])[0]

    def score_batch(self, prompts: Sequence[Messages], continuations: Sequence[Sequence[str]]) -> list[list[float]]:
        """`score` for many prompts in one CTranslate2 call. Each row re-reads its prompt (no prefix
        cache in CTranslate2's scoring); the span reader's prompts are one sentence, so this is cheap."""
        if len(prompts) != len(continuations):
            raise ValueError(f"score_batch: {len(prompts)} prompts but {len(continuations)} continuation lists")
        tok, gen = self.tokenizer, self.generator
        heads = [self._tokens(self.render(p)) if c else [] for p, c in zip(prompts, continuations)]
        rows = [(b, heads[b] + self._tokens(c) + [tok.eos_token]) for b, cs in enumerate(continuations) for c in cs]
        if not rows:
            return [[] for _ in prompts]
        with self._lock:
            results = gen.score_batch([r for _, r in rows], max_batch_size=self.batch_size, max_input_length=0)
        out: list[list[float]] = [[] for _ in prompts]
        for (b, _), result in zip(rows, results):
            # log_probs[j] is log p(row[j + 1] | row[: j + 1]): the reply starts at index len(head) - 1.
            out[b].append(float(sum(result.log_probs[len(heads[b]) - 1 :])))
        return out


# -- onnxruntime-genai ------------------------------------------------------------------------------

ORT_PRECISIONS = ("fp32", "int8", "int4")


def ort_converted(model: str, adapter: str | Path | None = None, precision: str = "fp32") -> tuple[Path, Path]:
    """(the folder holding the tokenizer, the onnxruntime-genai folder built by its model builder
    for `model` + `adapter` at `precision`), built once and cached in `cache_dir()/ort`."""
    if precision not in ORT_PRECISIONS:
        raise ConfigError(f"precision={precision!r}: use one of {', '.join(ORT_PRECISIONS)}")
    import subprocess
    import sys

    import onnxruntime_genai

    def build(src: Path, out: Path) -> None:
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(src), "-o", str(out)]
        cmd += ["-p", precision, "-e", "cpu", "-c", str(out.parent / "hf")]
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if done.returncode != 0:
            raise ConfigError(f"onnxruntime-genai could not build {src}: {done.stderr.strip()[-500:]}")

    return _cached_build("ort", model, adapter, precision, onnxruntime_genai.__version__, "genai_config.json", build)


class PromptLookup:
    """Draft tokens for prompt-lookup decoding: the tokens that followed the latest earlier occurrence
    of the sequence's last `n` tokens (n = `max_ngram` down to `min_ngram`), found in the prompt or in
    the answer so far. RAG answers copy spans of their sources, so the drafts are often right.

        lookup = PromptLookup([5, 6, 7, 8, 9, 5, 6])
        lookup.propose(2)  # -> [7, 8]
    """

    def __init__(self, tokens: Sequence[int], max_ngram: int = 3, min_ngram: int = 1):
        self.tokens = list(tokens)
        self.sizes = range(max_ngram, min_ngram - 1, -1)
        self._latest: dict[tuple[int, ...], int] = {}  # n-gram -> the position right after its latest occurrence
        self._indexed = 1  # n-grams ending before this position are in `_latest`

    def extend(self, tokens: Sequence[int]) -> None:
        self.tokens.extend(tokens)

    def propose(self, k: int) -> list[int]:
        """Up to `k` draft tokens to follow the sequence (none if its tail occurs nowhere earlier)."""
        t, end = self.tokens, len(self.tokens)
        for p in range(self._indexed, end):  # the tail itself (ending at `end`) is not indexed: no follower yet
            for n in self.sizes:
                if p >= n:
                    self._latest[tuple(t[p - n : p])] = p
        self._indexed = max(self._indexed, end)
        for n in self.sizes:
            p = self._latest.get(tuple(t[end - n : end])) if end >= n else None
            if p is not None:
                return t[p : p + k]
        return []


@dataclass
class DraftCounts:
    """Speculative decoding's tally: forward passes, draft tokens checked, and those kept."""

    passes: int = 0
    proposed: int = 0
    accepted: int = 0


def prompt_lookup_decode(
    gen,
    prompt: Sequence[int],
    max_new_tokens: int,
    eos: int,
    draft_tokens: int = 3,
    ngram: tuple[int, int] = (3, 2),
    counts: DraftCounts | None = None,
) -> Iterator[int]:
    """Greedy decoding with prompt-lookup drafts, from an onnxruntime-genai `Generator` (or anything
    with its `append_tokens` / `get_logits` / `get_output("logits")` / `rewind_to`) that has read
    `prompt` (the end token left out, at most `max_new_tokens`). `draft_tokens=0`: plain greedy
    decoding, one token a pass.

    Each round appends the last chosen token (`pending`: chosen, not yet read) and up to
    `draft_tokens` drafts (`PromptLookup`, tails of `ngram[0]` down to `ngram[1]` tokens); the logits at
    each appended position give greedy's next pick, so drafts are kept while they equal those picks,
    the pick after the last kept one is the new `pending`, and the generator is rewound to drop what
    was read past the kept tokens. A round that keeps j drafts yields j + 1 tokens for one pass."""
    counts = counts if counts is not None else DraftCounts()
    pending = int(gen.get_logits()[0, -1].argmax())  # only the prompt's last position (all of it: a 78 MB copy)
    lookup, read, made = PromptLookup(prompt, *ngram), len(prompt), 0
    while pending != eos:
        yield pending
        made += 1
        if made >= max_new_tokens:
            return
        lookup.extend([pending])
        drafts = lookup.propose(min(draft_tokens, max_new_tokens - made - 1))  # room for the pick after them
        gen.append_tokens([pending, *drafts])
        picks = gen.get_output("logits")[0].argmax(-1).tolist()
        kept = 0
        while kept < len(drafts) and picks[kept] == drafts[kept]:
            kept += 1
        counts.passes += 1
        counts.proposed += len(drafts)
        counts.accepted += kept
        read += 1 + kept
        if kept < len(drafts):
            gen.rewind_to(read)
        for token in drafts[:kept]:
            if token == eos:
                return
            yield token
            made += 1
        lookup.extend(drafts[:kept])
        pending = picks[kept]


class OrtGenaiGenerator(_TokenStream):
    """A causal LM through onnxruntime-genai on the CPU (fp32: transformers' greedy answers, ~2.4x
    its tokens/s here; int8 ~4.7x, int4 ~6.9x, with different answers), and span scoring from the
    logits of appended tokens.

    `draft_tokens=k` (default 3) decodes speculatively with prompt lookup (`prompt_lookup_decode`): up
    to k tokens copied from where the answer's last `ngram`..`min_ngram` tokens occur in the prompt (or
    the answer) are checked in one forward pass, and those the model would have chosen itself are
    kept, plus its next token: greedy decoding's answer (100/100 demo questions identical), 1.15x the
    decode rate on RAG answers, ~1.4x fewer passes for the question-generation adapter.
    `draft_tokens=0` decodes one token per pass. `reuse_prefix=True` keeps the generator between
    calls and reads only the part of a prompt after the start it shares with the last one."""

    backend = "onnxruntime-genai"
    device = "cpu"

    def __init__(
        self,
        model: str,
        adapter: str | Path | None = None,
        precision: str = "fp32",
        draft_tokens: int = 3,
        ngram: int = 3,
        min_ngram: int = 2,
        reuse_prefix: bool = False,
    ):
        if precision not in ORT_PRECISIONS:
            raise ConfigError(f"precision={precision!r}: use one of {', '.join(ORT_PRECISIONS)}")
        check_speculation(draft_tokens, ngram, min_ngram)
        if importlib.util.find_spec("onnxruntime_genai") is None:
            raise ModelNotFoundError("the ort backend needs onnxruntime-genai: pip install 'onnxruntime-genai>=0.18'")
        self.name = backend_name(model, adapter, "ort", precision, "fp32")
        self.model_name, self.adapter, self.precision = model, adapter, precision
        self.draft_tokens, self.ngram, self.min_ngram = draft_tokens, ngram, min_ngram
        self.drafts = DraftCounts()  # drafts checked and kept over this generator's life
        self.reuse_prefix = reuse_prefix
        self._kept, self._kept_prompt, self._kept_length = None, None, 0  # the generator kept for reuse_prefix
        self._lock = threading.Lock()

    def _load(self) -> None:
        import onnxruntime_genai as og
        from transformers import AutoTokenizer

        source, folder = ort_converted(self.model_name, self.adapter, self.precision)
        self._tokenizer = AutoTokenizer.from_pretrained(str(source))
        self._model = og.Model(str(folder))  # `model`: the onnxruntime_genai.Model
        context = json.loads((folder / "genai_config.json").read_text())["model"].get("context_length", 2048)
        self._kept_length = min(2048, int(context))  # the kept generator's cache: 2048 x 46 KB for SmolLM2

    def token_ids(self, prompt: Messages, max_new_tokens: int = 48) -> Iterator[int]:
        """The greedy completion's token ids, one by one as they are decoded (the end token left out)."""
        tok = self.tokenizer
        ids = tok(self.render(prompt), add_special_tokens=False)["input_ids"]
        if max_new_tokens <= 0:
            return
        with self._lock:
            gen = self._reader(ids, max_new_tokens)
            if self.draft_tokens:
                eos, k, n = tok.eos_token_id, self.draft_tokens, (self.ngram, self.min_ngram)
                yield from prompt_lookup_decode(gen, ids, max_new_tokens, eos, k, n, self.drafts)
                return
            for _ in range(max_new_tokens):
                gen.generate_next_token()
                token = int(gen.get_next_tokens()[0])
                if token == tok.eos_token_id:
                    break
                yield token

    def _reader(self, ids: list[int], max_new_tokens: int):
        """An onnxruntime-genai `Generator` that has read the prompt `ids`, with room for `max_new_tokens`.
        With `reuse_prefix`, the generator of the last call, rewound to the start this prompt shares
        with the last one (ragtune's system message and the chat template's head), so only the rest is
        read; a fresh one if the prompt would not fit its cache."""
        import onnxruntime_genai as og

        def fresh(length: int):
            params = og.GeneratorParams(self.model)
            params.set_search_options(max_length=length, do_sample=False)
            return og.Generator(self.model, params)

        if not self.reuse_prefix or len(ids) + max_new_tokens + 1 > self._kept_length:
            gen = fresh(len(ids) + max_new_tokens + 1)
            gen.append_tokens(ids)
            return gen
        gen, last = self._kept, self._kept_prompt or []
        self._kept_prompt = None  # until the new prompt has been read
        same = 0
        for a, b in zip(last, ids[:-1]):  # at least the last token is read again: its logits pick the first
            if a != b:
                break
            same += 1
        if gen is None or same == 0:
            gen = self._kept = fresh(self._kept_length)
        else:
            gen.rewind_to(same)
        gen.append_tokens(ids[same:])
        self._kept_prompt = ids
        return gen

    def score(self, prompt: Messages, continuations: Sequence[str]) -> list[float]:
        """Log-likelihood of each continuation as the whole reply to `prompt` (its tokens and the end
        of the turn), as `TransformersGenerator.score`: the prompt is read once, and the generator
        rewound to its end before each continuation."""
        import numpy as np
        import onnxruntime_genai as og

        if not continuations:
            return []
        model, tok = self.model, self.tokenizer
        head = tok(self.render(prompt), add_special_tokens=False)["input_ids"]
        rows = [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in continuations]

        scores = []
        with self._lock:
            params = og.GeneratorParams(model)
            params.set_search_options(max_length=len(head) + max(map(len, rows)) + 1, do_sample=False)
            gen = og.Generator(model, params)
            gen.append_tokens(head)
            first = log_softmax(np.asarray(gen.get_output("logits"))[0, -1])
            for row in rows:
                gen.rewind_to(len(head))
                total = first[row[0]]
                if len(row) > 1:
                    gen.append_tokens(row[:-1])
                    rest = log_softmax(np.asarray(gen.get_output("logits"))[0, -(len(row) - 1) :])
                    total += rest[np.arange(len(row) - 1), row[1:]].sum()
                scores.append(float(total))
        return scores
