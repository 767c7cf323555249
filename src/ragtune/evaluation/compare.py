"""Run an experiment: every strategy on the same questions, then aggregate with intervals.

results = run_experiment(load_experiment("experiment.toml"), out_dir)
"""

from __future__ import annotations

import csv
import json
import shutil
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from ..config import RagConfig, build, read_toml
from ..documents import QAExample, load_paths, load_squad
from ..errors import ConfigError
from ..rag import Pipeline
from .costs import Measured, Meter, Prices, disk_bytes
from .freshness import edit_facts, edited_sentence, is_fresh, is_stale
from .metrics import METRICS, PAIRED, QuestionKind
from .stats import bootstrap_ci, paired_bootstrap
from .strategies import EvalRecord, Strategy, load_generator, run_strategy

DEFAULT_STRATEGIES = ("base", "rag", "ft", "rag+ft")


@dataclass(frozen=True)
class ExperimentConfig:
    index: str  # the index retrieval strategies read
    questions: str  # held-out answerable questions: prepared split (.jsonl), QA JSONL or SQuAD JSON
    strategies: tuple[Strategy, ...] = (Strategy("base", False), Strategy("rag", True))
    unanswerable: str = ""  # questions whose gold documents are kept out of the index
    documents: str = ""  # the files the index was built from (freshness edits them)
    max_questions: int = 100
    max_unanswerable: int = 30
    fresh_edits: int = 10  # facts to edit for the freshness test (0 = skip)
    k: int = 0  # hits per question; 0 = the index's (tuned) setting
    max_new_tokens: int = 32  # the same decoding for every strategy (greedy)
    support_threshold: float = (
        0.5  # answers whose content words are less than half in the retrieved text are unsupported
    )
    bootstrap: int = 1000
    seed: int = 0
    prices: Prices = Prices()

    def __post_init__(self) -> None:
        names = [s.name for s in self.strategies]
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"strategies={names!r}: need at least one, with distinct names")
        for name in ("max_questions", "max_new_tokens", "bootstrap"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r}: must be at least 1")
        if self.k < 0:
            raise ConfigError(f"k={self.k!r}: must be at least 1 (or 0 for the index's setting)")
        if not 0 <= self.support_threshold <= 1:
            raise ConfigError(f"support_threshold={self.support_threshold!r}: must be in [0, 1]")


def load_experiment(path: str | Path) -> ExperimentConfig:
    """TOML: an [experiment] table, optional [prices], and [[strategy]] tables (name, retrieval, adapter, generator).
    Relative paths are relative to the file; index URLs (pg:..., postgresql://...) are kept as they are."""
    p = Path(path)
    data = read_toml(p, "experiment file")
    unknown = sorted(set(data) - {"experiment", "strategy", "prices"})
    if unknown:
        raise ConfigError(
            f"experiment file {str(p)!r}: unknown sections {unknown}; known: ['experiment', 'prices', 'strategy']"
        )
    exp = dict(data.get("experiment", {}))
    for key in ("index", "questions", "unanswerable", "documents"):
        if exp.get(key) and not _is_url(exp[key]) and not Path(exp[key]).is_absolute():
            exp[key] = str(p.parent / exp[key])
    strategies = []
    for s in data.get("strategy", []):
        if s.get("adapter") and not Path(s["adapter"]).is_absolute():
            s = {**s, "adapter": str(p.parent / s["adapter"])}
        strategies.append(build(Strategy, s, "strategy"))
    if strategies:
        exp["strategies"] = tuple(strategies)
    if "strategies" in exp and not strategies or "prices" in exp:
        raise ConfigError("[experiment]: give strategies as [[strategy]] tables and prices as a [prices] table")
    return build(ExperimentConfig, {**exp, "prices": build(Prices, data.get("prices", {}), "prices")}, "experiment")


def _is_url(value: str) -> bool:
    return ":" in value.split("/", 1)[0] and len(value.split(":", 1)[0]) > 1


