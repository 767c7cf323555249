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

Until an index has its own gate, the bundled generator and embedder use ragtune's default one
(`default_gate`, `data/default-gate.json`, fitted by `scripts/fit_default_gate.py` on SQuAD dev
articles that no benchmark tests on): an answer is never shown unchecked, and the reason for an
abstention says the gate was not calibrated on this index.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources

import numpy as np

from .errors import ConfigError, InputError
from .rag import EVIDENCE_FEATURES, Answer, Evidence

MIN_EACH = 8  # calibration questions needed on each side
DEFAULT_TARGET = 0.10  # share of answerable questions the gate may refuse
RIGHT_F1 = 0.5  # a calibration answer this close to the known one counts as right


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
        z, w = self._z(ev), np.array(self.weights)
        push = z * w
        # Only evidence that is weak (below its calibration mean) and counts for answering is named:
        # a feature with a negative weight (a correction among correlated features) never reads as a reason.
        worst = [self.features[i] for i in np.argsort(push)[:2] if push[i] < 0 and z[i] < 0 and w[i] > 0]
        said = ", ".join(f"{_LABELS[f]} {getattr(ev, f):.2f}" for f in worst)
        return f"the sources do not seem to hold the answer (confidence {p:.2f} < {self.threshold:.2f})" + (
            f"; weakest evidence: {said}" if said else ""
        ) + ("; ragtune's default gate, not calibrated on this index (`ragtune tune` calibrates one)"
             if self.is_default else "")  # fmt: skip

    @property
    def is_default(self) -> bool:
        """Whether this is ragtune's bundled default gate rather than one calibrated on the index."""
        return bool(self.calibration.get("default"))

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
    "text_per_word": "best BM25 score per question word",
    "agreement": "retriever agreement",
    "context_top": "best sentence relevance",
    "support": "answer support",
    "logprob": "answer log-prob per token",
    "margin": "lead over the next span",
    "question_cover": "question words in the sources",
    "names_cover": "question's names found",
}


def fit_gate(
    answerable: Sequence[Evidence],
    unanswerable: Sequence[Evidence],
    target: float = DEFAULT_TARGET,
    correct: Sequence[bool] | None = None,
    nonnegative: bool = False,
) -> Gate:
    """Fit the gate on evidence from answerable and unanswerable questions.

    A class-balanced L2 logistic regression over standardised evidence. Every feature is one where
    more means "more likely answerable"; `nonnegative=True` keeps the weights >= 0 accordingly, but
    measured on the same recorded answers (benchmarks/abstention.py, 39 / 33 synthetic calibration
    questions) the free fit generalised better — SQuAD 81 % abstention / 10 % false abstention vs
    81 % / 15 % constrained, PubMedQA 88 % / 2 % vs 73 % / 2 % — its negative weights acting as
    corrections among correlated features (similarity vs sentence relevance); `explain` never
    names those. `correct` (one per answerable question, where the right answer is known) fits
    the weights on the answerable questions answered right only — a wrong answer's evidence looks
    like an unanswerable one's — while the threshold still refuses at most `target` of all of them."""
    if not 0.0 < target < 0.5:
        raise ConfigError(f"target false-abstention rate {target!r}: must be in (0, 0.5)")
    if len(answerable) < MIN_EACH or len(unanswerable) < MIN_EACH:
        raise InputError(
            f"calibrating the gate needs at least {MIN_EACH} answerable and {MIN_EACH} unanswerable questions; "
            f"got {len(answerable)} and {len(unanswerable)}"
        )
    if correct is not None and len(correct) != len(answerable):
        raise InputError(f"correct: {len(correct)} labels for {len(answerable)} answerable questions")
    positives = list(answerable)
    if correct is not None and sum(map(bool, correct)) >= MIN_EACH:
        positives = [e for e, ok in zip(answerable, correct) if ok]
    x = np.array([e.vector() for e in [*positives, *unanswerable]], dtype=float)
    y = np.array([1.0] * len(positives) + [0.0] * len(unanswerable))
    keep = [i for i in range(x.shape[1]) if x[:, i].std() > 1e-9]  # e.g. margin is 0 for written answers
    x = x[:, keep]
    mean, scale = x.mean(0), x.std(0)
    weights, bias = _fit_logistic((x - mean) / scale, y, nonnegative=nonnegative)
    gate = Gate(
        tuple(EVIDENCE_FEATURES[i] for i in keep),
        tuple(mean.tolist()),
        tuple(scale.tolist()),
        tuple(weights.tolist()),
        bias,
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
        "fitted_on": len(positives),  # answerable questions the weights were fitted on (the right-answered ones)
        "false_abstention": float((p_ans < threshold).mean()),
        "abstention": float((p_un < threshold).mean()),
        "curve": _thin(curve, 40),
    }
    return Gate(gate.features, gate.mean, gate.scale, gate.weights, gate.bias, threshold, target, calibration)


def _fit_logistic(z: np.ndarray, y: np.ndarray, c: float = 1.0, nonnegative: bool = False) -> tuple[np.ndarray, float]:
    """Class-balanced logistic regression with an L2 penalty (`C=c`): sklearn's; with weights >= 0 if
    `nonnegative` (sklearn has no bounds): minimise c * sum_i s_i * log(1 + exp(-(2y_i - 1)(z_i w + b)))
    + |w|^2 / 2 with scipy's L-BFGS-B."""
    if not nonnegative:
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=c, class_weight="balanced", max_iter=1000).fit(z, y)
        return model.coef_[0], float(model.intercept_[0])
    from scipy.optimize import minimize

    n, d = z.shape
    sign = 2.0 * y - 1.0
    s = np.where(y > 0, n / (2.0 * y.sum()), n / (2.0 * (n - y.sum())))  # "balanced" sample weights

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:d], theta[d]
        m = sign * (z @ w + b)
        value = c * float(s @ np.logaddexp(0.0, -m)) + 0.5 * float(w @ w)
        g = -c * s * sign / (1.0 + np.exp(np.clip(m, -50.0, 50.0)))  # d loss / d score
        return value, np.concatenate([z.T @ g + w, [g.sum()]])

    bounds = [(0.0, None)] * d + [(None, None)]
    res = minimize(loss, np.zeros(d + 1), jac=True, method="L-BFGS-B", bounds=bounds)
    return np.maximum(res.x[:d], 0.0), float(res.x[d])


