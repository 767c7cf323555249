"""Run an experiment: every strategy on the same questions, then aggregate with intervals.

results = run_experiment(load_experiment("experiment.toml"), out_dir)

A run survives being killed: each batch of finished records is appended to
`<out>/records.partial.jsonl` (flushed and fsync'd), tagged with a fingerprint of everything that
decides it, and a rerun into the same folder reuses the records whose fingerprint still matches.
results.json and records.csv are written whole (temp file, then rename) at the end.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from ..config import RagConfig, build, read_toml
from ..devices import describe
from ..documents import QAExample, load_paths, load_squad
from ..errors import ConfigError
from ..rag import Pipeline
from .costs import Measured, Meter, Prices, disk_bytes
from .freshness import edit_facts, edited_sentence, is_fresh, is_stale
from .metrics import METRICS, PAIRED, QuestionKind
from .stats import bootstrap_ci, paired_bootstrap
from .strategies import EvalRecord, Strategy, load_generator, run_strategy

DEFAULT_STRATEGIES = ("base", "rag", "ft", "rag+ft")
PARTIAL = "records.partial.jsonl"  # finished records of a run that has not finished yet
BATCH = 8  # questions answered together (the generator's batch if it has one); the unit of resuming
# Answerable questions each strategy answers once more, alone, for its latency as a user asking one
# question meets it (a record's timing is its batch's time per question: a throughput, not a latency).
LATENCY_PROBES = 3


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
    runtime: dict = field(default_factory=dict)  # what ran each model and where: embedder, each strategy's generator


def _mean(xs: Sequence[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _pct(xs: Sequence[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


def latency_alone(pipe: Pipeline, examples: Sequence[QAExample]) -> float | None:
    """Median seconds to answer one of `examples` alone (each asked by itself, as `ask` or one client
    of `serve` would), or None without questions. The question's vector may be the embedder's cached one."""
    times = []
    for e in examples:
        t0 = time.perf_counter()
        pipe.answer_batch([e.question])
        times.append(time.perf_counter() - t0)
    return statistics.median(times) if times else None


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
    ray: str | None = None,
    workers: int | None = None,
) -> Results:
    """Answer the same questions with every strategy, edit facts and ask again, aggregate, write
    results.json and records.csv. Retrieval strategies read `cfg.index`, which is never changed:
    the freshness test edits a copy. `generators` maps strategy names to ready generators
    (tests use scripted ones); the others load from the strategy's model and adapter.
    `ray` ("local", "auto" or an address) answers the batches on a pool of Ray actors (`workers`,
    default one per CPU), each loading a strategy's model once; the records are the same as a
    local run's (same batches, greedy), written to the same log as batches finish."""
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
        # names are swapped for names of the same kind (the index's embedder judges it): believable edits
        edited_docs, edits = edit_facts(docs, answerable, cfg.fresh_edits, cfg.seed, embedder=index.embedder)
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

    # Finished records of an interrupted run into this folder are reused when their fingerprint
    # (strategy, generator, adapter run, retrieval settings, gate, index contents, question) matches.
    if index is not None:
        results.runtime["embedder"] = describe(index.embedder)
    log = RecordLog(out / PARTIAL)
    index_key = _index_key(index) if index is not None else ""
    fresh_key = _index_key(fresh) if fresh is not None else ""
    reused = total = 0
    cache: dict = {}
    pool = None
    if ray is not None:
        from ..distributed import AnswerPool

        urls = {"main": index.url if index is not None else "", "fresh": fresh.url if fresh is not None else ""}
        pool = AnswerPool(ray, urls, rag_cfg, generators, workers)
        say(f"answering on Ray: {pool.workers} workers")
    try:
        for s in cfg.strategies:
            gen = (generators or {}).get(s.name) or load_generator(s, cache)
            if pool is None:
                getattr(gen, "model", None)  # load outside the meter: per-question cost is answering, not loading
            pipe = Pipeline(index if s.retrieval else None, gen, rag_cfg)
            results.runtime[s.name] = {**describe(gen), **({"ray_workers": pool.workers} if pool else {})}
            fresh_pipe = Pipeline(fresh if s.retrieval else None, gen, rag_cfg)
            if pipe.gate is not None:
                results.tuning.setdefault("gates", {})[s.name] = pipe.gate.to_dict()
            key = _digest(asdict(s), getattr(gen, "name", type(gen).__name__), s.training_run(), asdict(rag_cfg),
                          cfg.support_threshold)  # fmt: skip
            asked = _digest(key, _gate(pipe), index_key if s.retrieval else "")
            run = _Runner(s, log, max(int(getattr(gen, "batch_size", 0) or BATCH), 1), cfg.support_threshold, pool)
            say(f"{s.name}: {len(answerable)} answerable questions")
            recs = run(answerable, QuestionKind.ANSWERABLE, pipe, asked)
            if unanswerable:
                say(f"{s.name}: {len(unanswerable)} unanswerable questions")
                recs += run(unanswerable, QuestionKind.UNANSWERABLE, pipe, asked)
            if edits:
                say(f"{s.name}: {len(edits)} edited facts")

                def mark(part: list[EvalRecord], start: int) -> None:
                    for r, e in zip(part, edits[start:]):
                        r.fresh, r.stale = is_fresh(r.answer, e), is_stale(r.answer, e)

                edited = _digest(key, _gate(fresh_pipe), fresh_key if s.retrieval else "")
                recs += run([e.example for e in edits], QuestionKind.EDITED, fresh_pipe, edited,
                            extra=[(e.doc_id, e.old, e.new, e.kind) for e in edits], after=mark,
                            which="fresh")  # fmt: skip
            if run.reused:
                say(f"{s.name}: reused {run.reused} of {len(recs)} records finished by an interrupted run")
            reused, total = reused + run.reused, total + len(recs)
            results.records += recs
            results.aggregates[s.name] = aggregate(recs, cfg)
            if pool is None:
                results.aggregates[s.name]["latency_alone_s"] = latency_alone(pipe, answerable[:LATENCY_PROBES])
            results.costs[s.name] = _costs(s, run.cost(), len(recs), cfg, results, index)
    finally:
        log.close()
        if pool is not None:
            pool.close()
    if reused:
        say(f"reused {reused} of {total} records from {out / PARTIAL}")

    results.paired += paired_tests(results.records, [s.name for s in cfg.strategies], cfg)
    write_results(results, out)
    (out / PARTIAL).unlink(missing_ok=True)  # finished: results.json holds every record now
    return results


