"""The answerability gate: decide from evidence that the sources do not hold the answer.

A logistic regression over the answer's `Evidence` (retrieval scores, rank agreement, the
answer's support in the sources, the model's likelihood of its answer given them), fitted per
index on answerable vs unanswerable questions, with the threshold set so that at most a
target share of the answerable calibration questions is refused (default 10 %).

    gate = calibrate(index, gen, answerable, unanswerable)
    index.set_gate(gate, gen.name)  # ask, serve, compare and evaluate use it with this generator

Without labelled unanswerable questions, `unanswerable_by_exclusion` makes them: the same
questions asked with their own document kept out of retrieval — the hard case of a corpus that
talks about the subject but does not hold the fact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from .errors import ConfigError, InputError
from .rag import EVIDENCE_FEATURES, Answer, Evidence

MIN_EACH = 8  # calibration questions needed on each side
DEFAULT_TARGET = 0.10  # share of answerable questions the gate may refuse


@dataclass(frozen=True)
class Gate:
    """Standardised logistic regression over evidence features, and the threshold on its output."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    threshold: float
    target_false_abstention: float = DEFAULT_TARGET
    calibration: dict = field(default_factory=dict)  # sizes, rates at the threshold, the curve

    def _z(self, ev: Evidence) -> np.ndarray:
        x = np.array([getattr(ev, f) for f in self.features], dtype=float)
        return (x - np.array(self.mean)) / np.array(self.scale)

    def probability(self, ev: Evidence) -> float:
        """Probability that the sources hold the answer."""
        s = float(self._z(ev) @ np.array(self.weights)) + self.bias
        return 1.0 / (1.0 + math.exp(-max(min(s, 50.0), -50.0)))

    def explain(self, ev: Evidence, p: float) -> str:
        """Why it abstained: the confidence, and the evidence that counted most against answering."""
        push = self._z(ev) * np.array(self.weights)
        worst = [self.features[i] for i in np.argsort(push)[:2] if push[i] < 0]
        said = ", ".join(f"{_LABELS[f]} {getattr(ev, f):.2f}" for f in worst)
        return (
            f"the sources do not seem to hold the answer (confidence {p:.2f} < {self.threshold:.2f})"
            + (f"; weakest evidence: {said}" if said else "")
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Gate:
        try:
            d = dict(data)
            for k in ("features", "mean", "scale", "weights"):
                d[k] = tuple(d[k])
            return cls(**d)
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"the index's recorded gate is unreadable ({exc}); run `ragtune tune` again") from exc


_LABELS = {
    "dense_top": "best similarity",
    "text_top": "best BM25 score",
    "agreement": "retriever agreement",
    "context_top": "best sentence relevance",
    "support": "answer support",
    "logprob": "answer log-prob per token",
    "margin": "lead over the next span",
}


def fit_gate(
    answerable: Sequence[Evidence], unanswerable: Sequence[Evidence], target: float = DEFAULT_TARGET
) -> Gate:
    """Fit the gate on evidence from answerable and unanswerable questions."""
    from sklearn.linear_model import LogisticRegression

    if not 0.0 < target < 0.5:
        raise ConfigError(f"target false-abstention rate {target!r}: must be in (0, 0.5)")
    if len(answerable) < MIN_EACH or len(unanswerable) < MIN_EACH:
        raise InputError(
            f"calibrating the gate needs at least {MIN_EACH} answerable and {MIN_EACH} unanswerable questions; "
            f"got {len(answerable)} and {len(unanswerable)}"
        )
    x = np.array([e.vector() for e in [*answerable, *unanswerable]], dtype=float)
    y = np.array([1] * len(answerable) + [0] * len(unanswerable))
    keep = [i for i in range(x.shape[1]) if x[:, i].std() > 1e-9]  # e.g. margin is 0 for written answers
    x = x[:, keep]
    mean, scale = x.mean(0), x.std(0)
    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000).fit((x - mean) / scale, y)
    gate = Gate(
        tuple(EVIDENCE_FEATURES[i] for i in keep),
        tuple(mean.tolist()),
        tuple(scale.tolist()),
        tuple(model.coef_[0].tolist()),
        float(model.intercept_[0]),
        0.0,
        target,
    )
    p_ans = np.sort([gate.probability(e) for e in answerable])
    p_un = np.array([gate.probability(e) for e in unanswerable])
    # The largest threshold that refuses at most `target` of the answerable questions.
    threshold = float(p_ans[int(math.floor(target * len(p_ans)))])
    curve = []
    for t in sorted(set(np.round(np.concatenate([p_ans, p_un]), 3).tolist())):
        curve.append(
            {"threshold": t, "false_abstention": float((p_ans < t).mean()), "abstention": float((p_un < t).mean())}
        )
    calibration = {
        "answerable": len(answerable),
        "unanswerable": len(unanswerable),
        "false_abstention": float((p_ans < threshold).mean()),
        "abstention": float((p_un < threshold).mean()),
        "curve": _thin(curve, 40),
    }
    return Gate(gate.features, gate.mean, gate.scale, gate.weights, gate.bias, threshold, target, calibration)


def _thin(curve: list[dict], n: int) -> list[dict]:
    if len(curve) <= n:
        return curve
    step = (len(curve) - 1) / (n - 1)
    return [curve[round(i * step)] for i in range(n)]


def unanswerable_by_exclusion(pipeline, questions: Sequence[str], doc_ids: Sequence[str]) -> list[Answer]:
    """Answers to `questions` with each one's own document kept out of retrieval."""
    return pipeline.answer_batch(list(questions), exclude_docs=[{d} for d in doc_ids])


def calibrate(
    index,
    generator,
    answerable: Sequence[str],
    unanswerable: Sequence[str] = (),
    answerable_doc_ids: Sequence[str] = (),
    target: float = DEFAULT_TARGET,
    config=None,
) -> Gate:
    """Answer both sets through `index` and `generator` (settings `config`, default the index's;
    no gate) and fit a gate. Without `unanswerable` questions, the answerable ones are asked
    again with their own documents excluded."""
    from .rag import Pipeline

    pipeline = Pipeline(index, generator, config, gate=False, score_answers=True)
    answered = pipeline.answer_batch(list(answerable))
    if unanswerable:
        refused = pipeline.answer_batch(list(unanswerable))
    else:
        if len(answerable_doc_ids) != len(answerable):
            raise InputError("calibrating without unanswerable questions needs each answerable question's doc id")
        refused = unanswerable_by_exclusion(pipeline, answerable, answerable_doc_ids)
    # An answer the model itself refused is refused whatever the gate says: fit on the rest.
    return fit_gate(
        [a.evidence for a in answered if a.evidence and not a.abstained],
        [a.evidence for a in refused if a.evidence and not a.abstained],
        target,
    )
