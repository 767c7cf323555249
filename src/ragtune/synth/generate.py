"""Synthetic questions from passages: sample passages across documents, pick answer spans, ask
the question-generation model for a question, keep only questions that pass every filter.

    questions, report = synthesize(list(index.chunks()), SynthConfig(n=100))
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from ..chunking import split_sentences
from ..context import Source
from ..documents import Chunk
from ..errors import ConfigError, RagtuneError
from ..evaluation.metrics import f1_score, normalize_answer
from ..fast_generators import BACKENDS
from ..finetune.data import StepReport
from ..paths import check_output
from ..prompts import rag_messages, strip_citations
from ..rag import answer_spans, support
from .candidates import Candidate, PassageContext, looks_like_prose, passage_keywords, target_candidates
from .qg import qg_messages, qg_passage, reader_messages

FILTERS = (  # (name, what it removes), in the order they run
    ("not prose", "passages that are not English prose (tables of numbers, binary-like or non-English text)"),
    ("no candidate", "sentences with no answer candidate (entity, number, date, noun phrase) that the target "
                     "scorer does not rule out"),
    ("answer not in passage", "the answer is not a verbatim span of the passage"),
    ("not a question", "the model's output is empty, junk, or not a single question"),
    ("length", "questions outside the word-count bounds"),
    ("contains the answer", "questions that give their own answer away"),
    ("echoes the answer", "questions that repeat a word of their answer (`max_echo`): they give it away in part"),
    (
        "round trip",
        "the reader, given the passage and the question, ranks no answer with F1 >= the threshold "
        "among its most likely (`round_trip_top`)",
    ),
    ("near duplicate", "questions nearly identical to one already kept"),
)


WRITER_BACKENDS = BACKENDS  # what can run the bundled question writer
# Answer candidates per sentence, likeliest first (`target_candidates`): every sentence of a document gives its
# first before any gives its second, and so on. A small folder runs out of candidates before a generous
# budget does: on benchmarks/evaluate_folder.py's 100 SQuAD paragraphs, 1519 candidates at 4 a sentence
# (a 30-minute run tried every one of the indexed 90's and kept 612 questions), 1831 at 6.
CANDIDATES_PER_SENTENCE = 6


@dataclass(frozen=True)
class SynthConfig:
    n: int = 100  # questions wanted (after every filter)
    per_doc: int = 0  # at most this many questions per document; 0 = an even share, at least 1
    seed: int = 0
    generator: str = ""  # "" = the bundled model with its question-generation adapter; else any generator, prompted
    oversample: float = 4.5  # candidates tried per question wanted, at most (about 2.4 are needed on SQuAD)
    window: int = 1  # sentences either side of the answer's sentence in the passage the model reads
    min_words: int = 4
    max_words: int = 30
    min_round_trip_f1: float = 0.5  # Alberti et al. 2019: keep a question only if the reader recovers its answer
    # ...among its `round_trip_top` most likely spans (a span reader; 1 is Alberti et al.'s filter). The
    # reader is the untrained model `rag` reads with, so the filter selects the questions `rag` answers: a
    # synthetic test then favours it over a trained `rag+ft` where real questions do not. The reader ranks
    # the spans `rag`'s extract reader chooses among (`span_candidates`: with noun phrases, a median 24 a
    # passage). On the 444 real SQuAD questions of benchmarks/evaluate_folder.py's 100 held-out paragraphs
    # (2026-12-07, run O), it ranks the gold answer first for 36%, within 3 for 65%, within 6 for 80%,
    # within 10 for 93%; rag+ft (trained on synthetic questions) minus rag: +4.0 F1 at rank 1 (n 159), +0.9
    # at 2-3 (130), +5.2 at 4-6 (68), +19.1 at 7-12 (63; benchmarks/round_trip_bias.py) — a test filtered
    # at 6 cannot see the largest gain. 10 keeps 93% of real questions and still removes a question whose
    # target the reader ranks in the bottom half of a passage's spans. (Before noun phrases, with a median
    # 12 spans: 45% first, 90% within 6, and the filter stood at 6.)
    round_trip_top: int = 10
    # The share of the answer's content words its question may repeat. The writer often frames a phrase
    # with its own words ("What is the most common practice of immunology?" -> "everyday practice"): the
    # span reader, which favours spans beside the question's words, then finds the target, and a trained
    # reader that learnt real questions' form does not. On the synthetic tests of two 30-minute runs of
    # benchmarks/evaluate_folder.py (2026-12-06), 18% and 15% of questions repeated a word of their answer
    # (6% of the 444 real questions of those paragraphs): on them rag+ft - rag was -12.4 and -8.0 F1 (n 35,
    # 30), on such real questions +11.2 and +8.0 (n 28); on the other questions -1.0 / +0.8 (real +1.7 / +2.8).
    max_echo: float = 0.0
    near_duplicate: float = 0.8  # word-set Jaccard above which two questions are the same question
    batch: int = 16
    max_new_tokens: int = 32
    reader_spans: int = 8  # candidate spans per sentence among which the span reader picks
    dtype: str = "auto"  # of the bundled/local models: bfloat16 where the CPU has it natively (~1.6x faster)
    # what runs the bundled question writer (with its adapter): transformers, or a fast backend (llama: llama.cpp
    # float32, ~2.4x transformers bfloat16 here; needs the `llama` extra). Not used with `generator`.
    writer_backend: str = "transformers"

    def __post_init__(self) -> None:
        checks = [
            (self.n >= 1, "n", ">= 1"),
            (self.per_doc >= 0, "per_doc", ">= 0"),
            (self.oversample >= 1, "oversample", ">= 1"),
            (self.window >= 0, "window", ">= 0"),
            (1 <= self.min_words <= self.max_words, "min_words", f"between 1 and max_words ({self.max_words})"),
            (0 <= self.min_round_trip_f1 <= 1, "min_round_trip_f1", "in [0, 1]"),
            (self.round_trip_top >= 1, "round_trip_top", ">= 1"),
            (0 <= self.max_echo <= 1, "max_echo", "in [0, 1]"),
            (0 < self.near_duplicate <= 1, "near_duplicate", "in (0, 1]"),
            (self.batch >= 1, "batch", ">= 1"),
            (self.dtype in ("float32", "bfloat16", "auto"), "dtype", "float32, bfloat16 or auto"),
            (self.writer_backend in WRITER_BACKENDS, "writer_backend", f"one of {', '.join(WRITER_BACKENDS)}"),
        ]
        for ok, name, want in checks:
            if not ok:
                raise ConfigError(f"{name}={getattr(self, name)!r}: must be {want}")


@dataclass(frozen=True)
class Attempt:
    """One (passage, answer) the model is asked to write a question for."""

    chunk: Chunk
    passage: str
    answer: str
    kind: str  # the candidate's kind: date | number | entity | phrase


@dataclass
class SynthQuestion:
    id: str
    question: str
    answer: str
    doc_id: str
    chunk_id: str
    title: str
    passage: str
    candidate_kind: str
    round_trip_answer: str
    round_trip_f1: float
    unanswerable: bool = False  # generated from a document kept out of the index
    round_trip_rank: int = 1  # where the target stood among the reader's spans (1 = its answer; 0 = not in its top)

    def to_record(self) -> dict:
        """A QA JSONL line that `prepare`, `finetune` and `compare` read unchanged."""
        return {
            "id": self.id, "question": self.question, "answer": self.answer, "answers": [self.answer],
            "doc_id": self.doc_id, "chunk_id": self.chunk_id, "title": self.title, "context": self.passage,
            "synthetic": True, "unanswerable": self.unanswerable, "candidate_kind": self.candidate_kind,
            "scores": {"round_trip_f1": round(self.round_trip_f1, 4), "round_trip_answer": self.round_trip_answer,
                       "round_trip_rank": self.round_trip_rank},
        }  # fmt: skip


@dataclass
class SynthReport:
    generator: str
    reader: str = ""
    documents: int = 0
    passages: int = 0
    attempts: int = 0  # questions the model was asked to write
    steps: list[StepReport] = field(default_factory=list)
    kept: int = 0
    kept_by_kind: dict[str, int] = field(default_factory=dict)
    asked_by_kind: dict[str, int] = field(default_factory=dict)  # questions asked, by the answer's kind
    kept_by_rank: dict[int, int] = field(default_factory=dict)  # kept, by the target's rank in the round trip
    documents_with_questions: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)  # a few kept questions with their passages

    @property
    def per_minute(self) -> float:
        return 60 * self.kept / self.seconds if self.seconds else 0.0

    def step(self, name: str) -> StepReport:
        return next(s for s in self.steps if s.name == name)

    def to_dict(self) -> dict:
        return {**asdict(self), "per_minute": self.per_minute,
                "acceptance": {s.name: s.removed for s in self.steps}}  # fmt: skip

    def to_markdown(self) -> str:
        lines = [
            "# Synthetic questions", "",
            f"Generator: {self.generator}",
            f"Round-trip reader: {self.reader}",
            f"Documents: {self.documents} ({self.documents_with_questions} with a kept question); "
            f"passages sampled: {self.passages}; questions asked of the model: {self.attempts}", "",
            "| filter | removed | what it removes |", "| --- | ---: | --- |",
        ]  # fmt: skip
        lines += [f"| {s.name} | {s.removed} | {dict(FILTERS)[s.name]} |" for s in self.steps]
        by_kind = ", ".join(f"{k} {self.kept_by_kind.get(k, 0)}/{n}" for k, n in sorted(self.asked_by_kind.items()))
        lines += ["", f"Kept: {self.kept} (by answer kind, kept/asked: {by_kind}) "
                  f"in {self.seconds:.0f} s: {self.per_minute:.1f} accepted per minute", ""]  # fmt: skip
        if len(self.kept_by_rank) > 1:
            ranks = ", ".join(f"{r}: {n}" for r, n in sorted(self.kept_by_rank.items()))
            lines += [f"Kept by where the round-trip reader ranked the target (1 = its answer): {ranks}", ""]
        lines += [f"> {n}" for n in self.notes] + ([""] if self.notes else [])
        for s in self.steps:
            if s.examples:
                lines += [f"## {s.name}: examples caught", ""] + [f"- {e}" for e in s.examples] + [""]
        if self.samples:
            lines += ["## Examples kept", ""]
            lines += [
                f"- **{x['question']}** → {x['answer']}  \n  _{x['context']}_ ({x['doc_id']})" for x in self.samples
            ]
        return "\n".join(lines) + "\n"


def _take(queue: list[Attempt], cap: int, window: int, rank: int, chunk: Chunk, sentences: list[str],
          per_sentence: list[tuple[int, list]]) -> None:  # fmt: skip
    """Queue the `rank`-th answer candidate of each sentence (while the queue is under `cap`)."""
    for i, cands in per_sentence:
        if rank < len(cands) and len(queue) < cap:
            cand = cands[rank]
            queue.append(Attempt(chunk, qg_passage(sentences, i, window), cand.text, cand.kind))


def plan_attempts(chunks: Sequence[Chunk], cfg: SynthConfig, rng: random.Random, report: SynthReport) -> list[Attempt]:
    """Stratified: documents take turns, each contributes before any contributes twice, and
    none exceeds its share. Within a document, passages are visited in a seeded random order."""
    by_doc: dict[str, list[Chunk]] = {}
    for c in chunks:
        by_doc.setdefault(c.doc_id, []).append(c)
    report.documents = len(by_doc)
    budget = math.ceil(cfg.n * cfg.oversample)
    share = cfg.per_doc or max(1, math.ceil(cfg.n / max(len(by_doc), 1)))
    cap = math.ceil(share * cfg.oversample)  # attempts per document: its question share, oversampled
    queues: dict[str, list[Attempt]] = {}
    for doc_id in sorted(by_doc):
        doc_chunks = by_doc[doc_id][:]
        rng.shuffle(doc_chunks)
        queue: list[Attempt] = []
        visited: list[tuple[Chunk, list[str], list[tuple[int, list]]]] = []

        for chunk in doc_chunks:
            if len(queue) >= cap:
                break
            report.passages += 1
            found = passage_candidates(chunk.text)
            if found is None:
                report.step("not prose").catch(f"{chunk.id}: {chunk.text[:120]!r}")
                continue
            sentences = [s for s, _ in found]
            order = list(range(len(sentences)))
            rng.shuffle(order)
            per_sentence = []
            for i in order:
                cands = found[i][1]
                if not cands:
                    report.step("no candidate").catch(f"{chunk.id}: {sentences[i][:120]}")
                    continue
                per_sentence.append((i, cands))
            _take(queue, cap, cfg.window, 0, chunk, sentences, per_sentence)  # one answer from each sentence first
            visited.append((chunk, sentences, per_sentence))
        # A document with fewer sentences than its share needs then gives its sentences' other answers.
        for rank in range(1, max((len(c) for v in visited for _, c in v[2]), default=0)):
            for chunk, sentences, per_sentence in visited:
                _take(queue, cap, cfg.window, rank, chunk, sentences, per_sentence)
        queues[doc_id] = queue
    plan: list[Attempt] = []
    docs = sorted(queues)
    rng.shuffle(docs)
    while len(plan) < budget and any(queues.values()):
        for d in docs:
            if queues[d] and len(plan) < budget:
                plan.append(queues[d].pop(0))
    return plan


@lru_cache(maxsize=4096)
def passage_candidates(text: str) -> tuple[tuple[str, tuple[Candidate, ...]], ...] | None:
    """Each sentence of a passage with its answer candidates, or None when it is not prose. Cached:
    `evaluate` counts the candidates (`count_candidates`, twice while planning) before `plan_attempts`
    reads the same passages, and each pass runs YAKE, the noun phrases and the target scorer."""
    if not looks_like_prose(text):
        return None
    ctx = PassageContext.of(text, passage_keywords(text))
    return tuple(
        (s, tuple(target_candidates(s, CANDIDATES_PER_SENTENCE, sentence_index=i, ctx=ctx)))
        for i, s in enumerate(split_sentences(text))
    )


def count_candidates(chunks: Iterable[Chunk], limit: int | None = None) -> int:
    """The answer candidates `plan_attempts` can draw on in `chunks` (one per sentence and answer
    span, in passages of prose): each synthetic question is written for one, so no more questions
    can come from these passages. Stops counting at `limit` (and returns it)."""
    n = 0
    for chunk in chunks:
        n += sum(len(cands) for _, cands in passage_candidates(chunk.text) or [])
        if limit is not None and n >= limit:
            return limit
    return n


def clean_question(raw: str) -> str | None:
    """The first question in the model's output, or None if there is none."""
    text = " ".join(raw.replace("Question:", " ").split()).strip(" \"'“”")
    if "?" not in text:
        return None
    q = text[: text.index("?") + 1].strip()
    return q if sum(ch.isalpha() for ch in q) >= 3 else None


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


