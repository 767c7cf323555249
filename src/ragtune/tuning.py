"""Retrieval tuned to one corpus: fusion, weight, depth, k and context budget chosen on
validation questions, recorded in the index so every later search uses them.

    report = tune_retrieval(Index.open("idx"), examples)   # QAExamples with gold doc ids
    print("\\n".join(report.lines()))

The fusion grid always contains dense weight 1 (the dense order) and 0 (the BM25 order), so
the chosen hybrid is never below the better single retriever on the tuning questions.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from .config import RagConfig
from .context import select_context
from .documents import Hit, QAExample
from .errors import InputError
from .evaluation.metrics import normalize_answer, retrieval_scores
from .retrieval import fuse

MIN_QUESTIONS = 10
WEIGHTS = tuple(round(float(w), 2) for w in np.linspace(0.0, 1.0, 11))
DEPTHS = (10, 20, 40)
FUSIONS = ("rrf", "score")
KS = (3, 5, 8)
BUDGETS = (128, 192, 256, 384)
COVERAGE_SLACK = 0.02  # take the smallest context within 2 points of the best answer coverage


@dataclass(frozen=True)
class Trial:
    fusion: str
    dense_weight: float
    candidates: int
    recall_at_k: float  # at the report's target_k
    mrr_at_10: float


@dataclass
class TuneReport:
    n_questions: int
    target_k: int
    before: dict[str, dict]  # retriever -> {"recall@1", "recall@5", "recall@10", "mrr@10"}
    after: dict[str, float]
    chosen: dict  # the settings recorded in the index
    trials: list[Trial] = field(default_factory=list)
    coverage: list[dict] = field(default_factory=list)  # {k, context_tokens, answer_in_context}
    applied: bool = False
    questions: str = ""  # where the tuning questions came from
    gate: dict = field(default_factory=dict)  # the calibrated gate (Gate.to_dict()), when one was fitted
    gate_note: str = ""  # questions left out of the gate's calibration, and why

    def to_dict(self) -> dict:
        return {**asdict(self), "trials": [asdict(t) for t in self.trials]}

    def lines(self) -> list[str]:
        out = [f"{self.n_questions} tuning questions; recall@k = a gold document among the first k hits"]
        out.append(f"  {'retriever':<22}{'R@1':>7}{'R@5':>7}{'R@10':>7}{'MRR@10':>8}")
        rows = {**self.before, "hybrid (tuned)": self.after}
        for name, s in rows.items():
            out.append(
                f"  {name:<22}{s['recall@1']:>7.3f}{s['recall@5']:>7.3f}{s['recall@10']:>7.3f}{s['mrr@10']:>8.3f}"
            )
        c = self.chosen
        out.append(
            f"chosen: fusion={c['fusion']} dense_weight={c['dense_weight']} candidates={c['candidates']} "
            f"k={c['k']} context_tokens={c['context_tokens']}" + ("" if self.applied else "  (not recorded: dry run)")
        )
        if self.coverage:
            best = max(r["answer_in_context"] for r in self.coverage)
            out.append(f"answer in the selected context: best {best:.3f}; chosen setting within {COVERAGE_SLACK:.2f}")
        if self.gate:
            c = self.gate["calibration"]
            out.append(
                f"answerability gate: threshold {self.gate['threshold']:.3f} on {c['answerable']} answerable / "
                f"{c['unanswerable']} unanswerable questions: abstains on {100 * c['abstention']:.0f}% of "
                f"unanswerable, {100 * c['false_abstention']:.0f}% of answerable "
                f"(target <= {100 * self.gate['target_false_abstention']:.0f}%)"
                + (f"; the reader in {c['dtype']}" if c.get("dtype") else "")
            )
        if self.gate_note:
            out.append(f"  {self.gate_note}")
        return out


def _scores(results: Sequence[Sequence[Hit]], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    return retrieval_scores(results, golds).as_dict()


class _CachedEmbedder:
    """Sentences repeat across the k x budget grid: embed each once."""

    def __init__(self, embedder):
        self.inner = embedder
        self.cache: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            self.cache.update(zip(missing, self.inner.embed(missing)))
        return np.stack([self.cache[t] for t in texts])

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.inner.count_tokens(texts)


def answer_in_context(answers: Sequence[str], text: str) -> bool:
    norm = f" {normalize_answer(text)} "
    return any(a.strip() and f" {normalize_answer(a)} " in norm for a in answers)


def tune_retrieval(
    index,
    examples: Sequence[QAExample],
    target_k: int = 5,
    apply: bool = True,
    base: RagConfig | None = None,
    batch_size: int = 256,
) -> TuneReport:
    """Choose fusion, dense weight and candidate depth by recall@`target_k` (then MRR@10) on
    `examples`, then k and context budget by how often a gold answer survives context selection;
    record them in `index` unless `apply` is False."""
    examples = [e for e in examples if e.doc_ids]
    if len(examples) < MIN_QUESTIONS:
        raise InputError(
            f"tuning needs at least {MIN_QUESTIONS} questions with gold document ids; got {len(examples)} "
            "(synthetic questions from `ragtune synth` carry them; a QA JSONL needs a doc_id per line)"
        )
    base = base or index.rag_config()
    retriever = index.retriever(base)
    questions = [e.question for e in examples]
    golds = [e.doc_ids for e in examples]
    lists: list[tuple[list[Hit], list[Hit]]] = []
    for start in range(0, len(questions), batch_size):
        lists.extend(retriever.candidates_batch(questions[start : start + batch_size], max(DEPTHS)))

    def fused(fusion: str, w: float, depth: int, k: int = 10) -> list[list[Hit]]:
        return [
            fuse([h for h in d if h.rank <= depth], [h for h in t if h.rank <= depth], k, fusion, w, base.rrf_k)
            for d, t in lists
        ]

    before = {
        "dense": _scores([d[:10] for d, _ in lists], golds),
        "bm25": _scores([t[:10] for _, t in lists], golds),
        "hybrid (before)": _scores(fused(base.fusion, base.dense_weight, min(base.candidates, max(DEPTHS))), golds),
    }
    trials = []
    for depth in DEPTHS:
        for fusion in FUSIONS:
            for w in WEIGHTS:
                s = retrieval_scores(fused(fusion, w, depth), golds, ks=(target_k,))
                trials.append(Trial(fusion, w, depth, s.recall_at[target_k], s.mrr_at_10))
    # Ties go to the setting nearest today's default (plain RRF, weight 0.5, depth 20).
    best = min(
        trials,
        key=lambda t: (
            -round(t.recall_at_k, 9),
            -round(t.mrr_at_10, 9),
            abs(t.dense_weight - 0.5),
            t.fusion != "rrf",
            abs(t.candidates - 20),
        ),
    )
    after = _scores(fused(best.fusion, best.dense_weight, best.candidates), golds)

    # k and context budget: how often a gold answer is still in the text the model will read.
    embedder = _CachedEmbedder(index.embedder)
    hits = fused(best.fusion, best.dense_weight, best.candidates, k=max(KS))
    coverage = []
    for k in KS:
        for budget in BUDGETS:
            hit_rate = [
                answer_in_context(e.answers, " ".join(s.text for s in select_context(
                    e.question, h[:k], embedder, budget, base.dedupe_threshold
                )))
                for e, h in zip(examples, hits)
            ]  # fmt: skip
            coverage.append({"k": k, "context_tokens": budget, "answer_in_context": float(np.mean(hit_rate))})
    top = max(r["answer_in_context"] for r in coverage)
    pick = min(
        (r for r in coverage if r["answer_in_context"] >= top - COVERAGE_SLACK),
        key=lambda r: (r["context_tokens"], r["k"]),
    )
    chosen = {
        "mode": "hybrid",
        "fusion": best.fusion,
        "dense_weight": best.dense_weight,
        "candidates": best.candidates,
        "k": pick["k"],
        "context_tokens": pick["context_tokens"],
    }
    if apply:
        index.set_retrieval(**chosen)
    return TuneReport(len(examples), target_k, before, after, chosen, trials, coverage, apply)


def synthetic_examples(index, n: int, seed: int = 0, progress=None) -> list[QAExample]:
    """Questions made from the index's own passages by `ragtune synth` (each knows its document),
    kept only when the round-trip reader answers them itself (`round_trip_top=1`): tuning and the
    gate want well-formed questions, and those the reader ranks 2nd-3rd are more often malformed —
    calibrated on them, the gate refused 24 % of real answerable SQuAD questions (target 10 %;
    benchmarks/abstention.py)."""
    from .synth.generate import SynthConfig, synthesize

    questions, _ = synthesize(list(index.chunks()), SynthConfig(n=n, seed=seed, round_trip_top=1), progress=progress)
    return [QAExample(q.id, q.question, (q.answer,), (q.doc_id,)) for q in questions]


def _gate_sample(examples: Sequence[QAExample], trained_on: Collection[str]) -> tuple[list[QAExample], str]:
    """The questions that may calibrate a gate (those naming their document, none the generator was
    fine-tuned on), and a note on those left out."""
    sample = [e for e in examples if e.doc_ids]
    if not trained_on:
        return sample, ""
    from .finetune.data import question_key

    left = [e for e in sample if question_key(e.question) not in trained_on]
    if not left and sample:
        raise InputError(
            f"every one of the {len(sample)} questions given was in the generator's fine-tuning data: a gate "
            "calibrated on them misjudges unseen questions; give questions it was not trained on (its validation "
            "or test split), or --no-gate; nothing was recorded"
        )
    dropped = len(sample) - len(left)
    return left, (f"{dropped} of the {len(sample)} questions left out of the gate's calibration: the generator was "
                  "fine-tuned on them") if dropped else ""  # fmt: skip


def tune(
    index,
    examples: Sequence[QAExample] | None = None,
    generator=None,
    synth_n: int = 120,
    gate_questions: int = 60,
    gate: bool = True,
    target: float = 0.10,
    seed: int = 0,
    apply: bool = True,
    progress=None,
    trained_on: Collection[str] = (),
) -> TuneReport:
    """`ragtune tune`: retrieval settings, then (with `gate`) the answerability gate, calibrated on
    up to `gate_questions` of the questions — answered as they are and again with their own
    document kept out of retrieval — through the tuned pipeline. Without `examples`, `synth_n`
    synthetic questions are made from the index first. `trained_on` (the `question_key`s of the
    questions the generator was fine-tuned on, `RunFolder.trained_on`): those never calibrate the gate — the
    model has all but memorised them, and a gate fitted on them misjudges unseen questions."""
    from .gate import calibrate

    source = "given"
    if examples is None:
        examples = synthetic_examples(index, synth_n, seed, progress)
        source = "synthetic"
    sample, note = _gate_sample(examples, trained_on) if gate else ([], "")  # before anything is recorded
    report = tune_retrieval(index, examples, apply=apply)
    report.questions = f"{report.n_questions} {source}"
    report.gate_note = note
    if gate:
        from dataclasses import replace

        from .registry import make_generator

        config = replace(index.rag_config(), **report.chosen)  # the chosen settings, recorded or not (dry run)
        generator = generator or make_generator(config.generator)
        sample = sample[:gate_questions]
        fitted = calibrate(index, generator, [e.question for e in sample],
                           answerable_doc_ids=[e.doc_ids[0] for e in sample], target=target, config=config)  # fmt: skip
        report.gate = fitted.to_dict()
        if apply:
            index.set_gate(fitted, generator.name)
    return report
