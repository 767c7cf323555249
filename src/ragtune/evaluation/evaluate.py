"""`ragtune evaluate DOCS --out DIR`: the one command for a folder with no labelled questions.

Ingest (keeping a share of documents out, for unanswerable questions) -> synthesise questions ->
split them -> fine-tune `ft` (closed book) and `rag+ft` (the extracting reader, or RAFT) on the
training split -> compare base / rag / ft / rag+ft on the test split -> report. The plan is sized
from a time budget and the measured speed of this machine and printed before anything runs; every
phase leaves its output in DIR, and a second run with the same inputs reuses it. A run that is
killed resumes: the plan is kept (so the phases' inputs do not drift with measured speed), phase
markers and outputs are written whole (temp file, then rename) and dropped before a phase is
redone, fine-tuning continues from its last checkpoint and the comparison reuses the records it had
finished.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..errors import ConfigError, DocumentError, RagtuneError

STRATEGIES = ("base", "rag", "ft", "rag+ft")
# Measured on the reference 2-core CPU, quiet (benchmarks/evaluate_folder.py): seconds per LoRA step
# of 8 short QA examples, per step of 8 reader examples (a sentence and a question), per RAFT step of
# 4 examples with retrieved sources (evaluations included), when a closed-book answer took
# REF_ANSWER_S; a plan scales them by the answer time it measures, so a slower or busier machine
# gets fewer steps. Chunks embedded per second. The QA and reader step costs (the whole phase over its
# steps: model loading, validation, the gate calibrated for the adapter) re-measured on three 30-minute
# runs of benchmarks/evaluate_folder.py (2026-12-06, bfloat16 training where the CPU has it): QA 2.0-2.1,
# reader 3.6-5.0 s per step at REF_ANSWER_S; they were 2.75 and 7.5, and those runs spent 7 of the 11
# minutes planned for fine-tuning (rag+ft's best validation loss at its last step).
REF_ANSWER_S = 0.32
QA_STEP_S, READER_STEP_S, RAFT_STEP_S, CHUNKS_PER_S = 2.2, 5.2, 9.5, 22.0
# Of the fine-tuning time, rag+ft's share: its reader is what can gain with steps (on 80 real
# questions, trained on the same 47 synthetic ones: +2.4 F1 over rag after 14 steps, p = 0.53; +6.7
# after 30, p = 0.02; on another synthetic set of 44, +0.0 after 29), while closed-book ft's F1 stays
# near the base model's whatever its steps (benchmarks/evaluate_folder.py, training_value.py).
RAG_FT_SHARE = 0.7
# How rag+ft is fine-tuned: "reader" teaches the span reader rag answers with (its answers stay
# extracted spans of the sources; on the demo's 40 test questions, no gate: F1 44.1 after 20 steps
# of a 40-step run vs rag's 38.9, a 20-step run ties rag), "raft" teaches writing a cited answer from
# retrieved sources (F1 23.9 there, and answering by writing is 5x slower than scoring spans).
RAG_FT_MODES = ("reader", "raft")
# Synthetic questions asked per question that survives the filters (345 / 150, 973 / 391 and 1161 / 482
# on held-out SQuAD articles with the round trip's top 3, benchmarks/evaluate_folder.py; 3.8 with its
# top 1; with its top 6, 1161 / 773 measured; the filter of questions that repeat a word of their answer
# (`SynthConfig.max_echo`) removes about a sixth of those), and the cost of one attempt (a question
# written, the reader's span scores; bfloat16 where the CPU has it) in units of one float32 answer.
ATTEMPTS_PER_KEPT, ATTEMPT_COST = 1.8, 1.2
# One answer in the comparison (RAG answers are extracted spans; retrieval, loading the adapters, the
# freshness re-ingest and scoring included), in units of one closed-book answer: measured 0.77, 0.89
# and 1.01 in three runs (100 s for 404 answers at 0.32 s; 86 s for 284 at 0.34 s; 181 s for 544 at
# 0.33 s; benchmarks/evaluate_folder.py); the most of them, for margin. It was 1.75 when RAG answers
# were written, and the plan then left a third of its budget unused.
ANSWER_COST = 1.0
# Training questions the gate is calibrated on per gated strategy, fewest and most: each is answered
# twice (as it is, and with its document kept out), so 24 give 48 answers. Between the two, the plan
# spends about GATE_SHARE of the synthesis-and-comparison time on them: a bigger budget buys a
# steadier gate (its threshold is a quantile of the answerable calibration questions' confidence).
GATE_QUESTIONS = (24, 60)
GATE_SHARE = 0.08
# rag+ft's learning rate (ft keeps 3e-4: closed-book facts are not learnt in minutes either way). Its
# reader, trained ~30 steps on the synthetic training split and tested on real questions against rag
# (benchmarks/training_value.py, each row one synthetic set): at 1e-3, +6.1 F1 (200 questions, p 0.004;
# 86 training questions), +8.2 after 14 steps and +4.9 after 30 (80 questions, p 0.006 / 0.024); at
# 3e-4, +0.4 (p 0.91, the same 86), +6.7, +0.0, +3.7 (p 0.02 / - / 0.11) on three other sets.
RAG_FT_LR = 1e-3
# rag+ft's early stopping: validation loss on up to RAG_FT_EVAL_BATCHES batches (8 questions each), stopped after
# RAG_FT_PATIENCE evaluations (every 10 steps) without a better one. At 1e-3 its validation loss wobbles early on:
# with 6 batches and patience 3, two runs (H, I of benchmarks/evaluate_folder.py, 2026-12-06) stopped at step 50 of
# ~180 with the best at step 20 — and gave the two weakest real leads (+1.6, +3.1 F1 over rag). Run I's questions
# again with all 76 validation questions and patience 5: best at step 130 (validation loss 0.694, was 0.761),
# rag+ft +4.8 F1 over rag on the 444 real questions (p 0.000; was +3.1, p 0.014), in 1015 s (was 166; the plan
# had priced all 180 steps).
RAG_FT_EVAL_BATCHES, RAG_FT_PATIENCE = 12, 5
# The most test questions a plan asks; past them, a bigger budget buys more training questions rather than
# sitting unused. A paired test on n questions tells apart a lead of about 2 SD / sqrt(n): rag+ft - rag
# per question has an SD of about 33 F1 (34.2 on run G's 200 synthetic test questions, 32.8 on its 444
# real ones, benchmarks/evaluate_folder.py, 2026-12-06), so 200 questions tell +4.7 F1 apart and 450 +3.1,
# the size of rag+ft's lead over rag on real questions (+3.0 to +6.5 in five runs). The cap was 200 (stated
# to tell ~3 F1 apart: it told ~5), and at 200 the synthetic test saw that lead within noise where the 444
# real questions of the same documents did not (runs with test 200 and 142, 2026-12-06; +5.0, p 0.09 on the
# 142). With the cap at 450, 100 SQuAD paragraphs (--budget-min 45) ran out of answer candidates at a 380-question
# test: +2.0 (p 0.28) there, +3.1 (p 0.014) on the 444 real questions. More synthetic training questions, not
# more steps on the same ones, is what lifted rag+ft's reader (benchmarks/training_value.py's folder, 200 real
# test questions, no gate, 2026-12-06): rag 41.8; rag+ft trained
# on 135 synthetic questions 43.3 (+1.5, p 0.35), the same 135 for up to 76 steps (early stopping kept
# step 30) 42.5 (+0.7, p 0.73), 394 synthetic questions for 76 steps 45.0 (+3.1 [+0.2, +6.3], p 0.03),
# 135 real questions 45.4 (+3.6, p 0.03).
MAX_TEST = 450
# Writing questions runs this far past the plan's estimate at most, once the test and two training
# questions each are written (on an AMX host the estimate was 1.5x short: 67 kept per minute where
# it priced 99; benchmarks/evaluate_folder.py --budget-min 30, 2026-12-06).
SYNTH_SLACK = 1.1
# The questions the round-trip reader failed (every other filter passed) are trained on, never tested
# on: the filter keeps the questions the untrained reader already answers (53% of those kept are its
# own first answer; of 235 real SQuAD training questions, 36% are, and 33% are not among its top 3), so
# it removes what training could teach. On the 160 real questions of benchmarks/training_value.py's
# folder (2026-12-06), rag+ft's reader, 66 steps: trained on 234 filtered synthetic questions, F1 +0.1
# over rag (p 0.98); on 234 unfiltered ones, +1.2 (p 0.54); on the 234 and 180 round-trip failures
# (none a twin of a test question), +2.4 (p 0.21; +2.3 over the 234 alone, p 0.13); on 235 real ones,
# +3.8 (p 0.01). The failures come free: they were written and read anyway.
TRAIN_ON_ROUND_TRIP_FAILURES = True
# A synthetic question the round-trip reader answered itself (its round-trip rank 1) is trained on or
# calibrates a gate, never tested on: it was kept because the base model, reading its passage, gave its
# answer first, and that model is `rag`'s reader — a test of such questions is selected on one
# contestant's answers. Such questions are over a third of those kept (of the 444 real SQuAD questions of the
# same documents, 22% in run F's count; 45% ranked as the round trip ranks, benchmarks/round_trip_bias.py —
# not reconciled), and they tested unlike real ones. Four `--budget-min 30` runs of benchmarks/evaluate_folder.py
# (2026-12-06; each run's adapter, both gates calibrated on its validation questions), rag+ft - rag in F1:
# on its synthetic test's reader's own questions -6.0, -6.2, -9.0, -4.6; on the rest +3.6, +2.8, +1.0, +6.2
# (mean +3.4); on the whole synthetic test +0.1, -0.8, -2.3, +2.7 (mean -0.1); on the 444 real questions of
# the same documents +4.4, +3.0, +3.8, +4.1 (mean +3.8, each p < 0.05). (On real questions the reader ranks
# first, rag+ft - rag was +0.6, and +0.3 / +2.2 in runs I / J: it is the selection, not the kind of question.)
TEST_WITHOUT_READERS_OWN = True
# The gates of rag and rag+ft are calibrated on the same questions: the validation split's, which rag+ft's
# adapter was never trained on. Before, both were calibrated on training questions, the reader's own first
# answers first. The adapter has all but memorised its training questions (its log-likelihood of their
# answers -1.2 to -1.35 on average, the base model's -5.5 to -6.4), so its gate refused far more unseen
# answerable questions than its 10% target; and rag's gate, fitted on the questions the reader answers
# most surely, refused 16% of real ones. Run D of benchmarks/evaluate_folder.py --budget-min 30 (2026-12-06),
# its 444 real questions, the same adapter: rag+ft abstained on 72 (rag 51), +2.3 F1 over rag (p 0.11);
# its gate calibrated on 60 validation questions: 38, +4.6 (p 0.004). Run E (rag+ft's gate so): rag+ft
# 44.2, rag 38.2 (false abstention 16%); rag's gate also on those validation questions: rag 40.3 (7.7%;
# abstention on unanswerable questions 82% -> 73%), rag+ft +3.9 [+1.2, +6.5] (p 0.003).
GATES_ON_VALIDATION = True
DATA_MARKER = "evaluate-data.json"  # in a fine-tuning folder: the questions it was trained on (a hash)
GATE_MARKER = "evaluate-gate.json"  # in a fine-tuning folder: the gate calibrated for its adapter, and on what
TUNE_MARKER = "tune.json"  # in DIR: the tune phase's result, the inputs it was computed from, what it left in the index
COMPARE_MARKER = "compare.json"  # in DIR: the inputs the comparison in results.json was answered from
MAX_BUDGET_MIN = 7 * 24 * 60.0  # a week: beyond it a budget is a typo (and its seconds overflow the plan's arithmetic)
MIN_SYNTHETIC = 10  # the fewest synthetic questions a split into training and test questions takes (`_ratios`)
OVER_BUDGET = 1.02  # an estimate this far over the budget is reported as over it (the plan's own rounding stays under)


@dataclass(frozen=True)
class EvaluateConfig:
    budget_min: float = 30.0  # the whole run, planned from this machine's measured speed
    strategies: tuple[str, ...] = STRATEGIES
    questions: str = ""  # real labelled questions (QA JSONL / SQuAD JSON) for the test split instead of synthetic ones
    holdout_share: float = 0.1  # documents kept out of the index: their questions are unanswerable
    seed: int = 0
    embedder: str = ""  # for the index; "" = the default embedder
    ray: str | None = None  # answer the comparison on Ray ("local", "auto" or an address); None = in this process
    workers: int | None = None  # with `ray`: answering workers (default one per CPU)
    rag_ft_mode: str = "reader"  # how rag+ft is fine-tuned: see RAG_FT_MODES
    synth_backend: str = "transformers"  # what runs the question writer: SynthConfig.writer_backend

    def __post_init__(self) -> None:
        if not isinstance(self.budget_min, (int, float)) or not math.isfinite(self.budget_min):
            raise ConfigError(f"budget_min={self.budget_min!r}: must be a finite number of minutes")
        if not 2 <= self.budget_min <= MAX_BUDGET_MIN:
            raise ConfigError(f"budget_min={self.budget_min!r}: must be between 2 and {MAX_BUDGET_MIN:g} minutes")
        if self.rag_ft_mode not in RAG_FT_MODES:
            raise ConfigError(f"rag_ft_mode={self.rag_ft_mode!r}: choose from {list(RAG_FT_MODES)}")
        unknown = sorted(set(self.strategies) - set(STRATEGIES))
        if unknown or not self.strategies:
            raise ConfigError(f"strategies={list(self.strategies)!r}: choose from {list(STRATEGIES)}")
        if not 0 <= self.holdout_share < 0.5:
            raise ConfigError(f"holdout_share={self.holdout_share!r}: must be in [0, 0.5)")


@dataclass(frozen=True)
class Plan:
    documents: int
    indexed: int
    held_out: int
    chunks: int
    synthetic: int  # answerable synthetic questions to make (train + validation + test)
    unanswerable: int
    test: int
    qa_steps: int
    rag_ft_steps: int
    edits: int
    seconds_per_answer: float  # measured here
    minutes: dict = field(default_factory=dict)  # phase -> estimated minutes
    gate_questions: int = 0  # training questions the answerability gate is calibrated on (each asked twice)
    budget_min: float = 0.0  # the budget it was planned for (0: unknown, a plan from an older version)
    candidates: int = 0  # answer candidates in the indexed passages (counted as far as the plan needs; 0: not counted)

    @property
    def total_min(self) -> float:
        """The estimated minutes of the whole run."""
        return sum(self.minutes.values())

    @property
    def over_budget(self) -> bool:
        """Whether even this plan, the smallest useful one, is estimated to take longer than the budget."""
        return bool(self.budget_min) and self.total_min > self.budget_min * OVER_BUDGET

    def budget_warning(self) -> str:
        """A sentence on how far over the budget the plan is and what to do ("" when it fits)."""
        if not self.over_budget:
            return ""
        least = [f"{self.test} test questions"]
        if self.gate_questions:
            least.append(f"{self.gate_questions} questions to calibrate the gate, each asked twice")
        if self.qa_steps or self.rag_ft_steps:
            least.append(f"{self.qa_steps + self.rag_ft_steps} fine-tuning steps")
        ingest = self.minutes.get("ingest", 0.0)
        return (
            f"estimated {self.total_min:.1f} min exceeds the budget of {self.budget_min:g} min: the smallest useful "
            f"plan ({', '.join(least)}) needs that at {self.seconds_per_answer:.2f} s per answer on this machine"
            + (f" (ingesting alone {ingest:.1f} min)" if ingest > self.budget_min / 2 else "")
            + f"; use --budget-min {math.ceil(self.total_min)} or fewer --strategies"
        )

    def to_dict(self) -> dict:
        """The plan as plan.json and results.json keep it, with its estimate against the budget."""
        return {**asdict(self), "total_min": round(self.total_min, 2), "over_budget": self.over_budget}

    def describe(self) -> str:
        est = ", ".join(f"{k} {v:.1f}" for k, v in self.minutes.items())
        budget = f" of a budget of {self.budget_min:g}" if self.budget_min else ""
        text = (
            f"{self.documents} documents: {self.indexed} indexed ({self.chunks} chunks), {self.held_out} kept out for "
            f"unanswerable questions\nquestions: {self.synthetic} synthetic answerable ({self.test} for the test), "
            f"{self.unanswerable} unanswerable, {self.edits} fact edits, {self.gate_questions} to calibrate the "
            f"answerability gate\nfine-tuning: ft {self.qa_steps} steps, "
            f"rag+ft {self.rag_ft_steps} steps\nestimated minutes: {est}; total {self.total_min:.1f}{budget} "
            f"(measured {self.seconds_per_answer:.2f} s per answer here)"
        )
        warning = self.budget_warning()
        return text + (f"\nOVER BUDGET: {warning}" if warning else "")


def make_plan(
    n_docs: int,
    n_indexed: int,
    chunks: int,
    cfg: EvaluateConfig,
    s_answer: float,
    real_test: int = 0,
    candidates: int | None = None,
) -> Plan:
    """Spend the budget: ingest first (fixed), then synthesis, fine-tuning and comparison share what is left.
    `candidates` (answer candidates in the indexed passages, `synth.generate.count_candidates`) caps
    the synthetic questions: each is written for one, so the documents cannot yield more. Below its
    floors (10 test questions, GATE_QUESTIONS[0] for the gate, a few fine-tuning steps) a plan does
    not shrink: `Plan.over_budget` then says that it does not fit."""
    budget_s = cfg.budget_min * 60
    ingest_s = chunks / CHUNKS_PER_S + 20  # plus model loading
    left = max(0.95 * (budget_s - ingest_s), 60.0)  # 5% for model loading and the report
    n_strat = len(cfg.strategies)
    trains = [s for s in ("ft", "rag+ft") if s in cfg.strategies]
    share_train = 0.4 if trains else 0.0
    rest = left * (1 - share_train)  # for synthesis, tuning and the comparison
    gated = sum(s in cfg.strategies for s in ("rag", "rag+ft"))
    per_gate_q = 2 * ANSWER_COST * s_answer * max(gated, 1)
    gate_q = min(max(int(GATE_SHARE * rest / per_gate_q), GATE_QUESTIONS[0]), GATE_QUESTIONS[1]) if gated else 0
    gate_s = gate_q * per_gate_q  # 0 when nothing is gated
    rest = max(rest - gate_s, 0.5 * rest)
    synth_cost = ATTEMPTS_PER_KEPT * ATTEMPT_COST * s_answer  # seconds per question that survives the filters
    # Per test question: its share of synthesis (about as many again for training, and a third as many
    # unanswerable ones) and every strategy answering it, its unanswerable third and a sixth as many edits.
    held = n_docs != n_indexed

    def beside(test: int) -> tuple[int, int]:  # a test's unanswerable questions (a third) and fact edits (a sixth)
        return (max(4, test // 3) if held else 0), max(2, test // 6)

    if real_test:
        test = real_test
        unanswerable, edits = beside(test)
        compare_s = n_strat * (test + unanswerable + edits) * ANSWER_COST * s_answer
        synthetic = max(20, int((rest - compare_s) / synth_cost) - unanswerable)  # all of them for training
    else:
        # Two training questions per test question: rag+ft's reader trained on ~45 synthetic questions
        # gained +6.7 F1 on real questions in one run and +0.0 in another (benchmarks/training_value.py).
        per_test = (3 + (1 / 3 if held else 0)) * synth_cost + n_strat * 1.5 * ANSWER_COST * s_answer
        test = max(10, min(MAX_TEST, int(rest / per_test)))
        synthetic = 3 * test  # a third for the test, the rest to train and validate on
        if trains and test == MAX_TEST:  # what the capped test leaves buys training questions (see MAX_TEST)
            synthetic += max(int((rest - test * per_test) / synth_cost), 0)
    synthetic = min(synthetic, 12 * n_indexed + (0 if real_test else test))  # a dozen per document at most
    attempts = synthetic * ATTEMPTS_PER_KEPT
    if candidates is not None and synthetic > candidates:
        # What the documents can yield: no more questions than answer candidates, and then every
        # candidate is tried (not ATTEMPTS_PER_KEPT per question); the test takes at most half of them.
        synthetic, attempts = candidates, candidates
        if not real_test:
            test = min(test, max(synthetic // 2, 1))
    unanswerable, edits = beside(test)
    train_s = share_train * left
    speed = s_answer / REF_ANSWER_S  # > 1: this machine (now) is slower than the reference
    qa_s = QA_STEP_S * speed
    step_s = (READER_STEP_S if cfg.rag_ft_mode == "reader" else RAFT_STEP_S) * speed
    both = "ft" in cfg.strategies and "rag+ft" in cfg.strategies
    qa_steps = max(4, int(train_s * (1 - RAG_FT_SHARE if both else 1) / qa_s)) if "ft" in cfg.strategies else 0
    rag_ft_steps = max(2, int(train_s * (RAG_FT_SHARE if both else 1) / step_s)) if "rag+ft" in cfg.strategies else 0
    minutes = {
        "ingest": ingest_s / 60,
        "synthesise": (attempts + unanswerable * ATTEMPTS_PER_KEPT) * ATTEMPT_COST * s_answer / 60,
        "fine-tune": (qa_steps * qa_s + rag_ft_steps * step_s) / 60,
        "tune": gate_s / 60,
        "compare": n_strat * (test + unanswerable + edits) * ANSWER_COST * s_answer / 60,
    }
    return Plan(n_docs, n_indexed, n_docs - n_indexed, chunks, synthetic, unanswerable, test, qa_steps, rag_ft_steps,
                edits, s_answer, minutes, gate_q, budget_min=cfg.budget_min, candidates=candidates or 0)  # fmt: skip


def measure_seconds_per_answer(generator) -> float:
    """Time a small batch of short answers with the real generator (after a warm-up)."""
    from ..prompts import closed_book_messages

    prompts = [
        closed_book_messages(f"What is the name of the river that flows through city number {i}?") for i in range(4)
    ]
    generator.generate(prompts[:1], 4)
    t0 = time.perf_counter()
    generator.generate(prompts, 24)
    return max((time.perf_counter() - t0) / len(prompts), 0.05)


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _done(marker: Path, key: str) -> bool:
    try:
        return json.loads(marker.read_text()).get("key") == key
    except (OSError, ValueError, AttributeError):
        return False


def _mark(marker: Path, key: str, **info) -> None:
    from .compare import write_atomic

    write_atomic(marker, json.dumps({"key": key, **info}, indent=2, default=str))


def _unmark(marker: Path) -> None:
    """Before a phase is redone: its outputs are about to change, so no older marker may vouch for them."""
    marker.unlink(missing_ok=True)


Say = Callable[[str], None]


def run_evaluate(paths: Sequence[str | Path], out: str | Path, cfg: EvaluateConfig = EvaluateConfig(), say: Say = print,
                 generators: dict | None = None):  # fmt: skip
    """Run every phase (reusing what a previous run with the same inputs left in `out`) and
    return the comparison Results; writes results.json, records.csv and report.html in `out`.
    The inputs (documents, questions, models named, `out` itself) are checked before `out` is
    made: a run that cannot start leaves nothing behind."""
    from ..chunking import chunk_documents
    from ..config import DEFAULT_GENERATOR, ChunkConfig
    from ..documents import load_paths
    from ..finetune.config import FinetuneConfig
    from ..finetune.data import PrepareConfig, add_training_only, prepare
    from ..finetune.run import CHECKPOINT
    from ..finetune.train import train
    from ..index import Index
    from ..paths import check_output
    from ..registry import make_embedder, make_generator
    from ..synth.generate import SynthConfig, count_candidates, synth_models, synthesize, write_questions
    from .compare import ExperimentConfig, load_results, run_experiment, write_atomic, write_results
    from .report import write_report
    from .strategies import Strategy

    # -- inputs, checked before anything is written ----------------------------------------------
    out = check_output(out, folder=True)
    t_all = time.perf_counter()
    phases: dict[str, float] = {}
    if not paths:
        raise DocumentError("nothing to evaluate: no folder or file was given")
    loaded = load_paths(list(paths))
    if not loaded.documents:  # the error names each file's reason (not said twice)
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in loaded.skipped[:10]) or "no files found"
        more = len(loaded.skipped) - 10
        raise DocumentError(
            f"nothing to evaluate: no document in {[str(p) for p in paths]} could be loaded ({reasons}"
            + (f"; and {more} more" if more > 0 else "") + ")"
        )
    for s in loaded.skipped:
        say(f"  skipped {s.path}: {s.reason}")
    real = _real_questions(cfg.questions) if cfg.questions else []
    embedder = make_embedder(cfg.embedder) if cfg.embedder else None  # an unknown name fails here
    base = (generators or {}).get("base") or make_generator(DEFAULT_GENERATOR)
    docs = sorted(loaded.documents, key=lambda d: d.id)
    rng = random.Random(cfg.seed)
    n_hold = math.ceil(cfg.holdout_share * len(docs)) if len(docs) >= 4 and cfg.holdout_share else 0
    held = set(rng.sample([d.id for d in docs], n_hold))
    indexed = [d for d in docs if d.id not in held]
    held_docs = [d for d in docs if d.id in held]

    # -- ingest ----------------------------------------------------------------------------------
    t0 = time.perf_counter()
    made = _make_folder(out)
    try:
        index = Index.create(out / "index", embedder=embedder, chunking=ChunkConfig())
        rep = index.ingest(indexed, sync=True)
    except Exception:
        # (an embedder that cannot load, a store that cannot write): in a folder this run made, there is
        # nothing yet worth keeping, so none is left behind. An interrupted ingest keeps its progress.
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise
    phases["ingest"] = time.perf_counter() - t0
    for s in rep.skipped:
        say(f"  skipped {s.path}: {s.reason}")
    n_chunks = index.info().chunks
    skipped = [*loaded.skipped, *rep.skipped]
    say(_ingest_line(len(docs), len(indexed), len(held), rep.counts(), skipped, n_chunks, phases["ingest"]))
    ingest_info = {
        "paths": [str(p) for p in paths], "documents": len(docs), "indexed": len(indexed), "held_out": len(held),
        "chunks": n_chunks, "skipped": [{"path": s.path, "reason": s.reason} for s in skipped],
    }  # fmt: skip

    doc_key = sorted((d.id, d.content_hash) for d in docs)
    # The plan of an earlier run on the same inputs is kept: a plan re-measured after a kill could
    # differ and invalidate every phase that run finished.
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("ray", "workers")}  # where it runs: same plan
    plan_key = _fingerprint("plan", doc_key, settings, real, n_chunks)
    plan = _load_plan(out / "plan.json", plan_key)
    if plan is None:
        # Each synthetic question is written for one answer candidate: the plan asks for no more than
        # the documents hold (counted as far as it matters: extracting them costs ~4 ms a sentence).
        least = 1 if real else MIN_SYNTHETIC
        candidates = count_candidates(index.chunks(), limit=least)
        if candidates < least:
            raise DocumentError(
                f"the {len(indexed)} indexed documents hold {candidates} answer candidates (names, numbers, dates, "
                f"key phrases in English prose): too few to write the {least}+ synthetic questions an evaluation "
                "needs" + ("" if real else "; add documents, or give labelled questions (`questions`)")
            )
        s_answer = measure_seconds_per_answer(base)
        plan = make_plan(len(docs), len(indexed), n_chunks, cfg, s_answer, real_test=len(real))
        candidates = count_candidates(index.chunks(), limit=plan.synthetic)
        plan = make_plan(len(docs), len(indexed), n_chunks, cfg, s_answer, real_test=len(real), candidates=candidates)
        write_atomic(out / "plan.json", json.dumps({**plan.to_dict(), "key": plan_key}, indent=2))
    else:
        say("plan: kept from the previous run on these inputs")
    say("plan:\n  " + plan.describe().replace("\n", "\n  "))
    if plan.over_budget:
        say("warning: the plan does not fit the budget (see OVER BUDGET above); going on with it. Stop now to "
            "give a bigger budget or fewer strategies.")  # fmt: skip

    # -- questions -----------------------------------------------------------------------------
    t0 = time.perf_counter()
    qdir = out / "questions"
    qdir.mkdir(exist_ok=True)
    synth_path, una_path = qdir / "synthetic.jsonl", qdir / "unanswerable.jsonl"
    extra_path = qdir / "training-only.jsonl"  # failed only the round trip (TRAIN_ON_ROUND_TRIP_FAILURES)
    synth_cfg = SynthConfig(n=plan.synthetic, seed=cfg.seed, writer_backend=cfg.synth_backend)
    settings = asdict(synth_cfg)  # every filter setting; the writer's backend where it is not the default
    if synth_cfg.writer_backend == "transformers":
        del settings["writer_backend"]  # (so runs made before it existed are still found)
    key = _fingerprint("synth", doc_key, settings, plan.unanswerable, sorted(held),
                       *(["training-only"] if TRAIN_ON_ROUND_TRIP_FAILURES else []))  # fmt: skip
    if _done(qdir / "done.json", key):
        say("questions: reusing the synthetic questions of the previous run")
        synth_report = json.loads((qdir / "synthetic.report.json").read_text())
    else:
        _unmark(qdir / "done.json")
        una_path.unlink(missing_ok=True)  # an earlier run's, for other inputs
        extra_path.unlink(missing_ok=True)
        failed: list | None = [] if TRAIN_ON_ROUND_TRIP_FAILURES else None
        given = generators or {}
        qg, reader, _ = synth_models(synth_cfg, qg=given.get("qg"), reader=given.get("reader"))
        # The plan's time for writing questions (its estimate, with a tenth to spare) is kept to once the
        # test and its usual two training questions each are written: the rest are extra training questions.
        questions, report = synthesize(list(index.chunks()), synth_cfg, qg=qg, reader=reader,
                                       progress=_every(say, "synthesise"),
                                       deadline_s=SYNTH_SLACK * 60 * plan.minutes["synthesise"],
                                       keep_at_least=min(plan.synthetic, 3 * plan.test), failed=failed)  # fmt: skip
        write_questions(questions, report, synth_path)
        if failed:
            write_atomic(extra_path, "".join(json.dumps({**f.to_record(), "training_only": True}) + "\n"
                                             for f in failed))  # fmt: skip
        synth_report = report.to_dict()
        if held_docs and plan.unanswerable:
            held_chunks = chunk_documents(held_docs, index.chunking, index.embedder.count_tokens)
            una, una_report = synthesize(held_chunks, replace(synth_cfg, n=plan.unanswerable, seed=cfg.seed + 1),
                                         qg=qg, reader=reader, unanswerable=True)  # fmt: skip
            if una:
                write_questions(una, una_report, una_path)
            else:
                say(f"  no unanswerable question survived: {una_report.notes}")
        _mark(qdir / "done.json", key)
    phases["synthesise"] = time.perf_counter() - t0
    extra = sum(1 for line in _read(extra_path).splitlines() if line.strip())
    say(f"questions: {synth_report['kept']} synthetic ({synth_report['per_minute']:.1f} per minute)"
        + (f"; {extra} more that failed only the round trip, for training" if extra else ""))  # fmt: skip

    # -- split: test questions are never trained on ----------------------------------------------
    t0 = time.perf_counter()
    ratios = (0.9, 0.1, 0.0) if real else _ratios(synth_report["kept"], plan.test)
    ranks = round_trip_ranks(synth_path)
    untested, own_note = _readers_own(ranks, plan.test) if TEST_WITHOUT_READERS_OWN and not real else (set(), "")
    prep = prepare([synth_path], out / "data", PrepareConfig(ratios=ratios, seed=cfg.seed), untested=untested)
    added = add_training_only(out / "data", [extra_path], PrepareConfig(seed=cfg.seed)) if extra else 0
    test_path = out / "data" / "test.jsonl"
    if real:
        test_path = out / "data" / "test-real.jsonl"
        write_atomic(test_path, "".join(json.dumps(r) + "\n" for r in real))
    phases["split"] = time.perf_counter() - t0
    say(
        f"split: {prep.splits}" + (f"; test = {len(real)} real questions" if real else "")
        + (f"; {added} round-trip failures added to train (none with a twin in validation or test)" if extra else "")
        + (f"; the {len(untested)} the round-trip reader answered itself are never tested on (TEST_WITHOUT_READERS_OWN)"
           if untested else "") + own_note
    )  # fmt: skip
    data_key = _fingerprint(*(_read(out / "data" / f"{s}.jsonl") for s in ("train", "validation")))

    # -- tune: retrieval settings and the gate, from training questions only --------------------------
    t0 = time.perf_counter()
    gate_n = plan.gate_questions if "rag" in cfg.strategies else 0
    tune_key = _fingerprint("tune", _content_key(index), data_key, ranks, gate_n, base.name, _version(),
                            GATES_ON_VALIDATION)  # fmt: skip
    tuned = _reused_tune(out / TUNE_MARKER, tune_key, index, base.name)
    if tuned is not None:
        say("tune: reusing the retrieval settings and gate of the previous run on these questions")
        tuned.update(tune_questions(out / "data", ranks))
    else:
        _unmark(out / TUNE_MARKER)
        tuned = tune_phase(index, out / "data", base, gate_n, say, ranks=ranks)
        _mark(out / TUNE_MARKER, tune_key, retrieval=tuned["retrieval"], state=_index_state(index, base.name))
    if plan.gate_questions and GATES_ON_VALIDATION and tuned["gate_split"] != "validation":
        say(f"gates: only {tuned['validation']} validation questions, so they are calibrated on training questions "
            "(rag+ft's adapter was trained on them: its gate may refuse more answerable questions than "
            "calibrated)")  # fmt: skip
    phases["tune"] = time.perf_counter() - t0
    loaded = {"base": base, "rag": base}  # models already in memory; the comparison reuses them

    # -- fine-tune ----------------------------------------------------------------------------------
    runs: dict[str, Path] = {}
    weights: dict[str, str] = {}  # each run's weights by content (_weights_key), read once
    base_ft = FinetuneConfig(method="lora", lora_r=16, lora_alpha=32, lr=3e-4, eval_every=10, patience=3,
                             generate_max=0, warmup_steps=4, eval_batches=6, seed=cfg.seed)  # fmt: skip
    rag_ft = dict(mode=cfg.rag_ft_mode, max_steps=plan.rag_ft_steps, batch_size=4 if cfg.rag_ft_mode == "raft" else 8,
                  lr=RAG_FT_LR, eval_batches=RAG_FT_EVAL_BATCHES, patience=RAG_FT_PATIENCE)  # fmt: skip
    for name, settings in (("ft", dict(mode="qa", max_steps=plan.qa_steps, batch_size=8)), ("rag+ft", rag_ft)):
        if name not in cfg.strategies:
            continue
        t0 = time.perf_counter()
        ft_cfg = replace(base_ft, **settings)
        mode, steps = ft_cfg.mode, ft_cfg.max_steps
        folder = out / f"ft-{mode}"
        wanted = json.loads(json.dumps(asdict(ft_cfg)))  # as the manifest keeps it (lists, not tuples)
        same = _run_config(folder) == wanted and _done(folder / DATA_MARKER, data_key)
        done = (folder / "results.json").is_file() and same
        if done:
            say(f"fine-tune {name}: reusing {folder}")
        else:
            if folder.exists() and not same:
                shutil.rmtree(folder)  # another configuration's or other questions' run (or checkpoint): start afresh
            elif (folder / CHECKPOINT).is_file():
                say(f"fine-tune {name}: resuming from the checkpoint in {folder}")
            say(f"fine-tune {name}: LoRA, mode {mode}, {steps} steps")
            folder.mkdir(parents=True, exist_ok=True)
            _unmark(folder / GATE_MARKER)  # its adapter is about to change
            _mark(folder / DATA_MARKER, data_key)  # a resumed checkpoint is only ever of these questions
            res = train(ft_cfg, out / "data", folder, index=index.url if mode == "raft" else None,
                        progress=_train_progress(say, steps))  # fmt: skip
            say(f"  best validation loss {res.best_val_loss:.3f} at step {res.best_step}")
        runs[name] = folder
        weights[name] = _weights_key(folder)
        phases[f"fine-tune {name}"] = time.perf_counter() - t0
        if name == "rag+ft" and plan.gate_questions:
            t0 = time.perf_counter()
            tuned_gen = (generators or {}).get("rag+ft") or make_generator(DEFAULT_GENERATOR, adapter=str(folder))
            loaded["rag+ft"] = tuned_gen
            marker = folder / GATE_MARKER
            gate_key = _fingerprint("gate", tune_key, dict(index.manifest.retrieval), wanted, data_key,
                                    weights[name], tuned_gen.name, plan.gate_questions)  # fmt: skip
            if _done(marker, gate_key) and _stored(marker).get("state") == _index_state(index, tuned_gen.name):
                say(f"gate for {tuned_gen.name}: reusing the calibration of the previous run")
            else:
                _unmark(marker)
                gate = calibrate_gate(index, tuned_gen, tuned["gate_examples"][: plan.gate_questions], say,
                                      split=tuned["gate_split"])  # fmt: skip
                tuned["gates"]["rag+ft"] = gate
                _mark(marker, gate_key, state=_index_state(index, tuned_gen.name))
            phases["tune"] += time.perf_counter() - t0

    # -- compare -------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    strategies = tuple(
        Strategy(n, retrieval=n.startswith("rag"), adapter=str(runs[n]) if n in runs else "") for n in cfg.strategies
    )
    exp = ExperimentConfig(
        index=index.url, questions=str(test_path), unanswerable=str(una_path) if una_path.is_file() else "",
        documents=str(paths[0]) if len(paths) == 1 else "", max_questions=plan.test,
        max_unanswerable=plan.unanswerable, fresh_edits=plan.edits, strategies=strategies, seed=cfg.seed,
    )  # fmt: skip
    # On Ray the workers load each strategy's model themselves: the models loaded here stay here.
    ready = dict(generators or {}) if cfg.ray is not None else {**loaded, **(generators or {})}
    compare_key = _compare_key(exp, index, {**loaded, **(generators or {})}, weights, doc_key, una_path)
    results = _reused_compare(out, compare_key, load_results)
    if results is not None:
        say("compare: reusing the answers of the previous run on these inputs (results.json)")
    else:
        _unmark(out / COMPARE_MARKER)
        results = run_experiment(exp, out, progress=lambda m: say(f"  {m}"), generators=ready, ray=cfg.ray,
                                 workers=cfg.workers)  # fmt: skip
        if compare_key:
            _mark(out / COMPARE_MARKER, compare_key, notes=results.notes)
    phases["compare"] = time.perf_counter() - t0
    results.phases = dict(phases, total=time.perf_counter() - t_all)
    results.questions = {
        "source": "real" if real else "synthetic", "synthetic": synth_report, "plan": plan.to_dict(),
        "test_file": str(test_path), "held_out_documents": sorted(held), "ingest": ingest_info,
        "splits": dict(prep.splits), "untested": len(untested),
    }  # fmt: skip
    results.tuning["retrieval"] = tuned["retrieval"]
    if plan.over_budget:
        results.notes.append(f"The plan did not fit the time budget: {plan.budget_warning()}.")
    if skipped:
        results.notes.append(_skipped_note(skipped))
    if not real:
        results.notes.append(
            f"The test questions are synthetic: written by ragtune from your documents and kept only if they passed "
            f"every filter ({synth_report['kept']} kept). Vet them with `ragtune rate-sheet --questions {synth_path}`."
        )
    write_results(results, out)
    write_report(results, out)
    return results


def _make_folder(out: Path) -> Path | None:
    """Make `out` (and its missing parents); the topmost folder this made, None if `out` existed."""
    from ..paths import outermost_missing

    top = outermost_missing(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # checked already; something changed since
        raise ConfigError(f"cannot make the folder {out}: {exc.strerror or exc}") from exc
    return top


def _ingest_line(n_docs: int, n_indexed: int, n_held: int, counts: dict, skipped: list, chunks: int,
                 seconds: float) -> str:  # fmt: skip
    """The ingest phase in a line: documents loaded, skipped, indexed (what changed), kept out, chunks."""
    files = sum(1 for s in skipped if not s.file)
    records = len(skipped) - files
    gone = [f"{files} file{'s' * (files != 1)}"] * bool(files) + [f"{records} record{'s' * (records != 1)}"] * bool(
        records
    )
    what = ", ".join(f"{counts[k]} {k}" for k in ("added", "updated", "unchanged", "deleted") if counts.get(k))
    return (
        f"ingest: {n_docs} documents loaded"
        + (f" ({' and '.join(gone)} skipped, listed above)" if gone else "")
        + f"; {n_indexed} indexed ({what or 'nothing changed'})"
        + (f", {n_held} kept out for unanswerable questions" if n_held else "")
        + f" -> {chunks} chunks in {seconds:.0f}s"
    )


def _skipped_note(skipped: list) -> str:
    shown = "; ".join(f"{s.path} ({s.reason})" for s in skipped[:5])
    more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    return f"{len(skipped)} of the inputs could not be read and are not part of this evaluation: {shown}{more}."


def _version() -> str:
    from .. import __version__

    return __version__


def _content_key(index) -> str:
    """What an index holds, its tuned settings aside: embedder, chunking, every document's content hash."""
    m = index.manifest
    return _fingerprint(m.embedder, m.dim, m.chunking, sorted(index.store.document_hashes().items()))


