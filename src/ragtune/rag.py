"""Answer a question from the index: retrieve -> select context -> prompt -> generate -> cite."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

from .config import RagConfig
from .context import Source, content_words, select_context
from .documents import Hit
from .errors import InputError
from .generators import Generator
from .prompts import ABSTAIN, closed_book_messages, is_abstention, parse_citations, rag_messages, strip_citations
from .retrieval import Retriever

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


def answer_batch(
    questions: Sequence[str],
    retriever: Retriever,
    generator: Generator,
    config: RagConfig | None = None,
    filters: dict | None = None,
) -> list[Answer]:
    """Answer many questions with retrieval; stage times are per question (batch time / n)."""
    config = config or retriever.config
    questions = [check_question(q, config) for q in questions]
    if not questions:
        return []
    n = len(questions)
    t0 = time.perf_counter()
    hits = retriever.search_batch(questions, k=config.k, mode=config.mode, filters=filters)
    t1 = time.perf_counter()
    contexts = [
        select_context(q, h, retriever.embedder, config.context_tokens, config.dedupe_threshold) for q, h in zip(questions, hits)
    ]
    t2 = time.perf_counter()
    prompts = [rag_messages(q, c) for q, c in zip(questions, contexts)]
    raws = generator.generate(prompts, config.max_new_tokens)
    t3 = time.perf_counter()
    timings = Timings((t1 - t0) / n, (t2 - t1) / n, (t3 - t2) / n, (t3 - t0) / n)
    tokens_in = generator.count_tokens([generator.render(p) for p in prompts])
    tokens_out = generator.count_tokens(raws)
    return [
        make_answer(q, raw, ctx, hits=h, timings=timings, tokens_in=ti, tokens_out=to)
        for q, raw, ctx, h, ti, to in zip(questions, raws, contexts, hits, tokens_in, tokens_out)
    ]


def answer(question: str, retriever: Retriever, generator: Generator, config: RagConfig | None = None, filters: dict | None = None) -> Answer:
    """Answer one question from the index, citing its sources or abstaining."""
    return answer_batch([question], retriever, generator, config, filters)[0]


def answer_closed_book(questions: Sequence[str], generator: Generator, config: RagConfig = RagConfig()) -> list[Answer]:
    """The no-retrieval baseline: the model answers from its weights alone."""
    questions = [check_question(q, config) for q in questions]
    if not questions:
        return []
    t0 = time.perf_counter()
    prompts = [closed_book_messages(q) for q in questions]
    raws = generator.generate(prompts, config.max_new_tokens)
    per = (time.perf_counter() - t0) / len(questions)
    tin = generator.count_tokens([generator.render(p) for p in prompts])
    tout = generator.count_tokens(raws)
    return [
        Answer(q, strip_citations(r), r, [], is_abstention(r), 0.0, timings=Timings(generate_s=per, total_s=per), tokens_in=a, tokens_out=b)
        for q, r, a, b in zip(questions, raws, tin, tout)
    ]


def open_retriever(index, config: RagConfig = RagConfig()) -> Retriever:
    """The retriever for an existing index, with the embedder the index was built with."""
    from .embedders import make_embedder
    from .stores import LanceStore

    store = LanceStore.open(index)
    return Retriever(store, make_embedder(store.manifest.embedder), config)


def answer_stream(question: str, retriever: Retriever | None, generator, config: RagConfig, filters: dict | None = None):
    """Like `answer`, but yields the text as the model writes it, then the finished Answer.
    With `retriever=None` the model answers closed book."""
    question = check_question(question, config)
    t0 = time.perf_counter()
    hits = retriever.search(question, k=config.k, mode=config.mode, filters=filters) if retriever else []
    t1 = time.perf_counter()
    sources = select_context(question, hits, retriever.embedder, config.context_tokens, config.dedupe_threshold) if retriever else []
    t2 = time.perf_counter()
    prompt = rag_messages(question, sources) if retriever else closed_book_messages(question)
    pieces = []
    for piece in generator.stream(prompt, config.max_new_tokens):
        pieces.append(piece)
        yield piece
    raw = "".join(pieces).strip()
    t3 = time.perf_counter()
    tin, tout = generator.count_tokens([generator.render(prompt), raw])
    yield make_answer(question, raw, sources, hits=hits, timings=Timings(t1 - t0, t2 - t1, t3 - t2, t3 - t0), tokens_in=tin, tokens_out=tout)
