"""Answer and retrieval metrics.

EM and F1 follow the official SQuAD v1.1 evaluation script's rules: lower-case, strip
punctuation and the articles a/an/the, collapse whitespace; the max over gold answers.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from ..documents import Hit

_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    return max((float(normalize_answer(prediction) == normalize_answer(g)) for g in golds), default=0.0)


def _f1(prediction: str, gold: str) -> float:
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, golds: Sequence[str]) -> float:
    return max((_f1(prediction, g) for g in golds), default=0.0)


@dataclass(frozen=True)
class RetrievalScores:
    n: int
    recall_at: dict[int, float]  # k -> share of questions with a gold document in the top k
    mrr_at_10: float

    def as_dict(self) -> dict[str, float]:
        """{"recall@1": ..., "recall@5": ..., "mrr@10": ...} for reports and JSON."""
        return {**{f"recall@{k}": v for k, v in self.recall_at.items()}, "mrr@10": self.mrr_at_10}


def first_gold_rank(hits: Sequence[Hit], gold_doc_ids: Sequence[str]) -> int | None:
    gold = set(gold_doc_ids)
    return next((h.rank for h in hits if h.chunk.doc_id in gold), None)


def retrieval_scores(
    results: Sequence[Sequence[Hit]], golds: Sequence[Sequence[str]], ks: Sequence[int] = (1, 5, 10)
) -> RetrievalScores:
    """Recall@k and MRR@10 against gold document ids (a chunk counts for its document)."""
    ranks = [first_gold_rank(h, g) for h, g in zip(results, golds)]
    n = len(ranks)
    recall = {k: sum(1 for r in ranks if r is not None and r <= k) / max(n, 1) for k in ks}
    mrr = sum(1.0 / r for r in ranks if r is not None and r <= 10) / max(n, 1)
    return RetrievalScores(n, recall, mrr)


def rouge_l(prediction: str, golds: Sequence[str]) -> float:
    """ROUGE-L F-measure (Google's rouge-score, stemmed), max over gold answers."""
    from rouge_score import rouge_scorer

    scorer = _ROUGE.get("s") or _ROUGE.setdefault("s", rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True))
    return max((scorer.score(g, prediction)["rougeL"].fmeasure for g in golds), default=0.0)


_ROUGE: dict = {}


def corpus_bleu(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (sacrebleu, 0-100) with every gold answer as a reference."""
    import sacrebleu

    if len(predictions) != len(golds):
        raise ValueError(f"corpus_bleu: {len(predictions)} predictions but {len(golds)} gold answer lists")
    if not predictions:
        return 0.0
    n_refs = max(1, max(len(g) for g in golds))
    # sacrebleu wants one list per reference position; short answers get their first gold repeated
    # (a question without gold answers gets an empty reference).
    refs = [[(g[i] if i < len(g) else g[0] if g else "") for g in golds] for i in range(n_refs)]
    return _points(sacrebleu.corpus_bleu(list(predictions), refs).score)


def _points(score: float) -> float:
    """A BLEU score held to its documented 0-100 (sacrebleu's float sums can land at 100.00000000000004)."""
    return min(100.0, max(0.0, float(score)))


def sentence_bleu(prediction: str, golds: Sequence[str]) -> float:
    """Sentence BLEU (sacrebleu, exponential smoothing, 0-100) against all gold answers."""
    import sacrebleu

    if not prediction.strip() or not golds:
        return 0.0
    return _points(sacrebleu.sentence_bleu(prediction, list(golds)).score)


# -- the metric table: aggregation, the report's columns and the summary table iterate over it --


class QuestionKind(str, Enum):
    """What a held-out question tests."""

    ANSWERABLE = "answerable"  # its gold document is in the index
    UNANSWERABLE = "unanswerable"  # its gold document is kept out: abstaining is right
    EDITED = "edited"  # asked again after a fact in its document was changed


@dataclass(frozen=True)
class MetricSpec:
    key: str  # key in a strategy's aggregates (and, for per-answer metrics, the EvalRecord field)
    label: str  # the report's column
    unit: str  # "points" (0-100), "share" (0-1, shown as %), "score" (0-1), "s"
    higher_is_better: bool
    short: str = ""  # the terminal summary's column; "" = not in the summary
    per_answer: bool = False  # scored per answerable question, bootstrapped, paired-tested
    scale: float = 100.0  # per-answer value (0-1) -> aggregate unit

    def format(self, value, interval: bool = False) -> str:
        """`value` is a number or {mean, low, high}; None / NaN show as a dash."""
        if isinstance(value, dict):
            mean = self.format(value["mean"])
            lo, hi = (self.format(value[k]).rstrip("%") for k in ("low", "high"))
            return f"{mean} <small>[{lo}, {hi}]</small>" if interval else mean
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "–"
        if self.unit == "share":
            return f"{100 * value:.0f}%"
        if self.unit == "points":
            return f"{value:.1f}"
        return f"{value:.1f}" if abs(value) >= 1 else f"{value:.3f}"


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("f1", "F1", "points", True, "F1", per_answer=True),
    MetricSpec("em", "EM", "points", True, "EM", per_answer=True),
    MetricSpec("rouge_l", "ROUGE-L", "points", True, per_answer=True),
    MetricSpec("bleu", "BLEU", "points", True, per_answer=True, scale=1.0),  # sacrebleu is already 0-100
    MetricSpec("abstain_unanswerable", "abstains when it should", "share", True, "abstain(unans)"),
    MetricSpec("false_abstention", "false abstention", "share", False),
    MetricSpec("unsupported", "unsupported answers", "share", False, "unsupported"),
    MetricSpec("fresh_rate", "fresh after edits", "share", True, "fresh"),
    MetricSpec("citation_precision", "citation precision", "share", True, "cite-P"),
    MetricSpec("citation_recall", "citation recall", "share", True),
    MetricSpec("recall_at_k", "retrieval recall@k", "share", True),
    MetricSpec("mrr", "MRR", "score", True),
    # One question asked alone (compare.latency_alone), and the time per answer when answered in
    # batches (records' timings: a batch's time over its questions, so its percentiles are of batches).
    MetricSpec("latency_alone_s", "latency, one question alone (s)", "s", False, "alone s"),
    MetricSpec("latency_p50_s", "seconds per answer, batched", "s", False),
)
METRIC = {m.key: m for m in METRICS}
PAIRED = tuple(m for m in METRICS if m.key in ("f1", "em"))  # differences tested between every pair of strategies
