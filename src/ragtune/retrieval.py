"""Retrieval: dense, BM25, and their reciprocal-rank fusion."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import replace

from .config import RagConfig
from .documents import Hit
from .embedders import Embedder
from .errors import ConfigError
from .stores import Store


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Hit]], k: int, rrf_k: int = 60) -> list[Hit]:
    """Fuse any number of ranked lists by sum of 1/(rrf_k + rank) (Cormack, Clarke & Buettcher
    2009). Retrieval fuses its two lists with `fuse`, whose weight 0.5 gives the same scores."""
    scores: dict[str, float] = {}
    first: dict[str, Hit] = {}
    for ranking in rankings:
        for h in ranking:
            scores[h.chunk.id] = scores.get(h.chunk.id, 0.0) + 1.0 / (rrf_k + h.rank)
            first.setdefault(h.chunk.id, h)
    order = sorted(scores, key=lambda cid: (-scores[cid], first[cid].rank, cid))[:k]
    return [replace(first[cid], score=scores[cid], rank=i + 1, via="hybrid") for i, cid in enumerate(order)]


def _minmax(hits: Sequence[Hit]) -> dict[str, float]:
    if not hits:
        return {}
    lo, hi = min(h.score for h in hits), max(h.score for h in hits)
    return {h.chunk.id: (h.score - lo) / (hi - lo) if hi > lo else 1.0 for h in hits}


def fuse(
    dense: Sequence[Hit],
    text: Sequence[Hit],
    k: int,
    fusion: str = "rrf",
    dense_weight: float = 0.5,
    rrf_k: int = 60,
) -> list[Hit]:
    """One ranking from the dense and BM25 lists.

    rrf: 2w/(rrf_k + dense rank) + 2(1-w)/(rrf_k + text rank) (w = 0.5 is plain RRF);
    score: w * dense score + (1-w) * text score, each min-max normalised over its list.
    A chunk missing from a list gets nothing from it. w = 1 gives the dense order, w = 0 the
    BM25 order, so a tuned weight can always fall back to the better single retriever.
    Each fused hit keeps both raw scores (None where that retriever did not find it)."""
    w = dense_weight
    if fusion == "rrf":
        d = {h.chunk.id: 2 * w / (rrf_k + h.rank) for h in dense}
        t = {h.chunk.id: 2 * (1 - w) / (rrf_k + h.rank) for h in text}
    elif fusion == "score":
        d = {cid: w * v for cid, v in _minmax(dense).items()}
        t = {cid: (1 - w) * v for cid, v in _minmax(text).items()}
    else:
        raise ConfigError(f"fusion={fusion!r}: must be 'rrf' or 'score'")
    by_id = {h.chunk.id: h for h in text}
    by_id.update({h.chunk.id: h for h in dense})
    dense_raw = {h.chunk.id: h.score for h in dense}
    text_raw = {h.chunk.id: h.score for h in text}
    dense_rank = {h.chunk.id: h.rank for h in dense}
    text_rank = {h.chunk.id: h.rank for h in text}
    scores = {cid: d.get(cid, 0.0) + t.get(cid, 0.0) for cid in by_id}
    # ties (e.g. w = 1 and a chunk only BM25 found): the better rank in the weighted list, then id
    big = 10**9
    order = sorted(
        scores,
        key=lambda c: (
            -scores[c],
            dense_rank.get(c, big) if w >= 0.5 else text_rank.get(c, big),
            text_rank.get(c, big) if w >= 0.5 else dense_rank.get(c, big),
            c,
        ),
    )[:k]
    return [
        replace(by_id[c], score=scores[c], rank=i + 1, via="hybrid", dense_score=dense_raw.get(c),
                text_score=text_raw.get(c))  # fmt: skip
        for i, c in enumerate(order)
    ]


@functools.lru_cache(maxsize=4)
def _load_reranker(name: str):
    """One reranker per name per process: every Pipeline builds a Retriever, and a cross-encoder
    should not load again for each."""
    from .registry import make_reranker

    return make_reranker(name)


def _without(hits: Sequence[Hit], doc_ids: set[str], n: int) -> list[Hit]:
    kept = [h for h in hits if h.chunk.doc_id not in doc_ids][:n]
    return [replace(h, rank=i + 1) for i, h in enumerate(kept)]


class Retriever:
    """Finds the chunks for a question in a store; `search_batch` embeds all questions at once."""

    def __init__(self, store: Store, embedder: Embedder, config: RagConfig = RagConfig(), reranker=None):
        self.store = store
        self.embedder = embedder
        self.config = config
        self._reranker = reranker

    @property
    def reranker(self):
        if self._reranker is None and self.config.reranker:
            self._reranker = _load_reranker(self.config.reranker)
        return self._reranker

    def search(
        self, query: str, k: int | None = None, mode: str | None = None, filters: dict | None = None
    ) -> list[Hit]:
        return self.search_batch([query], k=k, mode=mode, filters=filters)[0]

    def search_batch(
        self,
        queries: Sequence[str],
        k: int | None = None,
        mode: str | None = None,
        filters: dict | None = None,
        exclude: Sequence[set[str]] | None = None,
    ) -> list[list[Hit]]:
        """Hits for each query; `exclude` gives, per query, document ids to leave out."""
        k = k or self.config.k
        mode = mode or self.config.mode
        if mode not in ("dense", "bm25", "hybrid"):
            raise ConfigError(f"mode={mode!r}: must be one of ('hybrid', 'dense', 'bm25')")
        if k < 1:
            raise ConfigError(f"k={k!r}: must be at least 1")
        depth = max(k, self.config.candidates) if mode == "hybrid" else k
        if self.config.reranker:
            depth = max(depth, self.config.rerank_depth)
        vectors = self.embedder.embed(list(queries)) if mode in ("dense", "hybrid") else None
        results = []
        for i, q in enumerate(queries):
            skip = exclude[i] if exclude else set()
            fetch = 2 * depth + 10 if skip else depth
            dense = self.store.search_dense(vectors[i], fetch, filters) if vectors is not None else []
            text = self.store.search_text(q, fetch, filters) if mode in ("bm25", "hybrid") else []
            if skip:
                dense, text = _without(dense, skip, depth), _without(text, skip, depth)
            if mode == "dense":
                results.append([replace(h, dense_score=h.score) for h in dense])
            elif mode == "bm25":
                results.append([replace(h, text_score=h.score) for h in text])
            else:
                c = self.config
                depth_out = max(k, c.rerank_depth) if c.reranker else k
                results.append(fuse(dense, text, depth_out, c.fusion, c.dense_weight, c.rrf_k))
            if self.config.reranker:
                results[-1] = self._rerank(q, results[-1], k)
        return results

    def _rerank(self, query: str, hits: list[Hit], k: int) -> list[Hit]:
        """Reorder by the reranker's score (the fused order breaks ties); keep the first k."""
        from .ingest import embed_text

        scores = self.reranker.score(query, [embed_text(h.chunk.title, h.chunk.text) for h in hits])
        order = sorted(range(len(hits)), key=lambda i: (-scores[i], i))[:k]
        return [replace(hits[i], score=float(scores[i]), rank=r + 1) for r, i in enumerate(order)]

    def candidates_batch(
        self, queries: Sequence[str], depth: int, filters: dict | None = None
    ) -> list[tuple[list[Hit], list[Hit]]]:
        """The raw dense and BM25 lists (`depth` each) for each query, for tuning the fusion offline."""
        vectors = self.embedder.embed(list(queries))
        return [
            (self.store.search_dense(vectors[i], depth, filters), self.store.search_text(q, depth, filters))
            for i, q in enumerate(queries)
        ]
