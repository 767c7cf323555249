"""Rerankers: a second, slower look at the fused candidates (a cross-encoder reads question and
passage together). Optional: `RagConfig.reranker` names a registered one or a local CrossEncoder
folder. None ships with ragtune: one trained from the bundled MiniLM on 1,200 SQuAD dev pairs
(1 epoch, 10 min on 2 cores) ranked far worse than hybrid retrieval (R@1 0.06 vs 0.72) at 10x
its latency (benchmarks/reranker.py), so it did not pay."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Reranker(Protocol):
    name: str

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        """Relevance of each text to the query; higher is more relevant."""


class CrossEncoderReranker:
    """A sentence-transformers CrossEncoder from a local folder, loaded on first use."""

    def __init__(self, path: str, batch_size: int = 32):
        self.name = str(path)
        self.batch_size = batch_size
        self._model = None

    @property
    def model(self):
        if self._model is None:
            from sentence_transformers import CrossEncoder

            self._model = CrossEncoder(self.name, device="cpu", local_files_only=True)
        return self._model

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        pairs = [(query, t) for t in texts]
        return [float(x) for x in self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False)]