Progress = Callable[[int, int], None]  # (kept, wanted)


def synthesize(
    chunks: Sequence[Chunk],
    cfg: SynthConfig = SynthConfig(),
    qg=None,
    reader=None,
    unanswerable: bool = False,
    progress: Progress | None = None,
    deadline_s: float | None = None,
    keep_at_least: int = 0,
    failed: list[SynthQuestion] | None = None,
) -> tuple[list[SynthQuestion], SynthReport]:
    """Questions for passages of `chunks`, each checked by every filter; with the report that says
    how many each filter removed and why. `qg` writes questions (default: the bundled model and
    its question-generation adapter, or `cfg.generator`); `reader` answers them for the
    round-trip check (default: the base generator). With `deadline_s`, no batch starts after that
    many seconds once `keep_at_least` questions are kept (`evaluate` keeps to its plan's time).
    With `failed` (a list), the questions that passed every filter but the round trip are added to it
    (round_trip_rank 0; no near-duplicate of each other or of a kept one): they cost nothing more, and
    `evaluate` trains on them — never tests on them (see TRAIN_ON_ROUND_TRIP_FAILURES there)."""
    t0 = time.perf_counter()
    qg, reader, gen_name = synth_models(cfg, qg, reader)
    report = SynthReport(
        generator=gen_name,
        reader=f"{getattr(reader, 'name', 'reader')}, "
        + (
            f"ranking the passage's candidate spans; kept when the target is among its {cfg.round_trip_top} most likely"
            if hasattr(reader, "score")
            else "answering in its own words"
        ),
        steps=[StepReport(name) for name, _ in FILTERS],
    )
    rng = random.Random(cfg.seed)
    plan = plan_attempts(chunks, cfg, rng, report)
    if not chunks:
        report.notes.append("no passages to ask about: the index or document set is empty")
    elif not plan:
        report.notes.append(
            "no passage held an answer candidate (entities, numbers, dates, key phrases) in English prose"
        )
    kept: list[SynthQuestion] = []
    kept_words: list[set] = []
    per_doc: dict[str, int] = {}
    share = cfg.per_doc or max(1, math.ceil(cfg.n / max(report.documents, 1)))
    def question(id_: str, a: Attempt, q: str, reply: str, f1: float, rank: int) -> SynthQuestion:
        return SynthQuestion(
            id=id_, question=q, answer=a.answer, doc_id=a.chunk.doc_id, chunk_id=a.chunk.id, title=a.chunk.title,
            passage=a.passage, candidate_kind=a.kind, round_trip_answer=reply, round_trip_f1=f1,
            unanswerable=unanswerable, round_trip_rank=rank,
        )  # fmt: skip

    stopped = False
    for start in range(0, len(plan), cfg.batch):
        if len(kept) >= cfg.n:
            break
        if deadline_s is not None and len(kept) >= keep_at_least and time.perf_counter() - t0 > deadline_s:
            stopped = True
            report.notes.append(
                f"stopped at the time planned for writing questions ({deadline_s:.0f} s): "
                f"{len(kept)} of the {cfg.n} asked for were kept"
            )
            break
        batch = [a for a in plan[start : start + cfg.batch] if per_doc.get(a.chunk.doc_id, 0) < share]
        ok = []
        for a in batch:
            if a.answer not in a.passage or a.answer not in a.chunk.text:
                report.step("answer not in passage").catch(f"{a.answer!r} in {a.passage[:100]!r}")
            else:
                ok.append(a)
        if not ok:
            continue
        report.attempts += len(ok)
        for a in ok:
            report.asked_by_kind[a.kind] = report.asked_by_kind.get(a.kind, 0) + 1
        raws = qg.generate([qg_messages(a.passage, a.answer) for a in ok], cfg.max_new_tokens)
        survivors = []
        for a, raw in zip(ok, raws):
            q = clean_question(raw)
            if q is None:
                report.step("not a question").catch(f"{raw[:120]!r} (answer {a.answer!r})")
            elif not cfg.min_words <= len(q.split()) <= cfg.max_words:
                report.step("length").catch(f"{q} ({len(q.split())} words)")
            elif normalize_answer(a.answer) and normalize_answer(a.answer) in normalize_answer(q):
                report.step("contains the answer").catch(f"{q} (answer {a.answer!r})")
            elif support(a.answer, q) > cfg.max_echo:  # the share of the answer's words the question repeats
                report.step("echoes the answer").catch(f"{q} (answer {a.answer!r})")
            else:
                survivors.append((a, q))
        if not survivors:
            continue
        ranked = round_trip(reader, survivors, cfg)
        for (a, q), replies in zip(survivors, ranked):
            f1s = [f1_score(r, [a.answer]) for r in replies[: cfg.round_trip_top]]
            rank = next((i for i, f in enumerate(f1s) if f >= cfg.min_round_trip_f1), None)
            reply = replies[0]
            if rank is None:
                report.step("round trip").catch(
                    f"{q} → reader said {reply[:80]!r}, target {a.answer!r} (F1 {f1s[0]:.2f})"
                )
                if failed is not None:
                    failed.append(question(f"synth-t-{len(failed):05d}", a, q, reply, f1s[0], 0))
                continue
            f1 = f1s[rank]
            words = set(normalize_answer(q).split())
            dup = next((k for k, w in zip(kept, kept_words) if _jaccard(words, w) >= cfg.near_duplicate), None)
            if dup is not None:
                report.step("near duplicate").catch(f"{q}  ≈  {dup.question}")
                continue
            if len(kept) >= cfg.n or per_doc.get(a.chunk.doc_id, 0) >= share:
                break
            kept.append(question(f"synth-{'u' if unanswerable else 'a'}-{len(kept):05d}", a, q, reply, f1, rank + 1))
            kept_words.append(words)
            per_doc[a.chunk.doc_id] = per_doc.get(a.chunk.doc_id, 0) + 1
        if progress:
            progress(len(kept), cfg.n)
    report.kept = len(kept)
    report.documents_with_questions = len(per_doc)
    if failed:
        seen = list(kept_words)
        distinct = []
        for f in failed:
            words = set(normalize_answer(f.question).split())
            if all(_jaccard(words, w) < cfg.near_duplicate for w in seen):
                distinct.append(f)
                seen.append(words)
        failed[:] = distinct
        report.notes.append(f"{len(failed)} questions that failed only the round trip were kept for training")
    for k in kept:
        report.kept_by_kind[k.candidate_kind] = report.kept_by_kind.get(k.candidate_kind, 0) + 1
        report.kept_by_rank[k.round_trip_rank] = report.kept_by_rank.get(k.round_trip_rank, 0) + 1
    report.samples = [k.to_record() for k in kept[:10]]
    report.seconds = time.perf_counter() - t0
    if chunks and len(kept) < cfg.n and not stopped:
        worst = max(report.steps, key=lambda s: s.removed)
        report.notes.append(
            f"only {len(kept)} of the {cfg.n} questions asked for survived; the filter that removed most was "
            f"'{worst.name}' ({worst.removed}): see its examples below"
            + (
                f"; {report.passages} passages were all the documents had"
                if report.attempts < cfg.n * cfg.oversample
                else ""
            )
        )
    return kept, report


