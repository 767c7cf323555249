"""The extract reader's span ranker: which candidate span answers the question.

The reader (`Pipeline._extract_batch`) gives the bundled 135M model each of the most relevant
sentences with the question and scores every candidate span of it as the reply. The model's
log-likelihood alone picks the right span less often than it could: it favours short spans and
spans it expects from memory ("1773" where the passage says Priestley found oxygen in 1735), and it
does not see what the classic reading baselines see (Richardson et al. 2013; Rajpurkar et al.
2016's sliding window): the answer usually sits next to the words the question repeats ("five
gold" for "how many gold medals").

So the choice is a conditional logit (a softmax over one question's candidates) over a few
features of each span: its likelihood (sum, per token, gap to the best), the same less its
likelihood under a content-free question (`NULL_QUESTION`; surface-form competition, Holtzman et
al. 2021), how close it sits to the question's words in its sentence, whether it repeats the
question, its kind and whether that is the kind asked for, and its sentence's relevance and rank.
The weights ship as package data (`data/span-ranker.json`, a few numbers), fitted by
`scripts/fit_span_ranker.py` on SQuAD v1.1 dev questions from articles outside
`synth.qg.HELD_OUT_ARTICLES` (so the demo's articles and the benchmarks' held-out ones are never
fitted on).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from .context import content_words

KINDS = ("entity", "number", "date", "phrase", "ordinal")
FEATURES = (
    "logprob",  # log-likelihood of the span as the whole reply to its sentence and the question
    "logprob_per_token",
    "logprob_gap",  # to the best of the question's candidates (0 for it)
    "logprob_best",  # 1 for the model's own choice
    "log_distance",  # log(1 + words between the span and the nearest question word in its sentence)
    "question_words_within_3",  # share of the question's content words within 3 words of the span
    "question_words_within_8",
    "echo",  # share of the span's words the question already holds
    "words",
    "kind_asked",  # the span's kind is one the question asks for (a number for "how many" ...)
    *(f"kind_{k}" for k in KINDS),
    "sentence_relevance",  # the sentence's relevance to the question (as `rag.top_sentences` ranks them)
    "sentence_rank",  # 0 for the most relevant sentence, 1 for the next ...
    # The likelihood with the question minus the likelihood under `NULL_QUESTION` (pointwise mutual
    # information): how much the question, not the span's form, makes it likely. Sum, per token, gap
    # to the best, is the best. +2.0 F1 in 5-fold CV (benchmarks/span_ranker_pmi.py, docs/reader.md).
    "pmi",
    "pmi_per_token",
    "pmi_gap",
    "pmi_best",
)
# A content-free question: each read sentence's spans are also scored as the reply to it.
NULL_QUESTION = "What is the answer?"
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class SpanItem:
    """One candidate span as the ranker sees it."""

    text: str
    kind: str
    sentence: str
    relevance: float
    rank: int
    logprob: float
    tokens: int
    null_logprob: float = 0.0  # the span's log-likelihood as the reply to its sentence and `NULL_QUESTION`


def span_features(question: str, items: Sequence[SpanItem]) -> np.ndarray:
    """The `FEATURES` of every candidate of one question (rows in the order of `items`)."""
    from .rag import ANSWER_KINDS, asked_for

    q_words = content_words(question)
    asked = ANSWER_KINDS.get(asked_for(question), set())
    best = max((it.logprob for it in items), default=0.0)
    pmi = [it.logprob - it.null_logprob for it in items]
    best_pmi = max(pmi, default=0.0)
    sentence_words: dict[str, list[str]] = {}
    rows = []
    for it, p in zip(items, pmi):
        words = sentence_words.setdefault(it.sentence, [w.lower() for w in _WORD.findall(it.sentence)])
        span = [w.lower() for w in _WORD.findall(it.text)]
        distance, near3, near8 = _proximity(words, span, q_words)
        rows.append(
            [
                it.logprob,
                it.logprob / max(it.tokens, 1),
                it.logprob - best,
                float(it.logprob == best),
                math.log1p(distance),
                near3,
                near8,
                len(set(span) & q_words) / max(len(set(span)), 1),
                len(span),
                float(it.kind in asked),
                *(float(it.kind == k) for k in KINDS),
                it.relevance,
                float(it.rank),
                p,
                p / max(it.tokens, 1),
                p - best_pmi,
                float(p == best_pmi),
            ]
        )
    return np.array(rows, dtype=float).reshape(len(items), len(FEATURES))


def span_start(words: list[str], span: list[str]) -> int | None:
    """Where the word list `span` first starts in `words`, or None."""
    return next((i for i in range(len(words) - len(span) + 1) if words[i : i + len(span)] == span), None)


def _proximity(words: list[str], span: list[str], q_words: set[str]) -> tuple[int, float, float]:
    """(words between the span and the nearest question word outside it, share of the question's
    words within 3 and within 8 words of it); a span not found in its sentence is far from all."""
    start = span_start(words, span)
    if not span or start is None:
        return len(words), 0.0, 0.0
    end = start + len(span)
    outside = [i for i, w in enumerate(words) if w in q_words and not start <= i < end]
    if not outside:
        return len(words), 0.0, 0.0
    distance = min(start - i if i < start else i - end + 1 for i in outside)

    def near(window: int) -> float:
        return len({words[i] for i in outside if start - window <= i < end + window}) / max(len(q_words), 1)

    return distance, near(3), near(8)


@dataclass(frozen=True)
class SpanRanker:
    """Standardised linear scores over `FEATURES`; the highest-scoring span is the answer."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    fitted_on: dict

    def scores(self, question: str, items: Sequence[SpanItem]) -> np.ndarray:
        if not items:
            return np.zeros(0)
        x = span_features(question, items)[:, [FEATURES.index(f) for f in self.features]]
        return ((x - np.array(self.mean)) / np.array(self.scale)) @ np.array(self.weights)

    @property
    def reads_null(self) -> bool:
        """Whether it reads the spans' likelihood under `NULL_QUESTION` (a second prompt per sentence)."""
        return any(f.startswith("pmi") for f in self.features)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")