def paired_tests(records: Sequence[EvalRecord], names: Sequence[str], cfg: ExperimentConfig) -> list[dict]:
    """Every pair of strategies' paired bootstrap test on each PAIRED metric of the answerable questions,
    and on freshness where there are edited facts."""

    def scores(strategy: str, kind: str, value) -> list[float]:  # one per question, in the records' order
        return [value(r) for r in records if r.strategy == strategy and r.kind == kind]

    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            for m in PAIRED:
                value = lambda r, m=m: getattr(r, m.key) * m.scale  # noqa: E731
                xa, xb = (scores(s, QuestionKind.ANSWERABLE, value) for s in (a, b))
                out.append(asdict(paired_bootstrap(xa, xb, (a, b), m.key, cfg.bootstrap, cfg.seed)))
            # Freshness too: a few edited facts, so whether one strategy is really fresher is a test as well.
            fa, fb = (scores(s, QuestionKind.EDITED, lambda r: 100.0 * bool(r.fresh)) for s in (a, b))
            if fa:
                out.append(asdict(paired_bootstrap(fa, fb, (a, b), "fresh", cfg.bootstrap, cfg.seed)))
    return out


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _index_key(index) -> str:
    """What the index holds: embedder, chunking and every document's content hash."""
    m = index.manifest
    return _digest(m.embedder, m.dim, m.chunking, sorted(index.store.document_hashes().items()))


def _gate(pipe: Pipeline):
    return pipe.gate.to_dict() if pipe.gate is not None else None


