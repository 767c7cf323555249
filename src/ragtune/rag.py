"""Answer a question from the index: retrieve -> select context -> prompt -> generate -> cite."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace

from .config import RagConfig
from .context import Source, content_words, select_context_batch
from .documents import Hit
from .errors import InputError
from .generators import Generator, adapter_mode
from .prompts import (
    ABSTAIN,
    Messages,
    closed_book_messages,
    is_abstention,
    is_polar,
    parse_citations,
    rag_messages,
    reader_messages,
    shape_answer,
    strip_citations,
)
from .safety import StreamSanitizer, sanitize_answer
from .span_ranker import NULL_QUESTION, SpanItem, choose, likelihood_decides, load_ranker

log = logging.getLogger(__name__)
_WARNED: set[str] = set()  # warnings said once a process

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
class Evidence:
    """What the answerability gate reads: how well retrieval matched, and how sure the model is."""

    dense_top: float = 0.0  # best cosine similarity of a hit to the question
    text_top: float = 0.0  # best BM25 score of a hit
    agreement: float = 0.0  # share of the hits that both retrievers found
    context_top: float = 0.0  # best sentence relevance in the selected context
    support: float = 0.0  # share of the answer's content words in its best source
    logprob: float = 0.0  # mean log-probability per token of the answer, given the sources
    margin: float = 0.0  # extract: log-probability lead of the model's likeliest span over the runner-up
    question_cover: float = 0.0  # share of the question's content words found in the selected context
    names_cover: float = 0.0  # share of the question's names and numbers found in the retrieved text (1 if none)
    # text_top per content word of the question. A raw BM25 score grows with the question's length:
    # a gate calibrated on short synthetic questions read PubMedQA's long real ones (paper titles) as
    # answerable, 59% abstention on unanswerable ones (target 80%); per word, 89% / 5% false, and SQuAD
    # 80% / 7% (benchmarks/abstention.py, 60 calibration questions as `ragtune tune`; docs/reader.md).
    text_per_word: float = 0.0

    def vector(self) -> list[float]:
        return [getattr(self, f) for f in EVIDENCE_FEATURES]


# What a gate is fitted on: text_per_word, not text_top (kept for gates recorded before it).
EVIDENCE_FEATURES = tuple(f.name for f in fields(Evidence) if f.name != "text_top")


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
    evidence: Evidence | None = None
    confidence: float | None = None  # the gate's probability that the sources hold the answer
    abstain_reason: str = ""  # why it abstained, in words
    removed: list[str] = field(default_factory=list)  # links, images, markup the sources lack, taken out of `raw`


def check_question(question: str, config: RagConfig) -> str:
    if not isinstance(question, str) or not question.strip():
        raise InputError("the question is empty")
    if len(question) > config.max_question_chars:
        raise InputError(f"the question has {len(question)} characters; the limit is {config.max_question_chars}")
    return question.strip()


def support(answer: str, text: str) -> float:
    words = content_words(answer)
    return len(words & content_words(text)) / len(words) if words else 0.0


NOTHING_FOUND = "retrieval found no passage for the question (with the filters given, if any)"


def allowed_text(question: str, sources: Sequence[Source]) -> list[str]:
    """Where a URL in an answer must appear verbatim to stay in it: the sources and the question."""
    return [s.text for s in sources] + [question]


def make_answer(question: str, raw: str, sources: Sequence[Source], **extra) -> Answer:
    """Turn model output into an Answer: remove links, images and markup the sources do not hold
    (safety.py), parse [n] markers into citations (dropping numbers that name no given source),
    detect abstention, and measure lexical support. `raw` keeps what the model wrote, sanitised."""
    raw, removed = sanitize_answer(raw, allowed_text(question, sources))
    extra["removed"] = removed
    by_number = {s.number: s for s in sources}
    if is_abstention(raw):
        reason = "the model said the sources do not hold the answer" if sources else "the model said it does not know"
        if removed and not raw.strip():
            reason = "the answer held only links, images or markup that the sources do not contain"
        return Answer(question, ABSTAIN, raw, [], True, 0.0, sources=list(sources), abstain_reason=reason, **extra)
    text = strip_citations(shape_answer(raw))
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


@dataclass(frozen=True)
class SpanCandidate:
    text: str
    source: int  # the number of the source it is cited to
    sentence: str
    kind: str = ""  # date | number | entity | phrase (see `synth.candidates`) | ordinal | yes/no


# Spans the synthetic-question candidates miss and questions ask for: ordinals ("17th", "10th and
# 11th centuries", "1st century BC") and numbers in words ("six", "twice"; not "one", mostly a pronoun).
_ORDINAL = re.compile(
    r"\b\d{1,2}(?:st|nd|rd|th)(?:(?:\s+(?:and|or|to)\s+|-)\d{1,2}(?:st|nd|rd|th))?"
    r"(?:\s+(?:century|centuries|millennium))?(?:\s+(?:BC|BCE|AD|CE))?\b"
)
_NUMBER_WORD = re.compile(
    r"\b(?:two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|fifty|a hundred"
    r"|hundreds|thousands|millions|dozens?|twice|thrice|half)\b(?:\s+(?:times|percent|per cent|years?|days?|months?))?",
    re.I,
)
# What a question asks for, and the candidate kinds that can answer it. A span of the wrong kind
# ("1994" for "How many households ...") is the commonest wrong reply of the 135M reader.
_ASKS_NUMBER = re.compile(
    r"\bhow\s+(?:many|much|long|far|high|tall|wide|deep|large|big|old|heavy|fast|often|hot|cold|warm)\b"
    r"|\bwhat\s+(?:percentage|percent|proportion|share|number|amount|fraction|age|temperature|size|distance"
    r"|population|speed|rate|length|height|width|depth)\b",
    re.I,
)
_ASKS_TIME = re.compile(
    r"^\s*(?:since\s+|until\s+|by\s+)?when\b|\b(?:what|which)\s+(?:year|years|century|centuries|decade|date|day"
    r"|month|era|period of time)\b",
    re.I,
)
_ASKS_NAME = re.compile(r"^\s*(?:who|whom|whose|where)\b|\b(?:by|to|from|for|with|of)\s+(?:who|whom)\b", re.I)
ANSWER_KINDS = {
    "number": {"number"},
    "time": {"date", "ordinal", "number"},
    "name": {"entity", "phrase"},
}


def asked_for(question: str) -> str:
    """What a question asks for, coarsely: "number", "time", "name" (who / where), or "" (anything)."""
    if _ASKS_NUMBER.search(question):
        return "number"
    if _ASKS_TIME.search(question):
        return "time"
    if _ASKS_NAME.search(question):
        return "name"
    return ""


def is_echo(span: str, question: str) -> bool:
    """The span only repeats the question ("Normans" for "Who controlled Sicily before the
    Normans?"): an answer says something the question does not."""
    words = content_words(span)
    return bool(words) and words <= content_words(question)


def answer_spans(question: str, sources: Sequence[Source], per_sentence: int = 8) -> list[SpanCandidate]:
    """Candidates for an extracted answer: the entities, numbers, dates, ordinals, key phrases and
    noun phrases of each sentence of the sources (each span once per sentence); "yes" and "no" first
    for a yes/no question, in the first sentence. The noun phrases (`synth.candidates.noun_chunks`)
    raised the span ranker's 5-fold CV F1 (one sentence read) from 44.1 to 48.8 on 1,500 SQuAD dev
    questions (the best candidate's from 65.8 to 81.2), and `rag`'s F1 on the 448 real questions of
    benchmarks/evaluate_folder.py's held-out paragraphs from 43.5 to 51.9, no gate, 1.09x the time
    (`benchmarks/span_candidates.py`, docs/reader.md)."""
    from .chunking import split_sentences
    from .synth.candidates import noun_chunks, passage_keywords, sentence_candidates

    out: list[SpanCandidate] = []
    for s in sources:
        keywords = passage_keywords(s.text)
        for sentence in split_sentences(s.text):
            if not out and is_polar(question):
                out = [
                    SpanCandidate("yes", s.number, sentence, "yes/no"),
                    SpanCandidate("no", s.number, sentence, "yes/no"),
                ]
            seen = {c.text.lower() for c in out if c.sentence == sentence}
            found = [
                (c.text, c.kind) for c in sentence_candidates(sentence, max_candidates=per_sentence, keywords=keywords)
            ]
            found += [(m.group(0), "ordinal") for m in _ORDINAL.finditer(sentence)]
            found += [(m.group(0), "number") for m in _NUMBER_WORD.finditer(sentence)]
            found += [(t, "phrase") for t in noun_chunks(sentence)]
            for text, kind in found:
                if text.lower() not in seen:
                    seen.add(text.lower())
                    out.append(SpanCandidate(text, s.number, sentence, kind))
    return out


def plausible_spans(question: str, candidates: Sequence[SpanCandidate]) -> list[SpanCandidate]:
    """The candidates that could answer `question`: not a repeat of the question, and of the kind
    it asks for (a number for "how many", a date for "when", a name for "who" / "where") — each
    rule applied only where it leaves some candidate, so there is always something to read."""
    kept = [c for c in candidates if c.kind == "yes/no" or not is_echo(c.text, question)] or list(candidates)
    kinds = ANSWER_KINDS.get(asked_for(question))
    if kinds:
        kept = [c for c in kept if c.kind in kinds or c.kind == "yes/no"] or kept
    return kept


def top_sentences(
    questions: Sequence[str], candidates: Sequence[Sequence[SpanCandidate]], embedder, n: int
) -> list[list[tuple[str, float]]]:
    """Each question's `n` most relevant sentences with candidates, best first, with their
    relevance; the sentences of all questions are embedded in one call."""
    groups = [list(dict.fromkeys(c.sentence for c in cands)) for cands in candidates]
    vecs = embedder.embed([t for q, sentences in zip(questions, groups) for t in (q, *sentences)])
    out, row = [], 0
    for question, sentences in zip(questions, groups):
        q_words = content_words(question)
        rel = [
            float(vecs[row + i + 1] @ vecs[row]) + 0.3 * len(q_words & content_words(s)) / max(len(q_words), 1)
            for i, s in enumerate(sentences)
        ]
        order = sorted(range(len(sentences)), key=lambda i: -rel[i])[:n]
        out.append([(sentences[i], rel[i]) for i in order])
        row += len(sentences) + 1
    return out


_NAME_OR_NUMBER = re.compile(r"\b(?:[A-Z][\w'-]*|\w*\d[\w.,]*)")


def question_names(question: str) -> set[str]:
    """The names (capitalised words after the first) and numbers a question mentions, lower-cased."""
    first = re.match(r"\W*\w+", question)
    rest = question[first.end() :] if first else question
    return {w.lower().strip(".,") for w in _NAME_OR_NUMBER.findall(rest)} - {""}


def question_coverage(question: str, sources: Sequence[Source], hits: Sequence[Hit]) -> tuple[float, float]:
    """(share of the question's content words in the selected context, share of its names and
    numbers in the retrieved text — 1.0 when it has none). A question about a document the index
    lacks still finds its topic, but rarely its particular names."""
    q_words = content_words(question)
    in_context = content_words(" ".join(s.text for s in sources))
    cover = len(q_words & in_context) / len(q_words) if q_words else 0.0
    names = question_names(question)
    if not names:
        return cover, 1.0
    retrieved = set(re.findall(r"\w[\w.,]*\w|\w", " ".join(h.chunk.text for h in hits).lower()))
    retrieved |= {w.strip(".,") for w in retrieved}
    return cover, sum(n in retrieved for n in names) / len(names)


def evidence(answer: Answer, likelihood: tuple[float, float] = (0.0, 0.0)) -> Evidence:
    hits = answer.hits
    cover, names = question_coverage(answer.question, answer.sources, hits)
    both = [h for h in hits if h.dense_score is not None and h.text_score is not None]
    text_top = max((h.text_score for h in hits if h.text_score is not None), default=0.0)
    return Evidence(
        dense_top=max((h.dense_score for h in hits if h.dense_score is not None), default=0.0),
        text_top=text_top,
        text_per_word=text_top / max(len(content_words(answer.question)), 1),
        agreement=len(both) / len(hits) if hits else 0.0,
        context_top=max((s.score for s in answer.sources), default=0.0),
        support=answer.support,
        logprob=likelihood[0],
        margin=likelihood[1],
        question_cover=cover,
        names_cover=names,
    )


def apply_gate(answer: Answer, gate) -> Answer:
    """`answer` with the gate's confidence, or an abstention saying why when the gate judges its
    evidence too weak. An answer the model already refused, or one without evidence, stays as it is."""
    if gate is None or answer.abstained or answer.evidence is None:
        return answer
    p = gate.probability(answer.evidence)
    if p >= gate.threshold:
        return replace(answer, confidence=p)
    why = gate.explain(answer.evidence, p)
    return replace(answer, text=ABSTAIN, citations=[], abstained=True, confidence=p, abstain_reason=why)


@dataclass(frozen=True)
class SpanRead:
    """One question's candidate spans as the reader scored them: `items[j]` (what the span ranker
    reads) is `spans[j]`, scored as the reply to `prompts[reads[j]]`."""

    items: list
    spans: list[SpanCandidate]
    reads: list[int]
    prompts: list[Messages]


def read_spans(
    generator: Generator,
    embedder,
    questions: Sequence[str],
    contexts: Sequence[Sequence[Source]],
    config: RagConfig,
    null: bool = True,
) -> list[SpanRead | None]:
    """The extract reader's reading: each question's `config.reader_sentences` most relevant
    sentences with candidates, each read alone with the question (`reader_messages`), and every
    plausible candidate span of it scored by the model as the reply, all in one batched scoring
    call. With `null` (the span ranker reads it), the same spans are also scored as the reply to the
    sentence and `span_ranker.NULL_QUESTION`, in the same call (a yes/no question's are not: the
    model's likelihood chooses those, `span_ranker.choose`). None for a question whose sources hold
    no candidate."""
    candidates = [
        plausible_spans(q, answer_spans(q, s, config.spans_per_sentence)) for q, s in zip(questions, contexts)
    ]
    todo = [i for i, c in enumerate(candidates) if c]
    out: list[SpanRead | None] = [None] * len(questions)
    if not todo:
        return out
    ranked = top_sentences(
        [questions[i] for i in todo], [candidates[i] for i in todo], embedder, config.reader_sentences
    )
    reads = [(i, rank, sentence, rel) for i, tops in zip(todo, ranked) for rank, (sentence, rel) in enumerate(tops)]
    pools = [
        [c for c in candidates[i] if c.sentence == sentence or (rank == 0 and c.text in ("yes", "no"))]
        for i, rank, sentence, _ in reads
    ]
    prompts = [reader_messages(sentence, questions[i]) for i, _, sentence, _ in reads]
    spans = [[c.text for c in pool] for pool in pools]
    nulls = [r for r, (i, *_) in enumerate(reads) if null and not likelihood_decides(c.kind for c in candidates[i])]
    scores = score_spans(
        generator,
        prompts + [reader_messages(reads[r][2], NULL_QUESTION) for r in nulls],
        spans + [spans[r] for r in nulls],
    )
    null_scores = dict(zip(nulls, scores[len(reads) :]))
    n_tokens = iter(generator.count_tokens([c.text for pool in pools for c in pool]))
    for r, ((i, rank, sentence, rel), pool, sc) in enumerate(zip(reads, pools, scores)):
        read = out[i] or SpanRead([], [], [], [])
        out[i] = read
        read.prompts.append(prompts[r])
        for c, logprob, null_logprob in zip(pool, sc, null_scores.get(r, [0.0] * len(pool))):
            read.items.append(SpanItem(c.text, c.kind, sentence, rel, rank, logprob, next(n_tokens), null_logprob))
            read.spans.append(c)
            read.reads.append(len(read.prompts) - 1)
    return out


def score_spans(
    generator: Generator, prompts: Sequence[Messages], continuations: Sequence[Sequence[str]]
) -> list[list[float]]:
    """The generator's `score_batch`, or its `score` per prompt where it has no batch call."""
    batch = getattr(generator, "score_batch", None)
    if batch is not None:
        return batch(prompts, continuations)
    return [generator.score(p, c) for p, c in zip(prompts, continuations)]


def index_gate(index, generator: str):
    """The gate a Pipeline on `index` with `generator` (its name) uses: the one calibrated on the
    index (`ragtune tune`), else ragtune's default gate where it applies (`gate.default_gate`), else None."""
    from .gate import default_gate

    manifest = getattr(index, "manifest", None)
    return index.gate(generator) or (default_gate(generator, manifest.embedder) if manifest else None)


class Pipeline:
    """Answer questions: retrieve from `index` (None = closed book), select context, prompt,
    generate, cite or abstain. One config object says how.

        pipe = Pipeline(Index.open("my-index"), make_generator())
        ans = pipe.answer("Who built the bridge?")
        for piece in pipe.stream("..."): ...        # text pieces, then the finished Answer
    """

    def __init__(
        self, index, generator: Generator, config: RagConfig | None = None, gate=None, score_answers: bool | None = None
    ):
        self.index = index
        self.generator = generator
        self.config = index.rag_config(config) if index is not None and config is None else (config or RagConfig())
        self._retriever = index.retriever(self.config) if index is not None else None
        # The index's calibrated answerability gate, else ragtune's default one where it applies (the
        # bundled generator and embedder); `gate=False` turns it off (calibration does).
        self.gate = None if gate is False or index is None else (gate or index_gate(index, generator.name))
        if self.gate is not None:
            from .gate import check_dtype

            warning = check_dtype(self.gate, generator)
            if warning and warning not in _WARNED:
                _WARNED.add(warning)
                log.warning(warning)
        # A written answer's likelihood costs one more prompt pass: taken when a gate reads it
        # (or `score_answers`, as calibration does).
        self.score_answers = self.gate is not None if score_answers is None else score_answers
        if self.config.answer_mode == "extract" and index is not None and not hasattr(generator, "score"):
            from .errors import ConfigError

            raise ConfigError(f"answer_mode='extract': generator {generator.name!r} cannot score spans")

    def with_config(self, **changes) -> Pipeline:
        """The same index and generator with some settings changed (None values are ignored)."""
        return Pipeline(
            self.index,
            self.generator,
            replace(self.config, **{k: v for k, v in changes.items() if v is not None}),
            self.gate if self.gate is not None else False,
            self.score_answers,
        )

    def check(self, question: str) -> str:
        return check_question(question, self.config)

    def answer(self, question: str, filters: dict | None = None) -> Answer:
        """Answer one question, citing its sources or abstaining."""
        return self.answer_batch([question], filters)[0]

    def answer_batch(
        self,
        questions: Sequence[str],
        filters: dict | Sequence[dict | None] | None = None,
        exclude_docs: Sequence[set[str]] | None = None,
    ) -> list[Answer]:
        """Answer many questions; retrieval, context selection and the model run batched. Stage
        times are per question (batch time / n). `filters` is one dict for every question or a
        list with one per question (each question is retrieved with its own filters only: the
        server batches callers with different access this way). `exclude_docs` keeps given
        documents out of each question's retrieval (the gate's calibration uses it to make
        unanswerable questions)."""
        config = self.config
        questions = [check_question(q, config) for q in questions]
        if not questions:
            return []
        n = len(questions)
        per_question = _per_question(filters, n)
        t0 = time.perf_counter()
        hits, contexts = self._retrieve(questions, per_question, exclude_docs)
        t1 = time.perf_counter()
        t2 = t1
        if self._retriever is not None:
            contexts = self._select(questions, hits)
            t2 = time.perf_counter()
        if self.extracts:
            picked = self._extract_batch(questions, contexts)
            raws, likelihood, prompts = (list(x) for x in zip(*picked))
        else:
            prompts = [self._prompt(q, c) for q, c in zip(questions, contexts)]
            # Retrieval found nothing (filters, an empty index): abstain without asking the model to
            # answer from no source.
            ask = [p for p, h in zip(prompts, hits) if self._asks(h)]
            written = iter(self.generator.generate(ask, config.max_new_tokens) if ask else [])
            raws = [next(written) if self._asks(h) else ABSTAIN for h in hits]
            likelihood = self._likelihoods(prompts, raws, contexts)
        t3 = time.perf_counter()
        timings = Timings((t1 - t0) / n, (t2 - t1) / n, (t3 - t2) / n, (t3 - t0) / n)
        tokens_in = self.generator.count_tokens([self.generator.render(p) for p in prompts])
        tokens_in = [t if self._asks(h) else 0 for t, h in zip(tokens_in, hits)]
        tokens_out = self.generator.count_tokens(raws)
        return [
            self._finish(self._nothing_found(make_answer(q, raw, ctx, hits=h, timings=timings, tokens_in=ti,
                                                         tokens_out=to)), lm)  # fmt: skip
            for q, raw, ctx, h, ti, to, lm in zip(questions, raws, contexts, hits, tokens_in, tokens_out, likelihood)
        ]

    def _asks(self, hits: Sequence[Hit]) -> bool:
        """Whether the model is put a question with these hits: not when retrieval found nothing."""
        return bool(hits) or self._retriever is None

    def _nothing_found(self, answer: Answer) -> Answer:
        """An answer of a retrieving pipeline whose search found nothing says so as its reason."""
        if self._retriever is None or answer.hits or not answer.abstained:
            return answer
        return replace(answer, abstain_reason=NOTHING_FOUND)

    @property
    def extracts(self) -> bool:
        """Whether answers are chosen among spans of the sources rather than written freely."""
        mode = self.config.answer_mode
        if self._retriever is None or mode == "generate":
            return False
        can = hasattr(self.generator, "score")
        # auto: the base model extracts; a fine-tuned one writes in its trained format, except a
        # `reader` adapter, which was trained to give the span the extracting reader scores.
        adapter = getattr(self.generator, "adapter", None)
        return can and (mode == "extract" or adapter is None or adapter_mode(adapter) == "reader")

    def _extract(self, question: str, sources: list[Source]) -> tuple[str, tuple[float, float], Messages]:
        """A span reader: each of the `reader_sentences` most relevant sentences of the sources is
        read alone with the question, the model scores every candidate span of it as the reply
        (`plausible_spans`: of the kind asked, not a repeat of the question), and the span ranker
        (`span_ranker`: the likelihood with the span's place beside the question's words, its kind
        and its sentence's relevance) picks the answer, cited to its source. Returns (raw reply,
        (mean log-prob per token of the model's likeliest span, its lead over the runner-up), the
        prompt the model read). Reading one sentence rather than every source doubled F1 on 100
        SQuAD dev questions (25.4 vs 11.8); the two most relevant sentences in one prompt lost to
        one on benchmarks/counterfactual.py (F1 42.5 vs 56.6); read apart and ranked, see
        docs/reader.md."""
        return self._extract_batch([question], [sources])[0]

    def _extract_batch(
        self, questions: Sequence[str], contexts: Sequence[list[Source]]
    ) -> list[tuple[str, tuple[float, float], Messages]]:
        """`_extract` for many questions: one embedding call ranks every question's sentences, and
        the model scores every (question, sentence)'s spans in one batched call (`score_batch` when
        the generator has it)."""
        choice = self.config.span_ranker
        ranker = None if choice == "likelihood" else load_ranker(None if choice == "bundled" else choice)
        out = []
        null = bool(ranker and ranker.reads_null)
        reads = read_spans(self.generator, self._retriever.embedder, questions, contexts, self.config, null)
        for question, sources, read in zip(questions, contexts, reads):
            if read is None:
                out.append((ABSTAIN, (0.0, 0.0), rag_messages(question, sources)))
                continue
            j = choose(question, read.items, ranker)
            item, span, prompt = read.items[j], read.spans[j], read.prompts[read.reads[j]]
            # The gate's evidence is the model's own confidence, whichever span the ranker chose: the
            # likeliest span's log-prob per token and its lead over the runner-up. (The chosen span's
            # figures made the SQuAD gate refuse 15-18% of answerable questions instead of 10%.)
            likely = sorted(read.items, key=lambda it: -it.logprob)
            lead = likely[0].logprob - likely[1].logprob if len(likely) > 1 else 0.0
            number = next((s.number for s in sources if item.sentence in s.text), span.source)
            out.append((f"{span.text} [{number}]", (likely[0].logprob / max(likely[0].tokens, 1), lead), prompt))
        return out

    def _likelihood(self, prompt: Messages, raw: str, sources: list[Source]) -> tuple[float, float]:
        """Mean log-prob per token of a written answer, when a gate will read it."""
        return self._likelihoods([prompt], [raw], [sources])[0]

    def _likelihoods(
        self, prompts: Sequence[Messages], raws: Sequence[str], contexts: Sequence[list[Source]]
    ) -> list[tuple[float, float]]:
        out = [(0.0, 0.0)] * len(raws)
        if not self.score_answers or not hasattr(self.generator, "score"):
            return out
        todo = [i for i, (raw, c) in enumerate(zip(raws, contexts)) if c and not is_abstention(raw)]
        if not todo:
            return out
        scores = score_spans(self.generator, [prompts[i] for i in todo], [[raws[i]] for i in todo])
        sizes = self.generator.count_tokens([raws[i] for i in todo])
        for i, score, size in zip(todo, scores, sizes):
            out[i] = (score[0] / max(size, 1), 0.0)
        return out

    def _finish(self, answer: Answer, likelihood: tuple[float, float]) -> Answer:
        """Attach the evidence and let the gate decide whether the sources hold the answer."""
        if self._retriever is None:
            return answer
        return apply_gate(replace(answer, evidence=evidence(answer, likelihood)), self.gate)

    def stream(self, question: str, filters: dict | None = None) -> Iterator[str | Answer]:
        """Yield the answer text as the model writes it, then the finished Answer. Pieces are
        sanitised as the answer is (safety.py): text is released a word at a time, and a link,
        image, tag or URL only once it is complete and judged, so none the sources lack is shown.
        A chosen span (the extract reader) and an abstention come whole, once the gate has judged
        them; a written answer's pieces come before its verdict (the final Answer carries it)."""
        question = check_question(question, self.config)
        t0 = time.perf_counter()
        hits, sources = self._retrieve([question], _per_question(filters, 1))
        t1 = time.perf_counter()
        sources = self._select([question], hits) if self._retriever is not None else sources
        t2 = time.perf_counter()
        likelihood = None
        allowed = allowed_text(question, sources[0])
        whole = True  # the answer is shown whole at the end, after the gate has judged it
        if not self._asks(hits[0]):  # nothing to answer from: the model is not asked
            raw, likelihood, prompt = ABSTAIN, (0.0, 0.0), self._prompt(question, sources[0])
        elif self.extracts:  # a chosen span arrives whole
            raw, likelihood, prompt = self._extract(question, sources[0])
        else:  # written: shown as it comes (the gate's verdict, which reads the whole answer, comes last)
            whole = False
            prompt = self._prompt(question, sources[0])
            pieces, sanitizer = [], StreamSanitizer(allowed)
            for piece in self.generator.stream(prompt, self.config.max_new_tokens):
                pieces.append(piece)
                if shown := sanitizer.feed(piece):
                    yield shown
            if shown := sanitizer.flush():
                yield shown
            raw = "".join(pieces).strip()
        t3 = time.perf_counter()
        tin, tout = self.generator.count_tokens([self.generator.render(prompt), raw])
        tin = tin if self._asks(hits[0]) else 0
        answer = make_answer(
            question,
            raw,
            sources[0],
            hits=hits[0],
            timings=Timings(t1 - t0, t2 - t1, t3 - t2, t3 - t0),
            tokens_in=tin,
            tokens_out=tout,
        )
        final = self._finish(self._nothing_found(answer), likelihood or self._likelihood(prompt, raw, sources[0]))
        if whole:  # with its [n] marker, as a written answer's pieces have theirs
            yield final.text if final.abstained else final.raw
        yield final

    # -- stages ------------------------------------------------------------------------------
    def _retrieve(
        self, questions: list[str], filters: list[dict | None], exclude: Sequence[set[str]] | None = None
    ) -> tuple[list[list[Hit]], list[list[Source]]]:
        """Hits per question, each with its own filters: questions that share filters are searched
        in one batch (their embeddings in one call)."""
        if self._retriever is None:
            return [[] for _ in questions], [[] for _ in questions]
        c = self.config
        groups: list[tuple[dict | None, list[int]]] = []
        for i, f in enumerate(filters):
            group = next((g for g in groups if g[0] == f), None)
            if group is None:
                groups.append((f, [i]))
            else:
                group[1].append(i)
        hits: list[list[Hit]] = [[] for _ in questions]
        for f, idx in groups:
            skip = [exclude[i] for i in idx] if exclude else None
            found = self._retriever.search_batch(
                [questions[i] for i in idx], k=c.k, mode=c.mode, filters=f, exclude=skip
            )
            for i, h in zip(idx, found):
                hits[i] = h
        return hits, []

    def _select(self, questions: Sequence[str], hits: Sequence[list[Hit]]) -> list[list[Source]]:
        c = self.config
        return select_context_batch(questions, hits, self._retriever.embedder, c.context_tokens, c.dedupe_threshold)

    def _prompt(self, question: str, sources: list[Source]) -> Messages:
        return rag_messages(question, sources) if self._retriever is not None else closed_book_messages(question)


def _per_question(filters: Mapping | Sequence[Mapping | None] | None, n: int) -> list[dict | None]:
    """One filters dict (or None) per question, from one for all or a list of them."""
    if filters is None or isinstance(filters, Mapping):
        return [filters] * n
    filters = list(filters)
    if len(filters) != n:
        raise InputError(f"filters: {len(filters)} given for {n} questions; give one dict, or one per question")
    return filters