def choose(question: str, items: Sequence[SpanItem], ranker: SpanRanker | None) -> int:
    """The answer's index among `items`: the ranker's pick, or the model's likeliest span without
    a ranker and for a yes/no question — SQuAD, where the ranker was fitted, has none, and ranking
    them took PubMedQA's answerable F1 from 41.0 to 7.0 (spans beside the question's words won
    over "yes" / "no", which sit in no sentence). Ties go to the earlier item."""
    if ranker is None or likelihood_decides(it.kind for it in items):
        return max(range(len(items)), key=lambda j: (items[j].logprob, -j))
    return int(np.argmax(ranker.scores(question, items)))


def likelihood_decides(kinds: Iterable[str]) -> bool:
    """Whether the model's likelihood, not the ranker, chooses among candidates of these kinds: a
    yes/no question's (`choose`; `rag.read_spans` scores no content-free prompt for them)."""
    return "yes/no" in kinds


@lru_cache(maxsize=4)
def load_ranker(path: str | None = None) -> SpanRanker:
    """The bundled ranker (or one saved at `path`). It may score a subset of `FEATURES` (one fitted
    before the PMI features, say), none this ragtune does not compute."""
    text = Path(path).read_text() if path else resources.files("ragtune").joinpath("data/span-ranker.json").read_text()
    data = json.loads(text)
    ranker = SpanRanker(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
    unknown = [f for f in ranker.features if f not in FEATURES]
    if unknown or not len(ranker.features) == len(ranker.mean) == len(ranker.scale) == len(ranker.weights):
        what = f"features this ragtune does not compute: {unknown}" if unknown else "mismatched lengths"
        raise ValueError(f"span ranker {path or 'data/span-ranker.json'}: {what}")
    return ranker


def fit_ranker(
    groups: Sequence[tuple[np.ndarray, np.ndarray]], l2: float = 1.0, fitted_on: dict | None = None
) -> SpanRanker:
    """Fit the conditional logit on (features of one question's candidates, each candidate's F1
    against the gold answers): the target spreads over the candidates with the best F1, for
    questions where that F1 is at least 0.5 and there is a choice to make. L2-penalised, L-BFGS."""
    from scipy.optimize import minimize

    data = [(x, (f == f.max()) / (f == f.max()).sum()) for x, f in groups if len(f) > 1 and f.max() >= 0.5]
    if not data:
        raise ValueError("no question with a right candidate and a choice among several: nothing to fit")
    stacked = np.concatenate([x for x, _ in data])
    mean, scale = stacked.mean(0), stacked.std(0) + 1e-6
    data = [((x - mean) / scale, t) for x, t in data]

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        total, grad = 0.0, np.zeros_like(w)
        for x, t in data:
            z = x @ w
            p = np.exp(z - z.max())
            p /= p.sum()
            total -= float(t @ np.log(p + 1e-12))
            grad -= x.T @ (t - p)
        return (total + l2 * float(w @ w)) / len(data), (grad + 2 * l2 * w) / len(data)

    w = minimize(loss, np.zeros(stacked.shape[1]), jac=True, method="L-BFGS-B").x
    return SpanRanker(FEATURES, tuple(mean.tolist()), tuple(scale.tolist()), tuple(w.tolist()), fitted_on or {})