def _index_state(index, generator: str) -> dict:
    """What tuning leaves in an index for `generator`: the retrieval settings and its gate (as JSON keeps them)."""
    m = index.manifest
    return json.loads(json.dumps({"retrieval": m.retrieval, "gate": m.gate.get(generator)}, default=str))


def _stored(marker: Path) -> dict:
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _reused_tune(marker: Path, key: str, index, generator: str) -> dict | None:
    """The tune phase's recorded result when it was computed from these inputs and the index still
    holds what it left there (no `ragtune tune` since); else None."""
    data = _stored(marker)
    if data.get("key") != key or data.get("state") != _index_state(index, generator):
        return None
    return {"retrieval": data.get("retrieval") or {}, "gates": {}}


def _weights_key(folder: Path) -> str:
    """A fine-tuning run's weights, by content (a resumed or retrained run may differ)."""
    from ..finetune.run import RunFolder

    try:
        weights = RunFolder.open(folder).weights
        files = sorted(p for p in Path(weights).rglob("*") if p.is_file())
        h = hashlib.sha256()
        for p in files:
            h.update(str(p.relative_to(weights)).encode())
            with p.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        return h.hexdigest()
    except (OSError, RagtuneError):
        return f"unknown-{time.time()}"  # never matches: the calibration is redone


