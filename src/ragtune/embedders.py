"""Embedders: turn texts into unit-length vectors, batch first.

A sentence-transformers model runs on ONNX Runtime by default (`onnx_embedder.py`: exported once,
then no torch at query time), on sentence-transformers itself where onnxruntime is missing.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from .errors import ConfigError
from .models import resolve_embedder

# How a sentence-transformers model runs: benchmarks/onnx_recall.py, benchmarks/ingest_throughput.py
# and benchmarks/cold_search.py measured the choices; float32 ONNX keeps sentence-transformers' vectors.
BACKENDS = ("onnx", "onnx-int8", "sentence-transformers")
DEFAULT_BACKEND = "onnx"


class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised."""

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text takes in this embedder's tokenizer (no special tokens)."""


# Vectors an embedder keeps for texts it has embedded lately (VectorCache); 4096 MiniLM vectors ~6 MB.
CACHE_SIZE = 4096


class VectorCache:
    """The vectors of the last `size` distinct texts an embedder embedded, and each call's duplicates
    embedded once. A question's path embeds its query twice (the nothing-found probe and the search)
    and the sentences of every retrieved chunk; questions that arrive together, or one after another
    about the same documents, read the same chunks (`serve` batching 16 demo questions: 472 texts,
    188 distinct). Thread-safe; `size=0` keeps nothing across calls but still embeds a call's
    duplicates once. A vector does not depend on the batch it was computed in beyond float rounding."""

    def __init__(self, size: int | None = None):  # None: CACHE_SIZE as it is when the embedder is made
        size = CACHE_SIZE if size is None else size
        if size < 0:
            raise ConfigError(f"cache size {size!r}: must be 0 (off) or more")
        self.size = size
        self._vecs: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def embed(self, texts: Sequence[str], compute: Callable[[list[str]], np.ndarray], dim: int) -> np.ndarray:
        """`compute(texts)` for the texts not cached (each distinct text once), the rest from the cache."""
        out = np.empty((len(texts), dim), dtype=np.float32)
        todo: dict[str, list[int]] = {}
        with self._lock:
            for i, text in enumerate(texts):
                vec = self._vecs.get(text)
                if vec is None:
                    todo.setdefault(text, []).append(i)
                else:
                    self._vecs.move_to_end(text)
                    out[i] = vec
            self.hits += len(texts) - sum(len(v) for v in todo.values())
            self.misses += len(todo)
        if todo:
            fresh = np.asarray(compute(list(todo)), dtype=np.float32)
            for row, rows in zip(fresh, todo.values()):
                out[rows] = row
            if self.size:
                with self._lock:
                    for text, row in zip(todo, fresh):
                        self._vecs[text] = row.copy()  # not a view that keeps the whole batch alive
                        self._vecs.move_to_end(text)
                    while len(self._vecs) > self.size:
                        self._vecs.popitem(last=False)
        return out


class SentenceTransformerEmbedder:
    """sentence-transformers model, loaded on first use."""

    backend = "sentence-transformers"

    def __init__(self, name: str, batch_size: int = 32, device: str | None = None, cache_size: int | None = None):
        from .devices import resolve_device

        self.name = name
        self.batch_size = batch_size
        self.device = resolve_device(device)  # None: `ragtune --device` ($RAGTUNE_DEVICE), else auto
        self._model = None
        self.cache = VectorCache(cache_size)

    @property
    def model(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(
                str(resolve_embedder(self.name)), device=self.device, local_files_only=True
            )
        return self._model

    @property
    def dim(self) -> int:
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get_dim())

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.cache.embed(texts, self._encode, self.dim)

    def _encode(self, texts: list[str]) -> np.ndarray:
        vecs = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vecs.astype(np.float32, copy=False)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        enc = self.model.tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
        return [len(ids) for ids in enc]


def sentence_embedder(name: str, backend: str | None = None, **options):
    """A sentence-transformers model (registry name or folder) on `backend`: `onnx` (float32, the
    default), `onnx-int8`, or `sentence-transformers`; None reads $RAGTUNE_EMBEDDER_BACKEND. Without
    onnxruntime, or for a folder whose modules the ONNX path does not reproduce, the default
    falls back to sentence-transformers (an explicit `onnx*` backend raises instead)."""
    chosen = backend or os.environ.get("RAGTUNE_EMBEDDER_BACKEND") or DEFAULT_BACKEND
    if chosen not in BACKENDS:
        raise ConfigError(f"embedder backend {chosen!r}: use one of {', '.join(BACKENDS)}")
    if chosen.startswith("onnx"):
        from .onnx_embedder import OnnxEmbedder, UnsupportedModel, onnx_runtime_available, read_layout

        explicit = chosen != DEFAULT_BACKEND or backend is not None or "RAGTUNE_EMBEDDER_BACKEND" in os.environ
        device = str(options.get("device") or os.environ.get("RAGTUNE_DEVICE") or "").lower()
        if not explicit and device.startswith("cuda") and not _onnx_has_cuda():
            # `--device cuda` with a CPU-only onnxruntime: the GPU through sentence-transformers,
            # not the CPU through ONNX. (`auto` stays on ONNX: finding out whether torch sees a GPU
            # costs a torch import, which is what the ONNX path saves a search.)
            return _st(name, options)
        try:
            if not onnx_runtime_available():
                raise ConfigError(f"embedder backend {chosen!r} needs onnxruntime: pip install onnxruntime")
            read_layout(resolve_embedder(name))
        except (ConfigError, UnsupportedModel):
            if explicit:
                raise
        else:
            return OnnxEmbedder(name, quantize=chosen == "onnx-int8", fallback=not explicit, **options)
    return _st(name, options)


def _st(name: str, options: dict) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(
        name, **{k: v for k, v in options.items() if k in ("batch_size", "device", "cache_size")}
    )


def _onnx_has_cuda() -> bool:
    from .onnx_embedder import _available_providers

    return "CUDAExecutionProvider" in _available_providers()
