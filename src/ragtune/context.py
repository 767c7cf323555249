"""Knowledge representation: from retrieved chunks keep the sentences that matter to the
question, drop near-duplicates, fit a token budget, and remember where each came from."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .chunking import split_paragraphs, split_sentences
from .documents import Hit
from .embedders import Embedder

_STOP = frozenset(
    "a an the of in on at to for from by with and or but is are was were be been being what which who whom "
    "whose when where why how did do does done has have had it its this that these those as into than then "
    "there their they he she his her him i you we our your not no".split()
)


def content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"\w+", text.lower()) if w not in _STOP}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


@dataclass(frozen=True)
class Source:
    """A numbered source in the prompt: the selected sentences of one chunk, in their order."""

    number: int
    chunk_id: str
    doc_id: str
    title: str
    text: str
    score: float  # the best sentence's relevance


@dataclass(frozen=True)
class _Sentence:
    hit: int
    order: int
    text: str
    words: frozenset


def select_context(
    question: str,
    hits: Sequence[Hit],
    embedder: Embedder,
    budget_tokens: int = 320,
    dedupe_threshold: float = 0.8,
) -> list[Source]:
    """Rank every sentence of the hits by relevance to the question (cosine of embeddings,
    plus the share of the question's content words it contains, plus a small bonus for the
    hit's rank), then take the best until the budget is spent. Sentences that speak to the model
    rather than about the topic (instructions planted in a document, safety.drop_instructions)
    are never selected."""
    return select_context_batch([question], [hits], embedder, budget_tokens, dedupe_threshold)[0]


def select_context_batch(
    questions: Sequence[str],
    hits: Sequence[Sequence[Hit]],
    embedder: Embedder,
    budget_tokens: int = 320,
    dedupe_threshold: float = 0.8,
) -> list[list[Source]]:
    """`select_context` for many questions: their sentences are embedded and counted in one
    call each, which is where the time goes."""
    split = [_sentences(h, dedupe_threshold) for h in hits]
    texts = [t for q, sents in zip(questions, split) if sents for t in (q, *(s.text for s in sents))]
    vecs = embedder.embed(texts) if texts else None
    sizes = embedder.count_tokens([s.text for sents in split for s in sents])
    out, row, at = [], 0, 0
    for q, h, sents in zip(questions, hits, split):
        if not sents:
            out.append([])
            continue
        n = len(sents)
        out.append(_choose(q, h, sents, vecs[row : row + n + 1], sizes[at : at + n], embedder, budget_tokens))
        row, at = row + n + 1, at + n
    return out


def _sentences(hits: Sequence[Hit], dedupe_threshold: float) -> list[_Sentence]:
    from .safety import drop_instructions

    sentences: list[_Sentence] = []
    for h_i, hit in enumerate(hits):
        order = 0
        for para in split_paragraphs(drop_instructions(hit.chunk.text)[0]):
            for s in split_sentences(para):
                words = frozenset(content_words(s))
                # A near-duplicate of a sentence already seen (overlapping chunks, copied text) adds nothing.
                if any(jaccard(words, o.words) >= dedupe_threshold for o in sentences) or not s.strip():
                    continue
                sentences.append(_Sentence(h_i, order, s, words))
                order += 1
    return sentences


def _choose(
    question: str,
    hits: Sequence[Hit],
    sentences: list[_Sentence],
    vecs: np.ndarray,
    sizes: list[int],
    embedder: Embedder,
    budget_tokens: int,
) -> list[Source]:
    """The best sentences within the budget, grouped by hit; `vecs` = question then sentences."""
    cos = vecs[1:] @ vecs[0]
    q_words = content_words(question)
    overlap = np.array([len(q_words & s.words) / max(len(q_words), 1) for s in sentences])
    rank_bonus = np.array([0.05 / (1 + s.hit) for s in sentences])
    scores = cos + 0.3 * overlap + rank_bonus

    chosen: list[int] = []
    used = 0
    for i in np.argsort(-scores, kind="stable"):
        if used + sizes[i] > budget_tokens:
            if not chosen:  # always give at least the best sentence, cut to the budget
                words = sentences[i].text.split()
                keep = max(1, int(len(words) * budget_tokens / max(sizes[i], 1)))
                cut = " ".join(words[:keep])
                sentences[i] = _Sentence(sentences[i].hit, sentences[i].order, cut, sentences[i].words)
                chosen.append(int(i))
                used += embedder.count_tokens([cut])[0]  # what is left of the budget is for the others
            continue
        chosen.append(int(i))
        used += sizes[i]

    by_hit: dict[int, list[int]] = {}
    for i in chosen:
        by_hit.setdefault(sentences[i].hit, []).append(i)
    out = []
    for number, h_i in enumerate(sorted(by_hit), start=1):
        idx = sorted(by_hit[h_i], key=lambda i: sentences[i].order)
        hit = hits[h_i]
        out.append(
            Source(
                number=number,
                chunk_id=hit.chunk.id,
                doc_id=hit.chunk.doc_id,
                title=hit.chunk.title,
                text=" ".join(sentences[i].text for i in idx),
                score=float(max(scores[i] for i in idx)),
            )
        )
    return out