def _compare_key(exp, index, generators: dict, weights: dict, doc_key, una_path: Path) -> str | None:
    """Everything the comparison's answers depend on: the experiment (questions, strategies, counts),
    the questions' contents, the documents (the freshness edits come from them), the index's contents,
    retrieval settings and the gate each retrieval strategy will use, each adapter's weights and each
    generator's name. None (never reused) when a generator is not known here."""
    from ..rag import index_gate

    names, gates = {}, {}
    for s in exp.strategies:
        gen = generators.get(s.name)
        if gen is None and s.retrieval:
            return None  # loaded by the comparison itself: its gate is not known here
        names[s.name] = getattr(gen, "name", "") if gen is not None else ""
        if s.retrieval:
            gate = index_gate(index, names[s.name])
            gates[s.name] = gate.to_dict() if gate is not None else None
    test = _read(Path(exp.questions))
    return _fingerprint("compare", asdict(exp), test, _read(una_path) if exp.unanswerable else "", doc_key,
                        _content_key(index), index.manifest.retrieval, gates, names, dict(sorted(weights.items())),
                        _version())  # fmt: skip


def _reused_compare(out: Path, key: str | None, load_results):
    """The Results of the previous run's comparison when it was answered from the same inputs; else None."""
    data = _stored(out / COMPARE_MARKER)
    if not key or data.get("key") != key or not (out / "results.json").is_file():
        return None
    try:
        results = load_results(out)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    results.notes = list(data.get("notes") or [])  # the comparison's own; this run adds its notes again
    return results


