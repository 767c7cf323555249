"""Answer and retrieval metrics.

EM and F1 follow the official SQuAD v1.1 evaluation script's rules: lower-case, strip
punctuation and the articles a/an/the, collapse whitespace; the max over gold answers.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

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


def first_gold_rank(hits: Sequence[Hit], gold_doc_ids: Sequence[str]) -> int | None:
    gold = set(gold_doc_ids)
    return next((h.rank for h in hits if h.chunk.doc_id in gold), None)


def retrieval_scores(results: Sequence[Sequence[Hit]], golds: Sequence[Sequence[str]], ks: Sequence[int] = (1, 5, 10)) -> RetrievalScores:
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

    if not predictions:
        return 0.0
    n_refs = max(len(g) for g in golds)
    # sacrebleu wants one list per reference position; short answers get their first gold repeated.
    refs = [[(g[i] if i < len(g) else g[0]) for g in golds] for i in range(n_refs)]
    return float(sacrebleu.corpus_bleu(list(predictions), refs).score)


def sentence_bleu(prediction: str, golds: Sequence[str]) -> float:
    """Sentence BLEU (sacrebleu, exponential smoothing, 0-100) against all gold answers."""
    import sacrebleu

    if not prediction.strip() or not golds:
        return 0.0
    return float(sacrebleu.sentence_bleu(prediction, list(golds)).score)
