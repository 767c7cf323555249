"""Vector stores behind one seam. `open_store(url)` picks the backend from the path or URL:
`pg:DIR` (embedded PostgreSQL), `postgresql://...` (your server), anything else LanceDB
(a directory, or a URI such as s3://...). Backends are registered in `ragtune.registry`."""

from __future__ import annotations

from typing import Protocol

from .base import COLUMNS, FORMAT, DocumentInfo, IndexInfo, IndexManifest, Store, meta_filters


class StoreBackend(Protocol):
    """How a registry entry opens and creates stores of one kind."""

    name: str

    def exists(self, url: str) -> bool:
        """Whether `url` holds a ragtune index of this backend."""

    def open(self, url: str) -> Store:
        """Open an existing index; IndexNotFoundError if there is none."""

    def create(self, url: str, manifest: IndexManifest) -> Store:
        """Create an empty index; refuse (IndexNotFoundError) a location that holds something else."""


def backend_for(url: str) -> StoreBackend:
    from ..registry import registry

    return registry().store_backend(str(url))


def open_store(url: str) -> Store:
    """The store at `url` (IndexNotFoundError if there is none)."""
    return backend_for(url).open(str(url))


__all__ = [
    "COLUMNS",
    "FORMAT",
    "DocumentInfo",
    "IndexInfo",
    "IndexManifest",
    "Store",
    "StoreBackend",
    "backend_for",
    "meta_filters",
    "open_store",
]
