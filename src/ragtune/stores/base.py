"""The store seam: what every backend keeps (chunks, vectors, text index, a manifest) and the
protocol callers may rely on. Backends register through `ragtune.registry` and must pass the
contract suite in `ragtune.testing.StoreContract`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..documents import Chunk, Hit

FORMAT = 1
COLUMNS = ("doc_id", "title", "source")  # filter keys that are columns; any other key filters on `meta`
GROUPS = "groups"  # the filter key (and Document.meta key) of document access groups


@dataclass(frozen=True)
class IndexManifest:
    """What the index was built with; a later ingest must match it."""

    format: int
    embedder: str
    dim: int
    chunking: dict
    created: float
    build_wall_s: float = 0.0  # summed over every ingest into this index
    build_cpu_s: float = 0.0
    retrieval: dict = field(default_factory=dict)  # retrieval settings chosen for this index (RagConfig fields)
    gate: dict = field(default_factory=dict)  # generator name -> its calibrated answerability gate (Gate.to_dict())
    ann: dict = field(default_factory=dict)  # approximate dense search: overrides of the backend's policy, built_rows


@dataclass(frozen=True)
class DocumentInfo:
    """One stored document: id, title, source and how many chunks it has."""

    id: str
    title: str
    source: str
    chunks: int
    content_hash: str = ""
    groups: tuple[str, ...] = ()  # access groups; () = visible to everyone


@dataclass(frozen=True)
class IndexInfo:
    url: str
    backend: str
    documents: int
    chunks: int
    embedder: str
    dim: int
    chunking: dict
    version: int  # grows with each write
    disk_bytes: int
    retrieval: dict = field(default_factory=dict)
    embedder_runtime: dict = field(default_factory=dict)  # what runs the embedder here and where (index-info)
    gates: dict = field(default_factory=dict)  # generator -> the answerability gate its answers pass (index-info)


def meta_filters(filters: dict | None) -> tuple[dict, dict]:
    """Split filters into column filters and `meta` filters (a `meta.` prefix is optional).
    The access filter `groups` is neither: see `access_groups`."""
    items = [(k, v) for k, v in (filters or {}).items() if k != GROUPS]
    cols = {k: str(v) for k, v in items if k in COLUMNS}
    meta = {k.removeprefix("meta."): str(v) for k, v in items if k not in COLUMNS}
    return cols, meta


def access_groups(filters: dict | None) -> list[str] | None:
    """The groups a caller may read (`filters["groups"]`), or None for no restriction. A document
    is visible when it has no groups or shares one with this list; [] sees public documents only.
    Stores apply it inside the query, before ranking, so top-k is filled from visible chunks."""
    if not filters or GROUPS not in filters or filters[GROUPS] is None:
        return None
    value = filters[GROUPS]
    return sorted({value} if isinstance(value, str) else {str(g) for g in value})


def doc_groups(meta: dict | None) -> list[str]:
    """A document's access groups from its meta: sorted, unique, non-empty strings."""
    value = (meta or {}).get(GROUPS) or []
    if isinstance(value, str):
        value = [value]
    return sorted({str(g).strip() for g in value if str(g).strip()})


def visible(groups: Sequence[str], allowed: list[str] | None) -> bool:
    return allowed is None or not groups or bool(set(groups) & set(allowed))


class Store(Protocol):
    """One index's chunks. Every write is atomic per call: a reader, or a run that dies
    part-way, sees each document wholly old or wholly new."""

    url: str
    backend: str  # registry name: "lancedb", "pgvector", ...
    manifest: IndexManifest

    def save_manifest(self, manifest: IndexManifest) -> None:
        """Persist `manifest` (atomically) and make it `self.manifest`."""

    def upsert(self, doc_ids: Sequence[str], chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        """Replace every chunk of `doc_ids` with `chunks`, in one commit / transaction."""

    def delete(self, doc_ids: Sequence[str]) -> int:
        """Remove the documents' chunks in one commit; returns how many chunks went."""

    def refresh_text_index(self) -> None:
        """Fold recent writes into the text index (text search must be correct without it)."""

    def search_dense(self, vector: np.ndarray, k: int, filters: dict | None = None) -> list[Hit]:
        """Top k by cosine similarity (score = similarity), after filters."""

    def search_text(self, query: str, k: int, filters: dict | None = None) -> list[Hit]:
        """Top k by the backend's text ranking (BM25 or the database's own), after filters."""

    def document_hashes(self) -> dict[str, str]:
        """doc id -> content hash of every stored document."""

    def documents(self, groups: Sequence[str] | None = None) -> list[DocumentInfo]:
        """Every stored document, sorted by id; with `groups`, only those visible to them."""

    def iter_chunks(
        self, batch_size: int = 512, vectors: bool = False
    ) -> Iterator[tuple[list[Chunk], np.ndarray | None]]:
        """Every chunk in batches, ordered by (doc_id, position); with their vectors if asked."""

    def get_chunks(self, chunk_ids: Sequence[str]) -> list[Chunk]:
        """The chunks with these ids, in the order asked (unknown ids are left out)."""

    def count_chunks(self) -> int: ...

    def version(self) -> int:
        """A number that grows with every write (tests use it to prove nothing was written)."""

    def disk_bytes(self) -> int: ...

    def close(self) -> None: ...
