"""Answer a question from the index: retrieve -> select context -> prompt -> generate -> cite."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from .config import RagConfig
from .context import Source, content_words, select_context
from .documents import Hit
from .errors import InputError
from .generators import Generator
from .prompts import (
    ABSTAIN,
    Messages,
    closed_book_messages,
    is_abstention,
    parse_citations,
    rag_messages,
    strip_citations,
)

SNIPPET_CHARS = 300
SUPPORT_TO_ATTRIBUTE = 0.6  # share of the answer's content words a source must hold to be credited


@dataclass(frozen=True)
class Citation:
    """A source the answer rests on. `by_model` is False when ragtune attributed it because
    the model gave no marker but the answer's words are in that source."""

    number: int
    chunk_id: str
    doc_id: str
    title: str
    snippet: str
    by_model: bool = True


@dataclass(frozen=True)
class Timings:
    retrieve_s: float = 0.0
    context_s: float = 0.0
    generate_s: float = 0.0
    total_s: float = 0.0


@dataclass(frozen=True)
class Answer:
    question: str
    text: str  # the answer without citation markers
    raw: str  # what the model wrote
    citations: list[Citation] = field(default_factory=list)
    abstained: bool = False
    support: float = 0.0  # best share of the answer's content words found in one source
    hits: list[Hit] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    timings: Timings = Timings()
    tokens_in: int = 0
    tokens_out: int = 0


def check_question(question: str, config: RagConfig) -> str:
    if not isinstance(question, str) or not question.strip():
        raise InputError("the question is empty")
    if len(question) > config.max_question_chars:
        raise InputError(f"the question has {len(question)} characters; the limit is {config.max_question_chars}")
    return question.strip()


def support(answer: str, text: str) -> float:
    words = content_words(answer)
    return len(words & content_words(text)) / len(words) if words else 0.0


def make_answer(question: str, raw: str, sources: Sequence[Source], **extra) -> Answer:
    """Turn model output into an Answer: parse [n] markers into citations (dropping numbers
    that name no given source), detect abstention, and measure lexical support."""
    by_number = {s.number: s for s in sources}
    if is_abstention(raw):
        return Answer(question, ABSTAIN, raw, [], True, 0.0, sources=list(sources), **extra)
    text = strip_citations(raw)
    cites = [
        Citation(n, by_number[n].chunk_id, by_number[n].doc_id, by_number[n].title, by_number[n].text[:SNIPPET_CHARS])
        for n in parse_citations(raw)
        if n in by_number
    ]
    best = max((support(text, s.text) for s in sources), default=0.0)
    if not cites and sources:
        s = max(sources, key=lambda s: support(text, s.text))
        if support(text, s.text) >= SUPPORT_TO_ATTRIBUTE:
            cites = [Citation(s.number, s.chunk_id, s.doc_id, s.title, s.text[:SNIPPET_CHARS], by_model=False)]
    return Answer(question, text, raw, cites, False, best, sources=list(sources), **extra)


class Pipeline:
    """Answer questions: retrieve from `index` (None = closed book), select context, prompt,
    generate, cite or abstain. One config object says how.

        pipe = Pipeline(Index.open("my-index"), make_generator())
        ans = pipe.answer("Who built the bridge?")
        for piece in pipe.stream("..."): ...        # text pieces, then the finished Answer
    """

    def __init__(self, index, generator: Generator, config: RagConfig | None = None):
        self.index = index
        self.generator = generator
        self.config = index.rag_config(config) if index is not None and config is None else (config or RagConfig())
        self._retriever = index.retriever(self.config) if index is not None else None

    def with_config(self, **changes) -> Pipeline:
        """The same index and generator with some settings changed (None values are ignored)."""
        from dataclasses import replace

        return Pipeline(
            self.index, self.generator, replace(self.config, **{k: v for k, v in changes.items() if v is not None})
        )

    def check(self, question: str) -> str:
        return check_question(question, self.config)

    def answer(self, question: str, filters: dict | None = None) -> Answer:
        """Answer one question, citing its sources or abstaining."""
        return self.answer_batch([question], filters)[0]

    def answer_batch(self, questions: Sequence[str], filters: dict | None = None) -> list[Answer]:
        """Answer many questions; retrieval and generation run batched. Stage times are per
        question (batch time / n)."""
        config = self.config
        questions = [check_question(q, config) for q in questions]
        if not questions:
            return []
        n = len(questions)
        t0 = time.perf_counter()
        hits, contexts = self._retrieve(questions, filters)
        t1 = time.perf_counter()
        t2 = t1
        if self._retriever is not None:
            contexts = [self._select(q, h) for q, h in zip(questions, hits)]
            t2 = time.perf_counter()
        prompts = [self._prompt(q, c) for q, c in zip(questions, contexts)]
        raws = self.generator.generate(prompts, config.max_new_tokens)
        t3 = time.perf_counter()
        timings = Timings((t1 - t0) / n, (t2 - t1) / n, (t3 - t2) / n, (t3 - t0) / n)
        tokens_in = self.generator.count_tokens([self.generator.render(p) for p in prompts])
        tokens_out = self.generator.count_tokens(raws)
        return [
            make_answer(q, raw, ctx, hits=h, timings=timings, tokens_in=ti, tokens_out=to)
            for q, raw, ctx, h, ti, to in zip(questions, raws, contexts, hits, tokens_in, tokens_out)
        ]

    def stream(self, question: str, filters: dict | None = None) -> Iterator[str | Answer]:
        """Yield the answer text as the model writes it, then the finished Answer."""
        question = check_question(question, self.config)
        t0 = time.perf_counter()
        hits, sources = self._retrieve([question], filters)
        t1 = time.perf_counter()
        sources = [self._select(question, hits[0])] if self._retriever is not None else sources
        t2 = time.perf_counter()
        prompt = self._prompt(question, sources[0])
        pieces = []
        for piece in self.generator.stream(prompt, self.config.max_new_tokens):
            pieces.append(piece)
            yield piece
        raw = "".join(pieces).strip()
        t3 = time.perf_counter()
        tin, tout = self.generator.count_tokens([self.generator.render(prompt), raw])
        yield make_answer(
            question,
            raw,
            sources[0],
            hits=hits[0],
            timings=Timings(t1 - t0, t2 - t1, t3 - t2, t3 - t0),
            tokens_in=tin,
            tokens_out=tout,
        )

    # -- stages ------------------------------------------------------------------------------
    def _retrieve(self, questions: list[str], filters: dict | None) -> tuple[list[list[Hit]], list[list[Source]]]:
        if self._retriever is None:
            return [[] for _ in questions], [[] for _ in questions]
        c = self.config
        return self._retriever.search_batch(questions, k=c.k, mode=c.mode, filters=filters), []

    def _select(self, question: str, hits: list[Hit]) -> list[Source]:
        c = self.config
        return select_context(question, hits, self._retriever.embedder, c.context_tokens, c.dedupe_threshold)

    def _prompt(self, question: str, sources: list[Source]) -> Messages:
        return rag_messages(question, sources) if self._retriever is not None else closed_book_messages(question)
