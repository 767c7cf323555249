"""A sentence-transformers model run on ONNX Runtime: no torch, no sentence-transformers at query time.

The folder's transformer is exported to ONNX once (`models.export_onnx`, which does import torch);
after that a query needs only onnxruntime, the `tokenizers` package (the folder's tokenizer.json)
and numpy. Pooling and normalisation follow the folder's modules.json, so the vectors are
sentence-transformers' own (cosine >= 0.999 for float32, tests/test_onnx_embedder.py): an index
built with either backend is searchable with the other under the same embedder name.

    emb = OnnxEmbedder("all-minilm-l6-v2")      # a registry name or a sentence-transformers folder
    emb.embed(["Who built the bridge?"])          # (1, 384) float32, unit length
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConfigError, ModelNotFoundError
from .models import REGISTRY, export_onnx, resolve_embedder

log = logging.getLogger(__name__)

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens")  # sentence-transformers' concatenation order
_LEGACY_POOLING = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


class UnsupportedModel(ModelNotFoundError):
    """The folder holds modules the ONNX path does not reproduce (a Dense layer, weighted pooling, ...)."""


@dataclass(frozen=True)
class Layout:
    """What a sentence-transformers folder does to a text, read from its files."""

    transformer: Path  # the folder with config.json, weights and tokenizer.json
    max_seq_length: int
    do_lower_case: bool
    pooling: tuple[str, ...]
    dim: int


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def read_layout(folder: Path) -> Layout:
    """The Transformer -> Pooling -> Normalize pipeline of `folder`; UnsupportedModel for anything else."""
    modules = (
        json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        if (folder / "modules.json").is_file()
        else [{"type": "Transformer", "path": ""}, {"type": "Pooling", "path": None}]
    )
    kinds = [(m.get("type", "").rsplit(".", 1)[-1], m.get("path")) for m in modules]
    if [k for k, _ in kinds if k != "Normalize"] != ["Transformer", "Pooling"]:
        raise UnsupportedModel(f"{folder}: modules {[k for k, _ in kinds]} (the ONNX path runs Transformer, Pooling)")
    transformer = folder / (kinds[0][1] or "")
    pool_path = kinds[1][1]
    if not (transformer / "tokenizer.json").is_file():
        raise UnsupportedModel(f"{transformer}: no tokenizer.json")
    config = _read(transformer / "config.json")
    st = _read(transformer / "sentence_bert_config.json")
    pool = _read(folder / pool_path / "config.json") if pool_path is not None else {}
    mode = pool.get("pooling_mode") or tuple(m for k, m in _LEGACY_POOLING.items() if pool.get(k)) or ("mean",)
    modes = (mode,) if isinstance(mode, str) else tuple(mode)
    bad = [m for m in modes if m not in POOLING_MODES]
    if bad:
        raise UnsupportedModel(f"{folder}: pooling {bad} (the ONNX path does {list(POOLING_MODES)})")
    hidden = pool.get("embedding_dimension") or pool.get("word_embedding_dimension") or config.get("hidden_size")
    if not hidden:
        raise UnsupportedModel(f"{folder}: neither the pooling config nor config.json gives the embedding size")
    max_len = st.get("max_seq_length")
    if max_len is None:  # as sentence-transformers: the tokenizer's limit, capped by the model's positions
        limits = (config.get("max_position_embeddings"), _read(transformer / "tokenizer_config.json").get(
            "model_max_length"))  # fmt: skip
        max_len = min((x for x in limits if isinstance(x, int) and 0 < x < 10**9), default=512)
    return Layout(transformer, int(max_len), bool(st.get("do_lower_case")), modes, int(hidden) * len(modes))


def _available_providers() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def providers(device: str | None) -> list:
    """ONNX Runtime providers for `device` (None: $RAGTUNE_DEVICE, else the CPU): CUDA when asked
    for (`cuda`, `cuda:N`, `auto`) and this onnxruntime has it (the onnxruntime-gpu wheel), else CPU."""
    import onnxruntime as ort

    name = (device or os.environ.get("RAGTUNE_DEVICE") or "cpu").lower()
    if name.split(":")[0] not in ("auto", "cpu", "cuda", "mps"):
        raise ConfigError(f"device={name!r}: use one of auto, cpu, cuda (cuda:N for a given GPU)")
    if name.split(":")[0] in ("auto", "cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        gpu = name.split(":")[1] if ":" in name else "0"
        return [("CUDAExecutionProvider", {"device_id": int(gpu)}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxEmbedder:
    """A sentence-transformers folder (or registry name) on ONNX Runtime, exported on first use.

    `quantize`: int8 weights (smaller, faster, less accurate: see benchmarks/onnx_recall.py).
    `device`: cpu (default) or cuda, as `providers` reads it."""

    def __init__(
        self,
        name: str,
        batch_size: int | None = None,
        quantize: bool = False,
        device: str | None = None,
        fallback: bool = True,
        cache_size: int | None = None,
    ):
        from .embedders import VectorCache

        self.name = name
        self.fallback = fallback  # sentence-transformers if the export fails (no torch, an unexportable model)
        # Texts per ONNX call: 8 on a CPU (200 SQuAD paragraphs: 2.36 s at 8 vs 2.87 s at 32 on 2 cores;
        # less padding, cache-sized activations), 64 on a GPU.
        wants_gpu = (device or os.environ.get("RAGTUNE_DEVICE", "")).lower().startswith(("cuda", "auto"))
        self.batch_size = batch_size or (64 if wants_gpu and "CUDAExecutionProvider" in _available_providers() else 8)
        self.quantize = quantize
        self.device = device
        self._layout: Layout | None = None
        self._session = None
        self._tokenizer = None
        self._counter = None
        self._st = None  # sentence-transformers, when the export failed
        self.cache = VectorCache(cache_size)

    @property
    def backend(self) -> str:
        if self._st is not None:
            return "sentence-transformers (ONNX export failed)"
        return "onnxruntime-int8" if self.quantize else "onnxruntime"

    @property
    def layout(self) -> Layout:
        if self._layout is None:
            self._layout = read_layout(resolve_embedder(self.name))
        return self._layout

    @property
    def dim(self) -> int:
        return self.layout.dim

    def model_file(self) -> Path:
        """The ONNX file (exported into the model cache on the first call)."""
        spec = REGISTRY.get(self.name)
        label = spec.name if spec else self.layout.transformer.resolve().name
        return export_onnx(self.layout.transformer, label, quantize=self.quantize)

    @property
    def session(self):
        if self._session is None and self._st is None:
            import onnxruntime as ort

            try:
                path = self.model_file()
            except Exception as exc:  # no torch to export with, or a model torch cannot export
                if not self.fallback:
                    raise
                from .embedders import SentenceTransformerEmbedder

                log.warning("exporting %s to ONNX failed (%s: %s); using sentence-transformers",
                            self.name, type(exc).__name__, exc)  # fmt: skip
                self._st = SentenceTransformerEmbedder(self.name, self.batch_size, cache_size=0)
                return None
            options = ort.SessionOptions()
            options.log_severity_level = 3  # errors only
            threads = os.environ.get("OMP_NUM_THREADS", "")  # a Ray actor's share of the CPUs
            if threads.isdigit():
                options.intra_op_num_threads = int(threads)
            self._session = ort.InferenceSession(str(path), options, providers=providers(self.device))
            self._inputs = {i.name for i in self._session.get_inputs()}
        return self._session

    def _load_tokenizer(self, truncate: bool):
        from tokenizers import Tokenizer, normalizers

        tok = Tokenizer.from_file(str(self.layout.transformer / "tokenizer.json"))
        if self.layout.do_lower_case:
            tok.normalizer = normalizers.Sequence(
                [normalizers.Lowercase(), *([tok.normalizer] if tok.normalizer else [])]
            )
        pad = tok.padding or {}
        tok.no_padding()
        tok.no_truncation()
        if truncate:  # as sentence-transformers calls its tokenizer: longest_first, pad to the longest
            tok.enable_truncation(self.layout.max_seq_length, strategy="longest_first")
            pad_id = pad.get("pad_id", tok.token_to_id("[PAD]") or 0)
            tok.enable_padding(pad_id=pad_id, pad_token=pad.get("pad_token", "[PAD]"))
        return tok

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = self._load_tokenizer(truncate=True)
        return self._tokenizer

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.cache.embed(texts, self._embed_all, self.dim)

    def _embed_all(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Longest first, as sentence-transformers does: batches of similar length waste little on padding.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self._embed_batch([texts[i] for i in idx])
        return out

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        session = self.session
        if session is None:
            return self._st.embed(texts)
        enc = self.tokenizer.encode_batch(texts)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feed = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64), "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.array([e.type_ids for e in enc], dtype=np.int64)
        tokens = session.run(None, feed)[0].astype(np.float32, copy=False)
        vecs = np.concatenate([pool(tokens, mask, mode) for mode in self.layout.pooling], axis=1)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)  # sentence-transformers' normalize: eps 1e-12
        return vecs / np.maximum(norms, 1e-12)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        if self._counter is None:
            self._counter = self._load_tokenizer(truncate=False)
        return [len(e.ids) for e in self._counter.encode_batch(list(texts), add_special_tokens=False)]


def pool(tokens: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """sentence-transformers' Pooling over (batch, seq, dim) token embeddings (right padding)."""
    if mode == "cls":
        return tokens[np.arange(len(tokens)), mask.argmax(axis=1)]
    m = mask[..., None].astype(np.float32)
    if mode == "max":
        return np.where(m > 0, tokens, -np.inf).max(axis=1)
    counts = np.maximum(m.sum(axis=1), 1e-9)
    total = (tokens * m).sum(axis=1)
    return total / (counts if mode == "mean" else np.sqrt(counts))


def onnx_runtime_available() -> bool:
    """Whether onnxruntime imports (it is what the default embedder runs on; sentence-transformers otherwise)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True