def _thin(curve: list[dict], n: int) -> list[dict]:
    if len(curve) <= n:
        return curve
    step = (len(curve) - 1) / (n - 1)
    return [curve[round(i * step)] for i in range(n)]


def unanswerable_by_exclusion(pipeline, questions: Sequence[str], doc_ids: Sequence[str]) -> list[Answer]:
    """Answers to `questions` with each one's own document kept out of retrieval."""
    return pipeline.answer_batch(list(questions), exclude_docs=[{d} for d in doc_ids])


def calibration_answers(
    index,
    generator,
    answerable: Sequence[str],
    unanswerable: Sequence[str] = (),
    answerable_doc_ids: Sequence[str] = (),
    config=None,
) -> tuple[list[Answer], list[Answer]]:
    """Answers to the answerable and to the unanswerable calibration questions through `index` and
    `generator` (settings `config`, default the index's; no gate). Without `unanswerable`
    questions, the answerable ones are asked again with their own documents excluded."""
    from .rag import Pipeline

    pipeline = Pipeline(index, generator, config, gate=False, score_answers=True)
    answered = pipeline.answer_batch(list(answerable))
    if unanswerable:
        refused = pipeline.answer_batch(list(unanswerable))
    else:
        if len(answerable_doc_ids) != len(answerable):
            raise InputError("calibrating without unanswerable questions needs each answerable question's doc id")
        refused = unanswerable_by_exclusion(pipeline, answerable, answerable_doc_ids)
    return answered, refused


def fit_answers(
    answered: Sequence[Answer],
    refused: Sequence[Answer],
    target: float = DEFAULT_TARGET,
    answers: Sequence[Sequence[str]] = (),
) -> Gate:
    """Fit a gate on calibration answers. An answer the model itself refused is refused whatever
    the gate says: the fit uses the rest. With `answers` (each answerable question's known
    answers), the weights are fitted on the right answers (F1 >= `RIGHT_F1`) only."""
    from .evaluation.metrics import f1_score

    if answers and len(answers) != len(answered):
        raise InputError(f"answers: {len(answers)} given for {len(answered)} answerable questions")
    used = [i for i, a in enumerate(answered) if a.evidence and not a.abstained]
    correct = [f1_score(answered[i].text, answers[i]) >= RIGHT_F1 for i in used] if answers else None
    return fit_gate(
        [answered[i].evidence for i in used],
        [a.evidence for a in refused if a.evidence and not a.abstained],
        target,
        correct,
    )


def calibrate(
    index,
    generator,
    answerable: Sequence[str],
    unanswerable: Sequence[str] = (),
    answerable_doc_ids: Sequence[str] = (),
    target: float = DEFAULT_TARGET,
    config=None,
    answers: Sequence[Sequence[str]] = (),
) -> Gate:
    """Answer both sets through `index` and `generator` (`calibration_answers`) and fit a gate
    (`fit_answers`; `answers`: the answerable questions' known answers, optional)."""
    answered, refused = calibration_answers(index, generator, answerable, unanswerable, answerable_doc_ids, config)
    gate = fit_answers(answered, refused, target, answers)
    precision = getattr(generator, "precision", None)
    if isinstance(precision, str):  # the likelihoods it read were computed in this dtype
        gate.calibration["dtype"] = precision
    return gate


DEFAULT_GATE = "default-gate.json"


@lru_cache(maxsize=1)
def _default_gate_data() -> dict:
    try:
        return json.loads(resources.files("ragtune").joinpath("data", DEFAULT_GATE).read_text())
    except FileNotFoundError:  # a checkout without its data file: no default gate, and say so once
        logging.getLogger(__name__).warning(
            "ragtune's default answerability gate (data/%s) is missing: answers of an index that "
            "`ragtune tune` has not calibrated are not checked (scripts/fit_default_gate.py makes it)",
            DEFAULT_GATE,
        )
        return {}


def default_gate(generator: str, embedder: str) -> Gate | None:
    """ragtune's default gate for an index that has none of its own, or None: it was fitted on the
    bundled generator's likelihoods and the bundled embedder's similarities, so it is only used with
    both (any backend of the base model — the fast ones score alike — but not a fine-tuned adapter,
    whose likelihoods differ; `ragtune tune` calibrates a gate for any model)."""
    data = _default_gate_data()
    model, _, _backend = generator.partition("@")
    if not data or model != data["generator"] or embedder != data["embedder"]:
        return None
    return Gate.from_dict(data["gate"])


def check_dtype(gate: Gate, generator) -> str | None:
    """A warning when `generator` computes in another dtype than the gate's calibration read (a
    bfloat16 likelihood differs from a float32 one by up to ~1%, enough to move a close call), else None."""
    was, now = gate.calibration.get("dtype"), getattr(generator, "precision", None)
    if gate.is_default:  # fitted elsewhere: a dtype's shift is small against the corpus's
        return None
    if not isinstance(was, str) or not isinstance(now, str) or was == now:
        return None
    return (
        f"the answerability gate was calibrated with {generator.name} in {was}, and it now runs in {now}: "
        f"abstention rates may differ slightly from the calibration's (ragtune --dtype {was}, or tune again)"
    )