def load_questions(path: str, limit: int) -> list[QAExample]:
    """A prepared split (.jsonl from `ragtune prepare`), QA JSONL, or SQuAD JSON."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"questions file {path!r} does not exist")
    if p.suffix == ".json":
        return load_squad(p)[1][:limit]
    out = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        r = json.loads(line)
        answers = tuple(r.get("answers") or ([r["answer"]] if r.get("answer") else []))
        out.append(
            QAExample(
                str(r.get("id", i)),
                r["question"],
                answers,
                (r["doc_id"],) if r.get("doc_id") else (),
                r.get("context", ""),
            )
        )
    return [e for e in out if e.answers][:limit]


@dataclass
class Results:
    config: dict
    strategies: list[dict]
    aggregates: dict[str, dict] = field(default_factory=dict)  # strategy -> metric -> {mean, low, high} or value
    paired: list[dict] = field(default_factory=list)
    freshness: dict = field(default_factory=dict)
    costs: dict[str, dict] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)  # phase -> seconds (the demo fills it)
    ratings: dict[str, dict] = field(default_factory=dict)
    records: list[EvalRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    questions: dict = field(default_factory=dict)  # where the questions came from (synthetic: the synth report)
    tuning: dict = field(default_factory=dict)  # evaluate: tuned retrieval settings and each strategy's gate


def _mean(xs: Sequence[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _pct(xs: Sequence[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


def aggregate(records: Sequence[EvalRecord], cfg: ExperimentConfig) -> dict:
    ans = [r for r in records if r.kind == QuestionKind.ANSWERABLE]
    una = [r for r in records if r.kind == QuestionKind.UNANSWERABLE]
    ed = [r for r in records if r.kind == QuestionKind.EDITED]
    out: dict = {"n_answerable": len(ans), "n_unanswerable": len(una), "n_edited": len(ed)}
    for m in METRICS:
        if m.per_answer:
            out[m.key] = asdict(bootstrap_ci([getattr(r, m.key) * m.scale for r in ans], cfg.bootstrap, cfg.seed))
    out["abstain_unanswerable"] = (
        asdict(bootstrap_ci([float(r.abstained) for r in una], cfg.bootstrap, cfg.seed)) if una else None
    )
    out["false_abstention"] = _mean([float(r.abstained) for r in ans])
    retrieved = [r for r in ans if r.retrieved]
    out["unsupported"] = _mean([float(r.unsupported) for r in records if r.retrieved and r.kind != QuestionKind.EDITED])
    out["recall_at_k"] = _mean([float(r.gold_rank is not None) for r in retrieved])
    out["mrr"] = _mean([1.0 / r.gold_rank if r.gold_rank else 0.0 for r in retrieved])
    out["citation_precision"] = _mean([r.citation_precision for r in ans])
    out["citation_recall"] = _mean([r.citation_recall for r in ans])
    out["fresh_rate"] = _mean([float(bool(r.fresh)) for r in ed])
    out["stale_rate"] = _mean([float(bool(r.stale)) for r in ed])
    lat = [r.total_s for r in records]
    out["latency_mean_s"] = statistics.mean(lat) if lat else 0.0
    out["latency_p50_s"] = _pct(lat, 0.5)
    out["latency_p95_s"] = _pct(lat, 0.95)
    for stage in ("retrieve_s", "context_s", "generate_s"):
        out[f"{stage[:-2]}_mean_s"] = statistics.mean([getattr(r, stage) for r in records]) if records else 0.0
    out["tokens_in_mean"] = statistics.mean([r.tokens_in for r in records]) if records else 0
    out["tokens_out_mean"] = statistics.mean([r.tokens_out for r in records]) if records else 0
    return out


Progress = Callable[[str], None]


def run_experiment(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    progress: Progress | None = None,
    phases: dict | None = None,
    generators: dict | None = None,
) -> Results:
    """Answer the same questions with every strategy, edit facts and ask again, aggregate, write
    results.json and records.csv. Retrieval strategies read `cfg.index`, which is never changed:
    the freshness test edits a copy. `generators` maps strategy names to ready generators
    (tests use scripted ones); the others load from the strategy's model and adapter."""
    from ..index import Index

    say = progress or (lambda msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    needs_index = any(s.retrieval for s in cfg.strategies) or cfg.fresh_edits
    index = Index.open(cfg.index) if needs_index else None
    base_cfg = index.rag_config() if index is not None else RagConfig()
    rag_cfg = replace(base_cfg, k=cfg.k or base_cfg.k, max_new_tokens=cfg.max_new_tokens)
    answerable = load_questions(cfg.questions, cfg.max_questions)
    unanswerable = load_questions(cfg.unanswerable, cfg.max_unanswerable) if cfg.unanswerable else []
    if index is not None and unanswerable:
        stored = {d.id for d in index.documents()}
        leaked = [e.id for e in unanswerable if set(e.doc_ids) & stored]
        if leaked:
            raise ConfigError(
                f"{len(leaked)} 'unanswerable' questions have their gold document in the index (e.g. {leaked[0]!r})"
            )
    results = Results(
        config=_jsonable(asdict(cfg)), strategies=[asdict(s) for s in cfg.strategies], phases=dict(phases or {})
    )

    # Freshness: edit facts in a copy of the index, timing the incremental re-ingest.
    edits, fresh = [], None
    if cfg.fresh_edits and cfg.documents and index is not None:
        docs = (
            load_squad(cfg.documents)[0] if cfg.documents.endswith(".json") else load_paths([cfg.documents]).documents
        )
        edited_docs, edits = edit_facts(docs, answerable, cfg.fresh_edits, cfg.seed)
        # The edits go to a copy (a local LanceDB folder, whatever the backend) so cfg.index stays as it was.
        fresh_path = out / "fresh-index"
        shutil.rmtree(fresh_path, ignore_errors=True)
        fresh = index.copy_to(fresh_path)
        say(f"freshness: editing {len(edits)} facts and re-ingesting")
        with Meter() as m:
            rep = fresh.ingest(edited_docs)
        results.freshness = {
            "edits": [
                {"question": e.example.question, "doc_id": e.doc_id, "old": e.old, "new": e.new, "kind": e.kind,
                 "sentence": edited_sentence(e)}
                for e in edits
            ],
            "reingest": {**asdict(m.result), "updated": len(rep.updated), "chunks": rep.chunks_written},
        }
    elif cfg.fresh_edits:
        results.notes.append("freshness skipped: the experiment names no `documents` to edit")

    cache: dict = {}
    for s in cfg.strategies:
        gen = (generators or {}).get(s.name) or load_generator(s, cache)
        getattr(gen, "model", None)  # load outside the meter: per-question cost is answering, not loading
        pipe = Pipeline(index if s.retrieval else None, gen, rag_cfg)
        fresh_pipe = Pipeline(fresh if s.retrieval else None, gen, rag_cfg)
        if pipe.gate is not None:
            results.tuning.setdefault("gates", {})[s.name] = pipe.gate.to_dict()
        with Meter() as m:
            say(f"{s.name}: {len(answerable)} answerable questions")
            recs = run_strategy(s, answerable, QuestionKind.ANSWERABLE, pipe, cfg.support_threshold)
            if unanswerable:
                say(f"{s.name}: {len(unanswerable)} unanswerable questions")
                recs += run_strategy(s, unanswerable, QuestionKind.UNANSWERABLE, pipe, cfg.support_threshold)
            if edits:
                say(f"{s.name}: {len(edits)} edited facts")
                erecs = run_strategy(
                    s, [e.example for e in edits], QuestionKind.EDITED, fresh_pipe, cfg.support_threshold
                )
                for r, e in zip(erecs, edits):
                    r.fresh, r.stale = is_fresh(r.answer, e), is_stale(r.answer, e)
                recs += erecs
        results.records += recs
        results.aggregates[s.name] = aggregate(recs, cfg)
        results.costs[s.name] = _costs(s, m.result, len(recs), cfg, results, index)

    names = [s.name for s in cfg.strategies]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            for m in PAIRED:
                xa = [
                    getattr(r, m.key) * m.scale
                    for r in results.records
                    if r.strategy == a and r.kind == QuestionKind.ANSWERABLE
                ]
                xb = [
                    getattr(r, m.key) * m.scale
                    for r in results.records
                    if r.strategy == b and r.kind == QuestionKind.ANSWERABLE
                ]
                results.paired.append(asdict(paired_bootstrap(xa, xb, (a, b), m.key, cfg.bootstrap, cfg.seed)))
    write_results(results, out)
    return results


def _costs(s: Strategy, run: Measured, n: int, cfg: ExperimentConfig, results: Results, index) -> dict:
    """Set-up cost (index build, training run), per-question cost, sizes and labelled data."""
    setup_wall = setup_cpu = 0.0
    steps = ["load the base model"]
    index_bytes = adapter_bytes = labelled = 0
    if s.retrieval:
        m = index.manifest
        setup_wall += m.build_wall_s
        setup_cpu += m.build_cpu_s
        index_bytes = index.store.disk_bytes()
        steps += ["ingest documents (chunk, embed, index)"]
    train = s.training_run()
    if s.adapter:
        setup_wall += float(train.get("wall_s", 0.0))
        setup_cpu += float(train.get("cpu_s", 0.0))
        adapter_bytes = disk_bytes(s.run().weights)
        labelled = int(train.get("train_examples", 0))
        steps += [
            "label question/answer pairs",
            "prepare and split data",
            f"fine-tune ({train.get('config', {}).get('mode', '?')})",
        ]
    per_q_cpu = run.cpu_s / max(n, 1)
    reingest = results.freshness.get("reingest", {})
    return {
        "setup_wall_s": setup_wall,
        "setup_cpu_s": setup_cpu,
        "setup_usd": setup_cpu / 3600 * cfg.prices.cpu_hour,
        "per_question_wall_s": run.wall_s / max(n, 1),
        "per_question_cpu_s": per_q_cpu,
        "per_1000_questions_usd": 1000 * per_q_cpu / 3600 * cfg.prices.cpu_hour,
        "peak_rss_mb": run.peak_rss_mb,
        "index_bytes": index_bytes,
        "adapter_bytes": adapter_bytes,
        "labelled_examples": labelled,
        "setup_steps": steps,
        # What absorbing a change in the documents costs this strategy:
        "update_cost_s": reingest.get("wall_s", 0.0)
        if s.retrieval
        else (float(train.get("wall_s", 0.0)) if s.adapter else None),
        "update_by": "incremental re-ingest"
        if s.retrieval
        else ("re-training" if s.adapter else "nothing can update it"),
    }


def _jsonable(d):
    return json.loads(json.dumps(d, default=str))


def write_results(results: Results, out: Path) -> None:
    (out / "results.json").write_text(json.dumps(asdict(results), indent=2, ensure_ascii=False, default=str))
    cols = [f.name for f in fields(EvalRecord)]
    with (out / "records.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in results.records:
            row = asdict(r)
            w.writerow({k: (" | ".join(map(str, v)) if isinstance(v, list) else v) for k, v in row.items()})


def load_results(out: str | Path) -> Results:
    data = json.loads((Path(out) / "results.json").read_text())
    data["records"] = [EvalRecord(**r) for r in data["records"]]
    return Results(**data)
