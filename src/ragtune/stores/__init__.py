"""Vector stores. `Store` is the protocol; LanceDB (embedded) is the default implementation."""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from ..documents import Chunk, Hit
from .lancedb import LanceStore


class Store(Protocol):
    def upsert(self, doc_ids: Sequence[str], chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        """Replace every chunk of `doc_ids` with `chunks`, atomically."""

    def delete(self, doc_ids: Sequence[str]) -> int:
        """Remove the documents' chunks; returns how many chunks went."""

    def search_dense(self, vector: np.ndarray, k: int, filters: dict | None = None) -> list[Hit]: ...

    def search_text(self, query: str, k: int, filters: dict | None = None) -> list[Hit]: ...

    def document_hashes(self) -> dict[str, str]:
        """doc id -> content hash of every stored document."""


__all__ = ["Store", "LanceStore"]