def _load_plan(path: Path, key: str) -> Plan | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.pop("key", None) != key:
        return None
    data.pop("total_min", None), data.pop("over_budget", None)  # derived (Plan.to_dict)
    try:
        return Plan(**data)
    except TypeError:  # written by another version
        return None


def _run_config(folder: Path) -> dict | None:
    """The FinetuneConfig a run folder was (or is being) trained with, from its manifest."""
    from ..finetune.run import MANIFEST

    try:
        return json.loads((folder / MANIFEST).read_text()).get("config")
    except (OSError, ValueError, AttributeError):
        return None


def round_trip_ranks(synth_path: Path) -> dict[str, int]:
    """Each synthetic question's round-trip rank (1: the reader's own answer), by id."""
    recs = (json.loads(line) for line in _read(synth_path).splitlines() if line.strip())
    return {r.get("id"): r.get("scores", {}).get("round_trip_rank", 1) for r in recs}


def _readers_own(ranks: dict[str, int], test: int) -> tuple[set[str], str]:
    """The synthetic questions never to test on (TEST_WITHOUT_READERS_OWN): those the round-trip reader
    answered itself (rank 1), when the others are enough for the test; else none, and a note saying why."""
    own = {i for i, r in ranks.items() if r == 1}
    others = len(ranks) - len(own)
    if others >= min(test, len(ranks) // 2) and others >= MIN_SYNTHETIC:
        return own, ""
    why = ("the round-trip reader ranked no answers: every question is its own first one" if not others
           else f"only {others} are not its own first answer, too few for a {test}-question test")  # fmt: skip
    return set(), f"; the test includes questions the round-trip reader answered itself ({why})"


def tune_phase(index, data: Path, generator, gate_questions: int, say: Say, ranks: dict | None = None) -> dict:
    """Tune retrieval on the training and validation questions of a prepared `data` folder and
    calibrate `generator`'s gate on `gate_questions` of the validation ones (`tune_questions`); the
    test questions are never used."""
    from ..tuning import tune_retrieval

    out: dict = {**tune_questions(data, ranks), "retrieval": {}, "gates": {}}
    examples, gate_ex, split = out["examples"], out["gate_examples"], out["gate_split"]
    try:
        report = tune_retrieval(index, examples)
    except RagtuneError as exc:
        say(f"tune: retrieval left at its defaults ({exc})")
    else:
        out["retrieval"] = {"chosen": report.chosen, "before": report.before, "after": report.after,
                            "questions": report.n_questions}  # fmt: skip
        say("tune: " + "\n  ".join(report.lines()))
    if gate_questions:
        out["gates"]["rag"] = calibrate_gate(index, generator, gate_ex[:gate_questions], say, split=split)
    return out


def training_examples(data: Path, ranks: dict | None = None, splits=("train", "validation")) -> list:
    """The questions of a prepared `data` folder's `splits` (training and validation) that name their document,
    those the round-trip reader answered itself (`ranks` 1) first; with `ranks`, only the questions
    it ranks (those that failed the round trip, trained on, tune neither retrieval nor the gate)."""
    from .compare import load_questions

    examples = [e for f in (f"{s}.jsonl" for s in splits) if (data / f).is_file()
                for e in load_questions(str(data / f), 10**9)
                if e.doc_ids and (not ranks or e.id in ranks)]  # fmt: skip
    return _rank_order(examples, ranks)


def _rank_order(examples: list, ranks: dict | None) -> list:
    """Those the round-trip reader answered itself (`ranks` 1) first; stable: the given order within a rank."""
    return sorted(examples, key=lambda e: (ranks or {}).get(e.id, 1))


def tune_questions(data: Path, ranks: dict | None) -> dict:
    """The questions of a prepared `data` folder that tune: `examples` (training and validation,
    `training_examples`) tune retrieval; the gates are calibrated on `gate_examples`, the validation
    ones (`gate_split` "validation"), which a fine-tuned adapter never trained on — on those it
    trained on it is overconfident (GATES_ON_VALIDATION) — or, with fewer than a gate needs, on the
    training ones (`gate_split` "training"); `validation` counts the validation ones."""
    from ..gate import MIN_EACH

    validation = training_examples(data, ranks, splits=("validation",))
    examples = _rank_order([*training_examples(data, ranks, splits=("train",)), *validation], ranks)  # each read once
    held = validation if GATES_ON_VALIDATION else []
    out = {"examples": examples, "validation": len(held)}
    if len(held) >= MIN_EACH:
        return {**out, "gate_examples": held, "gate_split": "validation"}
    return {**out, "gate_examples": examples, "gate_split": "training"}


def calibrate_gate(index, generator, examples, say: Say, split: str = "training") -> dict:
    """Fit and record `generator`'s gate on `examples` (asked as they are, then with their own
    document kept out of retrieval; from the `split` the report names); {} with a note when there are too few."""
    from ..gate import calibrate

    try:
        gate = calibrate(index, generator, [e.question for e in examples],
                         answerable_doc_ids=[e.doc_ids[0] for e in examples])  # fmt: skip
    except RagtuneError as exc:
        say(f"gate for {generator.name}: not calibrated ({exc})")
        return {}
    gate.calibration["split"] = split
    index.set_gate(gate, generator.name)
    c = gate.calibration
    say(f"gate for {generator.name}: abstains on {100 * c['abstention']:.0f}% of calibration questions with their "
        f"document kept out, {100 * c['false_abstention']:.0f}% of answerable ones")  # fmt: skip
    return gate.to_dict()


def _real_questions(path: str) -> list[dict]:
    from .compare import load_questions

    return [
        {"id": e.id, "question": e.question, "answers": list(e.answers), "doc_id": e.doc_ids[0] if e.doc_ids else ""}
        for e in load_questions(path, 10_000)
    ]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def _ratios(kept: int, test: int) -> tuple[float, float, float]:
    """Train / validation / test shares that give about `test` test questions (at most half of them)."""
    if kept < MIN_SYNTHETIC:
        raise ConfigError(f"only {kept} synthetic questions survived: too few to train and test on (see the report)")
    t = min(0.5, max(0.1, test / kept))  # past MAX_TEST, the plan asks for more training questions
    v = max(0.1, min(0.2, GATE_QUESTIONS[0] / kept))  # enough for the gates (`tune_questions`)
    return (round(1 - t - v, 4), v, round(t, 4))


def _every(say: Say, what: str, seconds: float = 15.0):
    last = {"t": 0.0}

    def cb(done: int, total: int) -> None:
        if time.perf_counter() - last["t"] > seconds or done >= total:
            last["t"] = time.perf_counter()
            say(f"  {what}: {done}/{total}")

    return cb


def _train_progress(say: Say, total: int):
    last = {"t": 0.0}

    def cb(step, _total, loss, tps):
        if time.perf_counter() - last["t"] > 15 or step == total:
            last["t"] = time.perf_counter()
            say(f"  step {step}/{total}  loss {loss:.3f}  {tps:.0f} tokens/s")

    return cb
