"""Strategies (a generator, with or without retrieval) and the per-question records they produce."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..documents import QAExample
from ..errors import ConfigError, ModelNotFoundError
from ..finetune.run import RunFolder
from ..generators import Generator
from ..rag import Answer, Pipeline
from ..registry import make_generator
from .metrics import QuestionKind, exact_match, f1_score, first_gold_rank, rouge_l, sentence_bleu


@dataclass(frozen=True)
class Strategy:
    """`base` (closed book), `rag`, `ft` (adapter, closed book), `rag+ft` (adapter + retrieval), or any other mix."""

    name: str
    retrieval: bool
    adapter: str = ""  # a fine-tuning run folder (or its adapter/ or model/)
    generator: str = ""  # registry name, HF folder or .gguf; "" = the adapter's base model, else the default

    def run(self) -> RunFolder | None:
        if not self.adapter:
            return None
        try:
            return RunFolder.open(self.adapter)
        except ModelNotFoundError as exc:
            raise ConfigError(f"strategy {self.name!r}: {exc}") from exc

    def training_run(self) -> dict:
        """The adapter's training results (wall time, examples, config) if ragtune trained it."""
        run = self.run()
        return {**run.results, "config": run.config} if run is not None and run.results else {}


@dataclass
class EvalRecord:
    """One question answered by one strategy, with every score the comparison needs."""

    strategy: str
    question_id: str
    kind: str  # a QuestionKind value: answerable | unanswerable | edited
    question: str
    gold: list[str]
    answer: str
    abstained: bool
    em: float = 0.0
    f1: float = 0.0
    rouge_l: float = 0.0
    bleu: float = 0.0
    support: float = 0.0
    unsupported: bool = False  # answered, but its words are not in the retrieved text
    retrieved: list[str] = field(default_factory=list)  # chunk ids
    gold_rank: int | None = None
    cited: list[str] = field(default_factory=list)  # chunk ids
    cited_snippets: list[str] = field(default_factory=list)
    citation_precision: float | None = None  # share of citations that point into a gold document
    citation_recall: float | None = None  # 1 if a gold document is cited
    fresh: bool | None = None  # edited questions: answered with the new value
    stale: bool | None = None  # edited questions: answered with the old value
    retrieve_s: float = 0.0
    context_s: float = 0.0
    generate_s: float = 0.0
    total_s: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0


def load_generator(strategy: Strategy, cache: dict) -> Generator:
    run = strategy.run()
    key = (strategy.generator, str(run.weights) if run else "")
    if key not in cache:
        cache[key] = make_generator(strategy.generator or None, adapter=run.weights if run else None)
    return cache[key]


def run_strategy(
    strategy: Strategy, examples: Sequence[QAExample], kind: str, pipeline: Pipeline, support_threshold: float
) -> list[EvalRecord]:
    """Answer every example with the strategy's pipeline and score each answer."""
    if not examples:
        return []
    if strategy.retrieval and pipeline.index is None:
        raise ConfigError(f"strategy {strategy.name!r} uses retrieval but the experiment has no index")
    answers = pipeline.answer_batch([e.question for e in examples])
    return [score(strategy.name, e, a, kind, support_threshold) for e, a in zip(examples, answers)]


def score(strategy: str, ex: QAExample, ans: Answer, kind: str, support_threshold: float) -> EvalRecord:
    gold_docs = set(ex.doc_ids)
    answerable = kind != QuestionKind.UNANSWERABLE
    rec = EvalRecord(
        strategy=strategy,
        question_id=ex.id,
        kind=QuestionKind(kind).value,
        question=ex.question,
        gold=list(ex.answers),
        answer=ans.text,
        abstained=ans.abstained,
    )
    if answerable and not ans.abstained:
        rec.em = exact_match(ans.text, ex.answers)
        rec.f1 = f1_score(ans.text, ex.answers)
        rec.rouge_l = rouge_l(ans.text, ex.answers)
        rec.bleu = sentence_bleu(ans.text, ex.answers)
    rec.support = ans.support
    rec.unsupported = bool(ans.hits) and not ans.abstained and ans.support < support_threshold
    rec.retrieved = [h.chunk.id for h in ans.hits]
    rec.gold_rank = first_gold_rank(ans.hits, ex.doc_ids) if ans.hits else None
    rec.cited = [c.chunk_id for c in ans.citations]
    rec.cited_snippets = [c.snippet for c in ans.citations]
    if ans.citations and answerable:
        rec.citation_precision = sum(c.doc_id in gold_docs for c in ans.citations) / len(ans.citations)
    if answerable and ans.hits and not ans.abstained:
        rec.citation_recall = float(any(c.doc_id in gold_docs for c in ans.citations))
    t = ans.timings
    rec.retrieve_s, rec.context_s, rec.generate_s, rec.total_s = t.retrieve_s, t.context_s, t.generate_s, t.total_s
    rec.tokens_in, rec.tokens_out = ans.tokens_in, ans.tokens_out
    return rec