class RecordLog:
    """The finished records of a run, one JSON line each ({"fp", "record", "wall_s", "cpu_s"}),
    appended, flushed and fsync'd batch by batch. Opening it drops lines a kill tore."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: dict[str, dict] = {}
        if path.is_file():
            raw = path.read_bytes()
            lines = [line for line in raw.split(b"\n") if line.strip()]
            good = []
            for line in lines:
                try:
                    row = json.loads(line)
                    EvalRecord(**row["record"])
                    float(row["wall_s"]), float(row["cpu_s"])
                    self.rows[str(row["fp"])] = row
                    good.append(line)
                except (ValueError, KeyError, TypeError):
                    continue  # torn by a kill part-way through writing it
            if len(good) != len(lines) or (raw and not raw.endswith(b"\n")):
                write_atomic(path, b"".join(line + b"\n" for line in good))
        self._fh = path.open("a", encoding="utf-8")

    def get(self, fp: str) -> dict | None:
        return self.rows.get(fp)

    def add(self, rows: Sequence[dict]) -> None:
        self._fh.write("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.rows.update((r["fp"], r) for r in rows)

    def close(self) -> None:
        self._fh.close()


class _Runner:
    """Answers one strategy's questions batch by batch, reusing batches the log already holds whole
    (a batch is answered again as a whole, so every answer comes from the same batch as in a run
    that was never interrupted), and keeps each record's share of its batch's measured cost."""

    def __init__(self, strategy: Strategy, log: RecordLog, batch: int, support_threshold: float, pool=None):
        self.strategy, self.log, self.batch, self.threshold = strategy, log, batch, support_threshold
        self.pool = pool  # an AnswerPool: batches answered on Ray workers
        self.reused = 0
        self.wall_s = self.cpu_s = 0.0

    def __call__(self, examples: Sequence[QAExample], kind: str, pipe: Pipeline, key: str, extra: Sequence = (),
                 after: Callable[[list[EvalRecord], int], None] | None = None,
                 which: str = "main") -> list[EvalRecord]:  # fmt: skip
        fps = [
            _digest(key, kind, e.id, e.question, list(e.answers), list(e.doc_ids), extra[i] if extra else None)
            for i, e in enumerate(examples)
        ]
        starts = range(0, len(examples), self.batch)
        done: dict[int, list[dict]] = {}
        todo = []
        for start in starts:
            rows = [self.log.get(fp) for fp in fps[start : start + self.batch]]
            if all(rows):
                self.reused += len(rows)
                done[start] = rows
            else:
                todo.append(start)

        def finish(start: int, recs: list[EvalRecord], wall_s: float, cpu_s: float) -> None:
            if after:
                after(recs, start)
            n = max(len(recs), 1)
            done[start] = [
                {"fp": fp, "record": asdict(r), "wall_s": wall_s / n, "cpu_s": cpu_s / n}
                for fp, r in zip(fps[start : start + self.batch], recs)
            ]
            self.log.add(done[start])

        if self.pool is not None and todo:
            jobs = [(start, self.strategy, list(examples[start : start + self.batch]), kind, which, self.threshold)
                    for start in todo]  # fmt: skip
            for start, recs, wall_s, cpu_s in self.pool.map(jobs):
                finish(start, recs, wall_s, cpu_s)
        else:
            for start in todo:
                with Meter() as m:
                    recs = run_strategy(self.strategy, examples[start : start + self.batch], kind, pipe, self.threshold)
                finish(start, recs, m.result.wall_s, m.result.cpu_s)
        out: list[EvalRecord] = []
        for start in starts:
            rows = done[start]
            out += [EvalRecord(**r["record"]) for r in rows]
            self.wall_s += sum(r["wall_s"] for r in rows)
            self.cpu_s += sum(r["cpu_s"] for r in rows)
        return out

    def cost(self) -> Measured:
        """Wall and CPU seconds of answering (summed per record, so reused records count what they
        cost when they were answered) and this process's peak memory."""
        with Meter() as m:
            pass
        return Measured(self.wall_s, self.cpu_s, m.result.peak_rss_mb)


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


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a file whole or not at all: a temp file beside it, fsync'd, then renamed over it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_results(results: Results, out: Path) -> None:
    out = Path(out)
    write_atomic(out / "results.json", json.dumps(asdict(results), indent=2, ensure_ascii=False, default=str))
    cols = [f.name for f in fields(EvalRecord)]
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for r in results.records:
        row = asdict(r)
        w.writerow({k: (" | ".join(map(str, v)) if isinstance(v, list) else v) for k, v in row.items()})
    write_atomic(out / "records.csv", buf.getvalue())


def load_results(out: str | Path) -> Results:
    data = json.loads((Path(out) / "results.json").read_text())
    data["records"] = [EvalRecord(**r) for r in data["records"]]
    return Results(**data)