def span_candidates(passage: str, answer: str, per_sentence: int = 8, question: str = "") -> list[str]:
    """The spans a span reader chooses among: those `rag`'s extract reader chooses among in the
    passage (`rag.answer_spans`: the entities, numbers, dates, ordinals, key phrases and noun phrases
    of each sentence), each once, the target among them."""
    found = answer_spans(question, [Source(1, "", "", "", passage, 1.0)], per_sentence)
    spans = list(dict.fromkeys(c.text for c in found))
    return spans if answer in spans else [*spans, answer]


def ranked_spans(reader, passage: str, question: str, answer: str, per_sentence: int = 8) -> list[str]:
    """The passage's candidate spans (`span_candidates`, `answer` among them), the span reader's most
    likely reply to `question` first."""
    spans = span_candidates(passage, answer, per_sentence, question)
    scores = reader.score(reader_messages(passage, question), spans)
    return [spans[i] for i in sorted(range(len(spans)), key=lambda i: -scores[i])]


def round_trip(reader, asked: Sequence[tuple[Attempt, str]], cfg: SynthConfig) -> list[list[str]]:
    """The reader's answers to each (attempt, question), given the attempt's passage, most likely
    first. A reader that can score continuations (`score`) is a span reader, as in Alberti et al.
    (2019): it ranks the candidate spans of the passage, and its `cfg.round_trip_top` most likely
    are returned. Any other reader answers once, in its own words, its citations stripped."""
    if hasattr(reader, "score"):
        return [ranked_spans(reader, a.passage, q, a.answer, cfg.reader_spans)[: cfg.round_trip_top] for a, q in asked]
    prompts = [
        rag_messages(q, [Source(1, a.chunk.id, a.chunk.doc_id, a.chunk.title, a.passage, 1.0)]) for a, q in asked
    ]
    return [[strip_citations(r)] for r in reader.generate(prompts, cfg.max_new_tokens)]


