"""Retrieval: dense, BM25, and their reciprocal-rank fusion."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from .config import RagConfig
from .documents import Hit
from .embedders import Embedder
from .errors import ConfigError
from .stores import Store


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Hit]], k: int, rrf_k: int = 60) -> list[Hit]:
    """Fuse ranked lists by sum of 1/(rrf_k + rank) (Cormack, Clarke & Buettcher 2009)."""
    scores: dict[str, float] = {}
    first: dict[str, Hit] = {}
    for ranking in rankings:
        for h in ranking:
            scores[h.chunk.id] = scores.get(h.chunk.id, 0.0) + 1.0 / (rrf_k + h.rank)
            first.setdefault(h.chunk.id, h)
    order = sorted(scores, key=lambda cid: (-scores[cid], first[cid].rank, cid))[:k]
    return [replace(first[cid], score=scores[cid], rank=i + 1, via="hybrid") for i, cid in enumerate(order)]


class Retriever:
    """Finds the chunks for a question in a store; `search_batch` embeds all questions at once."""

    def __init__(self, store: Store, embedder: Embedder, config: RagConfig = RagConfig()):
        self.store = store
        self.embedder = embedder
        self.config = config

    def search(
        self, query: str, k: int | None = None, mode: str | None = None, filters: dict | None = None
    ) -> list[Hit]:
        return self.search_batch([query], k=k, mode=mode, filters=filters)[0]

    def search_batch(
        self, queries: Sequence[str], k: int | None = None, mode: str | None = None, filters: dict | None = None
    ) -> list[list[Hit]]:
        k = k or self.config.k
        mode = mode or self.config.mode
        if mode not in ("dense", "bm25", "hybrid"):
            raise ConfigError(f"mode={mode!r}: must be one of ('hybrid', 'dense', 'bm25')")
        if k < 1:
            raise ConfigError(f"k={k!r}: must be at least 1")
        depth = max(k, self.config.candidates) if mode == "hybrid" else k
        vectors = self.embedder.embed(list(queries)) if mode in ("dense", "hybrid") else None
        results = []
        for i, q in enumerate(queries):
            dense = self.store.search_dense(vectors[i], depth, filters) if vectors is not None else []
            text = self.store.search_text(q, depth, filters) if mode in ("bm25", "hybrid") else []
            if mode == "dense":
                results.append(dense)
            elif mode == "bm25":
                results.append(text)
            else:
                results.append(reciprocal_rank_fusion([dense, text], k, self.config.rrf_k))
        return results
