"""llama.cpp as a generator: the GGUF model run by llama-cpp-python on the CPU.

At float32 (the default) llama.cpp gives transformers' greedy answers (the same weights: the bundled
Q4_1 GGUF de-quantised, the KV cache in float32) and decodes ~3.8x as fast on this 2-core CPU. `f16`
halves the weights (~5x, a few answers change) and `gguf` runs the file as shipped (Q4_1: fastest, about
half the answers change); docs/generation-backends.md has the table. Prompt-lookup drafts
(`draft_tokens=`, exact under greedy) are off by default: in llama.cpp a pass of four tokens costs
nearly four passes of one here, so they did not pay (measured: 0 drafts 100.7 tok/s, 3 drafts 99.4).

A fine-tuning run (a LoRA adapter, or a whole model from `top-layers` / `full`) is written once as a
GGUF of its own: the adapter merged into the float32 base (PEFT `merge_and_unload`), the weights
renamed and laid out as llama.cpp reads them, with the base GGUF's metadata and tokenizer; cached in
`cache_dir()/llama` by the base, the adapter's content hash and the precision::

    gen = make_generator("smollm2-135m-instruct@llama")          # or make_generator(name, backend="llama")
    gen.generate([[{"role": "user", "content": "Hi"}]], max_new_tokens=16)

Needs the optional dependency `llama-cpp-python` (`pip install 'ragtune[llama]'`): no wheel on PyPI
for Linux, so pip compiles it (~3 minutes on 2 cores, a C++ compiler and cmake).
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .errors import ConfigError, ModelNotFoundError
from .fast_generators import (
    DraftCounts,
    _cached_build,
    _TokenStream,
    backend_name,
    check_speculation,
    log_softmax,
    prompt_lookup_decode,
)
from .generators import model_sources
from .models import gguf_file
from .prompts import Messages

# f32: transformers' greedy answers; f16: half the weights' bytes; q8_0: a quarter (8-bit blocks of 32, one
# scale each); gguf: the source file's own types.
LLAMA_PRECISIONS = ("f32", "f16", "q8_0", "gguf")
GGUF_WRITER_VERSION = 1  # bump when the written GGUF changes: old cache entries are then ignored
_LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_TOP_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}


def available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def gguf_name(hf_name: str) -> str | None:
    """The llama.cpp name of a Hugging Face Llama weight (`model.layers.3.mlp.up_proj.weight` ->
    `blk.3.ffn_up.weight`); None for one llama.cpp has no tensor for (rotary buffers)."""
    stem, _, kind = hf_name.rpartition(".")
    if stem in _TOP_NAMES:
        return f"{_TOP_NAMES[stem]}.{kind}"
    parts = stem.split(".", 3)
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] in _LAYER_NAMES:
        return f"blk.{parts[2]}.{_LAYER_NAMES[parts[3]]}.{kind}"
    return None


def permute_heads(w: np.ndarray, heads: int) -> np.ndarray:
    """Hugging Face's rotary layout of a q/k projection -> llama.cpp's (each head's two halves
    interleaved), as llama.cpp's own converter does; `gguf_to_safetensors` undoes it on the way in."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama_tensors(weights: Path, heads: int, kv_heads: int) -> dict[str, np.ndarray]:
    """The Hugging Face Llama weights in folder `weights` (safetensors) as llama.cpp names and lays
    them out, in float32."""
    from safetensors import safe_open

    files = sorted(weights.glob("*.safetensors"))
    if not files:
        raise ModelNotFoundError(f"{weights}: no safetensors weights to convert")
    state: dict[str, np.ndarray] = {}
    for f in files:
        with safe_open(str(f), framework="np") as st:
            for key in st.keys():
                name = gguf_name(key)
                if name is not None:
                    state[name] = st.get_tensor(key).astype(np.float32)
    for name, h in (("attn_q", heads), ("attn_k", kv_heads)):
        for key in [k for k in state if k.endswith(f".{name}.weight")]:
            state[key] = permute_heads(state[key], h)
    return state