def synth_models(cfg: SynthConfig = SynthConfig(), qg=None, reader=None):
    """(question writer, round-trip reader, the writer's name for the report): those given, and
    for the rest the bundled model (with its question-generation adapter for the writer, run by
    `cfg.writer_backend`) or `cfg.generator`, in `cfg.dtype` when they run through transformers."""
    from ..config import DEFAULT_GENERATOR
    from ..generators import TransformersGenerator
    from ..registry import make_generator

    built = []
    if qg is None:
        if cfg.generator:
            qg = make_generator(cfg.generator)
        else:
            from .qg import bundled_adapter

            backend = "" if cfg.writer_backend == "transformers" else f"@{cfg.writer_backend}"
            qg = make_generator(DEFAULT_GENERATOR + backend, adapter=bundled_adapter())
        built.append(qg)
    if reader is None:
        reader = make_generator(cfg.generator or DEFAULT_GENERATOR)
        built.append(reader)
    for gen in built:
        if isinstance(gen, TransformersGenerator):
            gen.dtype = cfg.dtype  # before the first use, which loads the weights
    name = getattr(qg, "name", "generator") + ("" if cfg.generator else " (bundled question-generation adapter)")
    return qg, reader, name


def write_questions(questions: Sequence[SynthQuestion], report: SynthReport, out: str | Path) -> tuple[Path, Path]:
    """QA JSONL at `out`, the report beside it (`<stem>.report.md` and `.json`). Writes nothing
    but the report when no question survived, and says so. An output that cannot be written
    raises the RagtuneError of `check_output` (or one naming the file and the OS's reason)."""
    from ..evaluation.compare import write_atomic

    out = check_output(out)
    md = out.with_name(out.stem + ".report.md")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(report.to_markdown(), encoding="utf-8")
        out.with_name(out.stem + ".report.json").write_text(
            json.dumps(report.to_dict(), indent=2, default=str), encoding="utf-8"
        )
        if questions:
            write_atomic(out, "".join(json.dumps(q.to_record(), ensure_ascii=False) + "\n" for q in questions))
    except OSError as exc:  # a full disk, or the folder changed under us since the check
        raise RagtuneError(f"cannot write {exc.filename or out}: {exc.strerror or exc}") from exc
    if not questions:
        raise RagtuneError(f"no synthetic question survived the filters; {md} says why")
    return out, md