def write_gguf(donor: Path, weights: Path, out: Path, precision: str) -> None:
    """Write the Hugging Face Llama weights in folder `weights` (safetensors) as a GGUF at `out`, with
    the metadata and tokenizer of the GGUF `donor` (the model they were trained from). Each tensor must
    have the shape of the donor's: a model of another size or vocabulary is refused. `precision`: f32,
    f16 (matrices; norms stay f32), q8_0 (matrices in llama.cpp's 8-bit blocks), or gguf (each tensor
    at the donor tensor's type)."""
    import gguf
    from gguf import GGMLQuantizationType as Q
    from gguf import GGUFValueType as V

    reader = gguf.GGUFReader(str(donor))
    arch = reader.fields["general.architecture"].contents()
    if arch != "llama":
        raise ConfigError(f"{donor}: architecture {arch!r}; the llama backend writes Llama-family models only")
    heads = int(reader.fields[f"{arch}.attention.head_count"].contents())
    kv_field = reader.fields.get(f"{arch}.attention.head_count_kv")
    state = llama_tensors(weights, heads, int(kv_field.contents()) if kv_field is not None else heads)
    donors = {t.name: t for t in reader.tensors}
    if "output.weight" in state and "output.weight" not in donors:
        if np.array_equal(state["output.weight"], state.get("token_embd.weight")):
            del state["output.weight"]  # tied to the embeddings, as in the donor
    missing = sorted(set(donors) - set(state))
    extra = sorted(set(state) - set(donors) - {"output.weight"})
    if missing or extra:
        raise ConfigError(f"{weights} does not match {donor.name}: missing {missing[:3]}, unexpected {extra[:3]}")
    for name, t in donors.items():
        shape = tuple(int(d) for d in reversed(t.shape))  # GGUF lists dimensions innermost first
        if state[name].shape != shape:
            raise ConfigError(f"{weights}: {name} has shape {state[name].shape}, {donor.name} has {shape}")
    writer = gguf.GGUFWriter(str(out), arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        vtype = field.types[0]
        writer.add_key_value(key, field.contents(), vtype, sub_type=field.types[-1] if vtype == V.ARRAY else None)
    own_type = int(reader.fields["general.file_type"].contents())
    writer.add_file_type({"f32": 0, "f16": 1, "q8_0": 7}.get(precision, own_type))
    untied = "output.weight" in state and "output.weight" not in donors  # an output layer of its own now
    order = [t.name for t in reader.tensors] + (["output.weight"] if untied else [])
    for name in order:
        x = state[name]
        kind = donors[name].tensor_type if name in donors else Q.F32
        if x.ndim == 1 or precision == "f32" or (precision == "gguf" and kind == Q.F32):
            writer.add_tensor(name, x)
        elif precision == "q8_0":
            q = gguf.quants.quantize(x, Q.Q8_0)
            writer.add_tensor(name, q, raw_shape=q.shape, raw_dtype=Q.Q8_0)
        elif precision == "f16" or kind == Q.F16:
            writer.add_tensor(name, x.astype(np.float16))
        else:
            q = gguf.quants.quantize(x, kind)
            writer.add_tensor(name, q, raw_shape=q.shape, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def gguf_converted(model: str, adapter: str | Path | None = None, precision: str = "f32") -> tuple[Path, Path]:
    """(the folder holding the tokenizer, the GGUF file llama.cpp runs for `model` + `adapter` at
    `precision`): the base GGUF itself for `gguf` without an adapter, else written once and cached."""
    if precision not in LLAMA_PRECISIONS:
        raise ConfigError(f"precision={precision!r}: use one of {', '.join(LLAMA_PRECISIONS)}")
    donor = gguf_file(model)
    if donor is None:
        raise ConfigError(
            f"the llama backend runs GGUF models (a registry model or a .gguf file); {model!r} is not one: "
            f"use {model}@ort or {model}@ct2"
        )
    source, peft = model_sources(model, adapter)
    if precision == "gguf" and adapter is None:
        return source, donor
    import llama_cpp

    def build(src: Path, out: Path) -> None:
        out.mkdir(parents=True)
        write_gguf(donor, src, out / "model.gguf", precision)

    version = f"{llama_cpp.__version__}|{GGUF_WRITER_VERSION}"
    tokenizer, folder = _cached_build("llama", model, adapter, precision, version, "model.gguf", build)
    return tokenizer, folder / "model.gguf"


ALL, LAST = slice(None), slice(-1, None)  # which entries' logits `_decode` returns


class _Sequence:
    """One llama.cpp sequence (id 0) as `prompt_lookup_decode` drives a generator: `append_tokens`
    reads tokens after what is there, `get_output("logits")` gives the logits at each of them,
    `get_logits()` the last one's, `rewind_to(n)` forgets everything after the first n."""

    def __init__(self, runner: LlamaCppGenerator):
        self.runner, self.length, self._logits = runner, 0, None
        runner._clear()

    def append_tokens(self, tokens: Sequence[int], logits=ALL) -> None:
        self._logits = self.runner._decode([(t, self.length + i, 0) for i, t in enumerate(tokens)], logits)
        self.length += len(tokens)

    def get_logits(self) -> np.ndarray:
        return self._logits[None, -1:]

    def get_output(self, name: str) -> np.ndarray:
        return self._logits[None]

    def rewind_to(self, length: int) -> None:
        self.runner._forget(0, length)
        self.length = length


class LlamaCppGenerator(_TokenStream):
    """A GGUF causal LM through llama.cpp on the CPU: greedy generation (with prompt-lookup drafts,
    `draft_tokens`; 0 decodes one token a pass) and span scoring (the prompt read once, every
    continuation then read in one batch, each in its own sequence sharing the prompt's cache)."""

    backend = "llama.cpp"
    device = "cpu"

    def __init__(
        self,
        model: str,
        adapter: str | Path | None = None,
        precision: str = "f32",
        draft_tokens: int = 0,
        ngram: int = 3,
        min_ngram: int = 2,
        n_ctx: int = 4096,
        threads: int | None = None,
    ):
        if precision not in LLAMA_PRECISIONS:
            raise ConfigError(f"precision={precision!r}: use one of {', '.join(LLAMA_PRECISIONS)}")
        check_speculation(draft_tokens, ngram, min_ngram)
        if n_ctx < 16:
            raise ConfigError(f"n_ctx={n_ctx!r}: use at least 16 tokens (4096 by default)")
        if not available():
            raise ModelNotFoundError(
                "the llama backend needs llama-cpp-python: pip install 'ragtune[llama]' (builds llama.cpp, ~3 min)"
            )
        self.name = backend_name(model, adapter, "llama", precision, "f32")
        self.model_name, self.adapter, self.precision = model, adapter, precision
        self.draft_tokens, self.ngram, self.min_ngram = draft_tokens, ngram, min_ngram
        self.drafts = DraftCounts()
        self.n_ctx = n_ctx
        self.threads = threads or len(os.sched_getaffinity(0))
        self._lock = threading.Lock()

    # -- llama.cpp plumbing --------------------------------------------------------------------
    SEQUENCES = 64  # the most sequences one context holds (a scoring call's continuations + 1)
    BATCH = 512  # the most tokens one decode call reads
    EXTRA_BUFFERS = False  # llama.cpp's repacked / AMX weight buffers (see _load)
    GROUP = 8  # the most prompts `generate` decodes together (as TransformersGenerator's batch_size)
    GROUP_CELLS = 1024  # cache cells each of them has there: its prompt and answer, in tokens

    def _load(self) -> None:
        import llama_cpp
        from llama_cpp import _internals, _logger
        from transformers import AutoTokenizer

        _logger.set_verbose(False)
        source, path = gguf_converted(self.model_name, self.adapter, self.precision)
        self._tokenizer = AutoTokenizer.from_pretrained(str(source))
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0
        # No repacked/AMX weight buffers: with them the Q4_1 GGUF crashed (SIGSEGV) in llama.cpp 0.3.36 built
        # on a CPU with AMX; f32/f16 weights do not use them.
        params.use_extra_bufts = self.EXTRA_BUFFERS
        model = _internals.LlamaModel(path_model=str(path), params=params, verbose=False)
        self._step = min(self.BATCH, self.n_ctx)  # llama.cpp asserts that a batch fits the context
        # continuations share the prompt's cache cells (one cache for all sequences); llama.cpp wants no
        # more sequences than a batch holds
        self._sequences = min(self.SEQUENCES, self._step)
        self._ctx = self._context(model, self.n_ctx, self._sequences, unified=True)
        self._group_ctx = None  # generate's, made on first use
        self._batch = llama_cpp.llama_batch_init(self._step, 0, 1)
        self._free_batch = llama_cpp.llama_batch_free  # held: __del__ may run while Python shuts down
        self._vocab = llama_cpp.llama_vocab_n_tokens(model.vocab)
        self._model = model

    def _context(self, model, n_ctx: int, sequences: int, unified: bool):
        import llama_cpp
        from llama_cpp import _internals

        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch = n_ctx, self._step, self._step
        cp.n_seq_max, cp.kv_unified = sequences, unified
        cp.n_threads = cp.n_threads_batch = self.threads
        cp.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        if self.precision == "f32":  # the default f16 cache changes answers; float32 keeps transformers'
            cp.type_k = cp.type_v = llama_cpp.GGML_TYPE_F32
        return _internals.LlamaContext(model=model, params=cp, verbose=False)

    def __del__(self):
        batch = getattr(self, "_batch", None)
        if batch is not None:
            self._free_batch(batch)
            self._batch = None

    def _clear(self) -> None:
        self.model  # noqa: B018 (loaded)
        self._ctx.kv_cache_clear()

    def _forget(self, seq: int, start: int) -> None:
        self._ctx.kv_cache_seq_rm(seq, start, -1)

    def _decode(self, entries: Sequence[tuple[int, int, int]], logits=ALL, context=None) -> np.ndarray:
        """Read (token, position, sequence) entries, a batch (BATCH, or n_ctx if less) at a time, into
        `context` (the main one by default); the logits at the entries `logits` selects (ALL, LAST, or
        an array of entry numbers), as float32 rows in entry order."""
        import llama_cpp

        context = context or self._ctx
        if entries and max(p for _, p, _ in entries) >= self.n_ctx:
            raise ConfigError(f"the prompt and answer need more than n_ctx={self.n_ctx} tokens: raise n_ctx")
        keep = np.zeros(len(entries), bool)
        keep[logits] = True
        rows = []
        b = self._batch
        for start in range(0, len(entries), self._step):
            chunk = entries[start : start + self._step]
            b.n_tokens = len(chunk)
            for i, (token, pos, seq) in enumerate(chunk):
                b.token[i], b.pos[i], b.n_seq_id[i], b.seq_id[i][0] = token, pos, 1, seq
                b.logits[i] = bool(keep[start + i])
            context.decode(_Batch(b))
            ctx = context.ctx
            for i in np.flatnonzero(keep[start : start + len(chunk)]):
                ptr = llama_cpp.llama_get_logits_ith(ctx, int(i))
                rows.append(np.ctypeslib.as_array(ptr, shape=(self._vocab,)).copy())
        return np.stack(rows) if rows else np.zeros((0, self._vocab), np.float32)

    # -- the protocol --------------------------------------------------------------------------
    def token_ids(self, prompt: Messages, max_new_tokens: int = 48) -> Iterator[int]:
        """The greedy completion's token ids, one by one as they are decoded (the end token left out)."""
        return self._completion(self._encode(prompt), max_new_tokens)

    def _encode(self, prompt: Messages) -> list[int]:
        return self.tokenizer(self.render(prompt), add_special_tokens=False)["input_ids"]

    def _completion(self, ids: list[int], max_new_tokens: int) -> Iterator[int]:
        """`token_ids` of a prompt already tokenized, in the main context."""
        if max_new_tokens <= 0:
            return
        with self._lock:
            seq = _Sequence(self)
            seq.append_tokens(ids, LAST)
            eos, k, n = self.tokenizer.eos_token_id, self.draft_tokens, (self.ngram, self.min_ngram)
            yield from prompt_lookup_decode(seq, ids, max_new_tokens, eos, k, n, self.drafts)  # k=0: one token a pass

    def generate(self, prompts: Sequence[Messages], max_new_tokens: int = 48) -> list[str]:
        """Greedy completions, up to GROUP prompts decoded together in a context of their own (each
        prompt in its own cache stream of GROUP_CELLS cells): the prompts are read, then every unfinished
        one gets its next token in one batch per step, so one read of the weights serves them all (the
        same answers as one by one). A prompt too long for a stream, and with `draft_tokens` prompt-lookup
        speculation every prompt, goes one at a time."""
        if self.draft_tokens or max_new_tokens <= 0 or len(prompts) < 2:
            return super().generate(prompts, max_new_tokens)
        tok = self.tokenizer
        encoded = [self._encode(p) for p in prompts]
        fits = [i for i, ids in enumerate(encoded) if len(ids) + max_new_tokens <= self.GROUP_CELLS]
        made: dict[int, list[int]] = {}
        with self._lock:
            self.model  # noqa: B018 (loaded)
            if fits and self._group_ctx is None:  # one stream per sequence: no attention across prompts
                self._group_ctx = self._context(self._model, self.GROUP * self.GROUP_CELLS, self.GROUP, unified=False)
            for start in range(0, len(fits), self.GROUP):
                chunk = fits[start : start + self.GROUP]
                made.update(zip(chunk, self._generate_group([encoded[i] for i in chunk], max_new_tokens)))
        for i in set(range(len(prompts))) - made.keys():  # too long for a stream: one by one
            made[i] = list(self._completion(encoded[i], max_new_tokens))
        return [tok.decode(made[i], skip_special_tokens=True).strip() for i in range(len(prompts))]

    def _generate_group(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        """The greedy completions (end token left out) of `prompts`, sequence s holding prompt s in the
        group context; the caller holds the lock."""
        eos, ctx = self.tokenizer.eos_token_id, self._group_ctx
        ctx.kv_cache_clear()
        entries = [(t, i, s) for s, ids in enumerate(prompts) for i, t in enumerate(ids)]
        ends = np.cumsum([len(ids) for ids in prompts]) - 1  # each prompt's last entry
        picks = self._decode(entries, ends, context=ctx).argmax(-1).tolist()
        made: list[list[int]] = [[] for _ in prompts]
        live = list(range(len(prompts)))
        while True:
            for s, token in zip(live, picks):
                if token != eos:
                    made[s].append(int(token))
            live = [s for s, token in zip(live, picks) if token != eos and len(made[s]) < max_new_tokens]
            if not live:
                return made
            step = [(made[s][-1], len(prompts[s]) + len(made[s]) - 1, s) for s in live]
            picks = self._decode(step, ALL, context=ctx).argmax(-1).tolist()

    def score(self, prompt: Messages, continuations: Sequence[str]) -> list[float]:
        """Log-likelihood of each continuation as the whole reply to `prompt` (its tokens and the end
        of the turn), as `TransformersGenerator.score`."""
        if not continuations:
            return []
        tok = self.tokenizer
        head = tok(self.render(prompt), add_special_tokens=False)["input_ids"]
        rows = [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in continuations]
        scores: list[float] = []
        with self._lock:
            self._clear()
            first = log_softmax(self._decode([(t, i, 0) for i, t in enumerate(head)], LAST)[-1])
            group: list[list[int]] = []
            for row in [*rows, None]:  # continuations in groups that fit a context's sequences and a batch
                full = row is None or len(group) == self._sequences - 1 or sum(map(len, group)) + len(row) > self._step
                if group and full:
                    scores += self._score_group(len(head), first, group)
                    group = []
                if row is not None:
                    group.append(row)
        return scores

    def _score_group(self, start: int, first: np.ndarray, rows: list[list[int]]) -> list[float]:
        """Scores of `rows` read after the prompt (sequence 0, `start` tokens), each in a sequence of
        its own that shares the prompt's cache cells; their cells are dropped afterwards."""
        entries = []
        for s, row in enumerate(rows, start=1):
            self._ctx.kv_cache_seq_cp(0, s, 0, start)
            entries += [(t, start + i, s) for i, t in enumerate(row[:-1])]
        logits = self._decode(entries, ALL) if entries else None
        out, at = [], 0
        for s, row in enumerate(rows, start=1):
            total = float(first[row[0]])
            n = len(row) - 1
            if n:
                lp = log_softmax(logits[at : at + n])
                total += float(lp[np.arange(n), row[1:]].sum())
                at += n
            out.append(total)
            self._forget(s, 0)
        return out


class _Batch:
    """What `LlamaContext.decode` takes: an object whose `.batch` is the llama_batch."""

    def __init__(self, batch):
        self.batch = batch
