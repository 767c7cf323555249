"""`ragtune` command line: a few lines per verb over library functions."""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import socket
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path

from .config import RETRIEVAL_MODES, Settings, load_settings
from .errors import ConfigError, DocumentError, InputError, RagtuneError
from .fast_generators import BACKENDS as GENERATOR_BACKENDS
from .index import Index, open_or_none
from .rag import Pipeline
from .registry import make_generator, registry

EXIT_SKIPPED = 3  # the run finished but some input was skipped


def _dump(obj) -> str:
    def default(o):
        if is_dataclass(o):
            return asdict(o)
        if isinstance(o, (set, frozenset, tuple)):
            return list(o)
        if isinstance(o, Path):
            return str(o)
        return str(o)

    return json.dumps(obj if not is_dataclass(obj) else asdict(obj), default=default, indent=2, ensure_ascii=False)


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _progress_bar(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _filters(args) -> dict | None:
    return dict(f.split("=", 1) for f in getattr(args, "filter", None) or []) or None


def _filter_problem(given: list[str]) -> str | None:
    """What is wrong with the --filter options, or None: each is KEY=VALUE, one value per key."""
    from .stores.base import COLUMNS

    seen = set()
    for f in given:
        key = f.split("=", 1)[0]
        if "=" not in f or not key:
            return f"--filter {f!r} must be KEY=VALUE"
        same = key if key in COLUMNS else "meta." + key.removeprefix("meta.")  # lang and meta.lang: one key
        if same in seen:
            return f"--filter {key} given twice; one value per key"
        seen.add(same)
    return None


HINT_SCAN_CHUNKS = 20_000  # an index larger than this is not read whole just to explain an empty result


def _no_match_hint(index, filters: dict | None) -> str:
    """Why a filtered search may have found nothing: a filter key no document has ("" if they all exist,
    or if the index is too large to check cheaply). doc_id, title and source always exist."""
    from .stores.base import COLUMNS, GROUPS

    missing = {k.removeprefix("meta.") for k in filters or {} if k not in COLUMNS and k != GROUPS}
    if not missing or index.store.count_chunks() > HINT_SCAN_CHUNKS:
        return ""
    for chunk in index.chunks():
        missing -= chunk.meta.keys()
        if not missing:
            return ""
    return "; ".join(f"no document has a field or meta key {k!r}" for k in sorted(missing))


def _flag_error(exc: ConfigError, prefix: str, flags: dict[str, str]) -> ConfigError:
    """`exc` ("{prefix}{field}=value: why") with the field named as the command-line flag that set it."""
    msg = str(exc)
    for field, flag in flags.items():
        for sep, joined in (("=", " "), (":", ":")):
            if msg.startswith(f"{prefix}{field}{sep}"):
                return ConfigError(flag + joined + msg[len(prefix) + len(field) + 1 :])
    return exc


def _rag_config(args, index=None):
    """Defaults < the index's recorded retrieval settings < --config file < command-line flags."""
    base = Settings(rag=index.rag_config()) if index is not None else None
    rag = {k: getattr(args, k, None) for k in ("k", "mode")}
    try:
        return load_settings(getattr(args, "config", None), base=base, rag=rag).rag
    except ConfigError as exc:  # a bad flag is named as the flag; a bad file or index value as the field
        raise _flag_error(exc, "", {k: f"--{k}" for k, v in rag.items() if v is not None}) from exc


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _missing_top(url: str) -> Path | None:
    """The outermost folder a new local index at `url` would create, or None (it exists, or is no local path)."""
    from .paths import outermost_missing
    from .registry import url_scheme

    return None if url_scheme(url) else outermost_missing(url)


def cmd_ingest(args) -> int:
    missing = [p for p in args.paths if not os.path.lexists(p)]
    if missing:  # before the index is created: a typo leaves no empty index behind
        raise DocumentError("; ".join(f"{p}: no such file or directory" for p in missing))
    settings = load_settings(args.config)
    console = _console()
    # An existing index keeps its embedder (and chunking, unless a --config names one).
    exists = open_or_none(args.index) is not None
    new_dir, index = None if exists else _missing_top(args.index), None
    try:
        index = Index.create(
            args.index,
            embedder=args.embedder or (None if exists else settings.rag.embedder),
            chunking=settings.chunk if args.config or not exists else None,
        )
        report = _ingest(index, args, console)
    except BaseException:
        if new_dir is not None and _holds_nothing(index):  # a new index and nothing written: leave nothing behind
            shutil.rmtree(new_dir, ignore_errors=True)
        raise
    if args.json:
        print(_dump({"counts": report.counts(), **asdict(report)}))
    else:
        c = report.counts()
        print(
            f"ingested into {args.index}: {c['added']} added, {c['updated']} updated, {c['deleted']} deleted, "
            f"{c['unchanged']} unchanged, {c['skipped']} skipped;"
            f" {_plural(report.chunks_written, 'chunk')} embedded in {report.seconds:.1f}s"
        )
        for s in report.skipped:
            print(f"  skipped {s.path}: {s.reason}")
    return EXIT_SKIPPED if report.skipped else 0


def _holds_nothing(index) -> bool:
    """Whether `index` (None: its creation failed) holds no chunks; an empty one is closed, to be removed."""
    if index is None:
        return True
    try:
        empty = index.store.count_chunks() == 0
    except Exception:  # cannot tell: keep it
        return False
    if empty:
        index.store.close()
    return empty


def _ingest(index, args, console):
    with _progress_bar(console) as bar:
        task = bar.add_task("embedding documents", total=None)
        options = dict(
            sync=args.sync,
            strict=args.strict,
            progress=lambda phase, done, total: bar.update(task, completed=done, total=total),
            groups=[g.strip() for g in (args.groups or "").split(",") if g.strip()] or None,
        )
        if args.ray is not None:
            from .distributed import ray_ingest

            return ray_ingest(index, args.paths, address=args.ray, **options)
        return index.ingest(args.paths, **options)


def cmd_search(args) -> int:
    index = Index.open(args.index)
    hits = index.search(_question(args.query), filters=_filters(args), config=_rag_config(args, index))
    if args.json:
        print(_dump(hits))
    elif not hits:
        n = len(index.documents())
        hint = _no_match_hint(index, _filters(args))
        print(
            f"no results for {args.query!r} in {args.index} ({_plural(n, 'document')}"
            + (", filtered)" if args.filter else ")")
            + (f": {hint}" if hint else "")
        )
    else:
        for h in hits:
            text = " ".join(h.chunk.text.split())
            print(f"{h.rank:>2}. [{h.score:.3f}] {h.chunk.id}  {h.chunk.title}\n    {text[:200]}")
    return 0


def _question(q: str) -> str:
    if not q or not q.strip():
        raise InputError("the question is empty")
    return q


def cmd_ask(args) -> int:
    if not args.no_retrieval and not args.index:
        raise ConfigError("ask needs --index DIR (or --no-retrieval to ask the model alone)")
    index = None if args.no_retrieval else Index.open(args.index)
    pipe = Pipeline(index, make_generator(args.generator, adapter=args.adapter), _rag_config(args, index))
    ans = pipe.answer(_question(args.question), filters=_filters(args))
    if args.json:
        print(_dump(ans))
        return 0
    print(ans.text if not ans.abstained else f"(abstained) {ans.text}  — {ans.abstain_reason}")
    hint = _no_match_hint(index, _filters(args)) if index is not None and not ans.hits else ""
    if hint:
        print(f"  no passages matched the filters: {hint}")
    for c in ans.citations:
        how = "" if c.by_model else " (attributed: the model gave no marker)"
        print(f"  [{c.number}] {c.title} — {c.chunk_id}{how}\n      {c.snippet[:160]}")
    t = ans.timings
    print(
        f"  retrieve {t.retrieve_s:.2f}s, context {t.context_s:.2f}s, generate {t.generate_s:.2f}s; "
        f"{ans.tokens_in} tokens in, {ans.tokens_out} out"
    )
    return 0


def _given_questions(args):
    """The --questions QA JSONL, or None (then the verb makes synthetic ones)."""
    if not args.questions:
        return None
    from .evaluation.compare import load_questions

    return load_questions(args.questions, 10**9)


def cmd_tune(args) -> int:
    from .tuning import tune

    index = Index.open(args.index)
    gen = make_generator(args.generator) if args.generator else None
    report = tune(index, _given_questions(args), gen, synth_n=args.n, gate=not args.no_gate,
                  target=args.target_false_abstention, seed=args.seed, apply=not args.dry_run,
                  trained_on=_trained_on(args.generator))  # fmt: skip
    print(_dump(report.to_dict()) if args.json else "\n".join(report.lines()))
    return 0


def _trained_on(generator: str | None) -> frozenset[str]:
    """The questions a generator given as a fine-tuning run's folder (or its model/ folder) was trained on."""
    from .finetune.run import RunFolder

    try:
        return RunFolder.open(generator).trained_on if generator else frozenset()
    except RagtuneError:  # a registered name, or a folder that is no run: nothing recorded
        return frozenset()


def cmd_finetune_embedder(args) -> int:
    from .finetune.embedder import EmbedderTrainConfig, finetune_embedder
    from .tuning import synthetic_examples

    index = Index.open(args.index)
    examples = _given_questions(args)
    if examples is None:
        examples = synthetic_examples(index, args.n, args.seed)
    cfg = EmbedderTrainConfig(epochs=args.epochs, batch_size=args.batch_size, hard_negatives=not args.no_hard_negatives,
                              seed=args.seed)  # fmt: skip
    report = finetune_embedder(index, examples, args.out, cfg, reindex_to=args.reindex, in_place=args.in_place)
    print(_dump(report) if args.json else "\n".join(report.lines()))
    return 0


def cmd_index_info(args) -> int:
    info = Index.open(args.index).info()
    print(_dump(info) if args.json else "\n".join(f"{k}: {v}" for k, v in asdict(info).items()))
    return 0


def cmd_models(args) -> int:
    reg = registry()
    rows = [
        {"kind": e.kind, "name": e.name or "(any path)", "from": e.source, "description": e.description}
        for kind in ("embedder", "generator", "store")
        for e in sorted(reg.entries[kind].values(), key=lambda e: e.name)
    ]
    runtime = _runtime_here()
    if args.json:
        print(_dump({"entries": rows, "plugin_errors": reg.errors, "runtime": runtime}))
        return 0
    for kind in ("embedder", "generator", "store"):
        print(f"{kind}s:" if kind != "store" else "stores (by --index scheme):")
        for r in (r for r in rows if r["kind"] == kind):
            print(f"  {r['name']:<24} [{r['from']}] {r['description']}")
    print("local paths: a sentence-transformers folder (embedder), a Hugging Face folder or .gguf file (generator);")
    print("an OpenAI-compatible server: openai:http://HOST:PORT/v1#MODEL (key in $RAGTUNE_OPENAI_API_KEY)")
    print(
        f"runs here: device {runtime['device']}; a transformers generator computes in {runtime['generator_dtype']}"
        f" (--dtype {runtime['dtype_setting']}; this CPU: native bfloat16 {'yes' if runtime['cpu_bf16'] else 'no'},"
        f" AMX {'yes' if runtime['cpu_amx'] else 'no'})"
    )
    for err in reg.errors:
        print(f"plugin failed to load: {err}", file=sys.stderr)
    return 0


def _runtime_here() -> dict:
    """Where a model a command loads would run, and in what dtype (`--device`, `--dtype`, this machine)."""
    from .devices import cpu_has_amx, cpu_has_native_bf16, dtype_setting, resolve_device, resolve_dtype

    device, setting = resolve_device(), dtype_setting()
    return {"device": device, "generator_dtype": resolve_dtype(setting, device), "dtype_setting": setting,
            "cpu_bf16": cpu_has_native_bf16(), "cpu_amx": cpu_has_amx()}  # fmt: skip


def cmd_synth(args) -> int:
    from .paths import check_output
    from .synth.generate import SynthConfig, synthesize, write_questions

    check_output(args.out)  # before minutes of writing questions, not after

    given = {k: v for k, v in (("round_trip_top", args.round_trip_top), ("max_echo", args.max_echo)) if v is not None}
    cfg = SynthConfig(
        n=args.n, per_doc=args.per_doc, seed=args.seed, generator=args.generator or "",
        writer_backend=args.writer_backend, **given,
    )  # fmt: skip
    if args.index:
        chunks = list(Index.open(args.index).chunks())
    else:  # documents that are not indexed: their questions are unanswerable from the index
        from .chunking import chunk_documents, whitespace_tokens
        from .documents import load_paths

        loaded = load_paths(args.documents)
        for s in loaded.skipped:
            print(f"  skipped {s.path}: {s.reason}", file=sys.stderr)
        chunks = chunk_documents(loaded.documents, load_settings(args.config).chunk, whitespace_tokens)
    with _progress_bar(_console()) as bar:
        task = bar.add_task("synthetic questions", total=cfg.n)
        questions, report = synthesize(
            chunks,
            cfg,
            unanswerable=bool(args.documents),
            progress=lambda kept, wanted: bar.update(task, completed=kept),
        )
    out, md = write_questions(questions, report, args.out)
    if args.json:
        print(_dump(report.to_dict()))
    else:
        print(f"{len(questions)} questions -> {out} ({report.per_minute:.1f} accepted per minute); report: {md}")
        for step in report.steps:
            print(f"  {step.name:<22} removed {step.removed}")
        for note in report.notes:
            print(f"  note: {note}")
    return 0


def cmd_prepare(args) -> int:
    from .finetune.data import PrepareConfig, prepare

    ratios = tuple(float(x) for x in args.split.split(","))
    cfg = PrepareConfig(
        ratios=ratios,
        seed=args.seed,
        conflict_policy=args.conflicts,
        max_tokens=args.max_tokens,
        skip_bad=args.skip_bad,
    )
    chunk_text = None
    if any(Path(p).is_dir() for p in args.inputs):  # a document folder: train on its chunks
        from .chunking import chunk_documents, whitespace_tokens

        settings = load_settings(args.config)
        chunk_text = lambda docs: [(c.doc_id, c.text) for c in chunk_documents(docs, settings.chunk, whitespace_tokens)]  # noqa: E731
    report = prepare(args.inputs, args.out, cfg, chunk_text=chunk_text)
    if args.json:
        print(_dump(report))
    else:
        print(report.to_markdown())
        print(f"\nwrote {args.out}/train.jsonl, validation.jsonl, test.jsonl, report.json, report.md")
    return 0


def _ft_options():
    """(field, option name, default value) for every FinetuneConfig field: the CLI is derived from them."""
    from dataclasses import fields

    from .finetune.config import FinetuneConfig

    default = FinetuneConfig()
    return [(f, f.metadata.get("cli") or f.name, getattr(default, f.name)) for f in fields(FinetuneConfig)]


def finetune_config(args):
    """[finetune] of --ft-config, then every option given on the command line."""
    from .config import build, read_toml
    from .finetune.config import FinetuneConfig

    values = dict(read_toml(args.ft_config, "--ft-config").get("finetune", {})) if args.ft_config else {}
    for f, opt, default in _ft_options():
        v = getattr(args, opt, None)
        if v is not None:
            values[f.name] = tuple(x for x in v.split(",") if x) if isinstance(default, tuple) else v
    return build(FinetuneConfig, values, "finetune")


def _add_ft_options(sp) -> None:
    for f, opt, default in _ft_options():
        kind = str if isinstance(default, (str, tuple)) else type(default)
        shown = ",".join(default) if isinstance(default, tuple) else default
        sp.add_argument(
            f"--{opt.replace('_', '-')}",
            dest=opt,
            type=kind,
            choices=f.metadata.get("choices"),
            help=f"{f.metadata.get('help', '')} (default: {shown})",
        )


def cmd_finetune(args) -> int:
    cfg = finetune_config(args)
    console = _console()
    with _progress_bar(console) as bar:
        task = bar.add_task("training", total=None)

        def progress(step, total, loss, tps):
            bar.update(task, completed=step, total=total, description=f"training  loss {loss:.3f}  {tps:.0f} tok/s")

        if args.sweep and args.ray is not None:
            raise ConfigError("--sweep runs its trainings one after another in this process; drop --ray or --sweep")
        if args.sweep:
            from .finetune.sweep import parse_grid, sweep

            rows, best = sweep(cfg, parse_grid(args.sweep), args.data, args.out, index=args.index, progress=progress)
            print(_dump(rows) if args.json else Path(args.out, "sweep.md").read_text() + f"best: {rows[best]['run']}")
            return 0
        if args.ray is not None:
            from .distributed import ray_finetune

            result = ray_finetune(cfg, args.data, args.out, index=args.index, address=args.ray,
                                  workers=args.workers or 2, max_failures=args.max_failures,
                                  progress=console.print)  # fmt: skip
        else:
            from .finetune.train import train

            result = train(cfg, args.data, args.out, index=args.index, progress=progress)
    if args.json:
        print(_dump(result))
    else:
        g = result.generation
        print(
            f"trained {result.steps} steps in {result.wall_s:.0f}s ({result.tokens_per_s:.0f} tok/s); "
            f"trainable {result.trainable_params:,} of {result.total_params:,} parameters"
            + (f"; resumed from step {result.resumed_from_step}" if result.resumed_from_step else "")
        )
        print(
            f"best validation loss {result.best_val_loss:.4f} at step {result.best_step}"
            + (" (stopped early)" if result.stopped_early else "")
            + f"; test loss {result.test_loss:.4f}, perplexity {result.test_perplexity:.2f}"
        )
        if g:
            print(
                f"test generation on {g['n']}: EM {g['em']:.1f}  F1 {g['f1']:.1f}"
                f"  ROUGE-L {g['rouge_l']:.1f}  BLEU {g['bleu']:.1f}"
            )
        print(f"output: {args.out}")
    return 0


def cmd_export(args) -> int:
    from .finetune.export import export_merged

    out = export_merged(args.adapter, args.out)
    print(f"merged model written to {out}")
    return 0


def ray_options(sp, what: str) -> None:
    sp.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help=f"{what} on Ray workers, each loading a model once: alone, a local Ray on every core; 'auto' joins "
        "the running cluster; else a Ray address. Same records as a local run. Needs pip install 'ragtune[ray]'",
    )
    sp.add_argument("--workers", type=int, help="with --ray: answering workers (default: one per CPU)")


def cmd_compare(args) -> int:
    from .evaluation.compare import load_experiment, load_results, run_experiment, write_results
    from .evaluation.ratings import read_ratings
    from .evaluation.report import summary_table, write_report

    cfg = load_experiment(args.experiment)
    out = Path(args.out)
    results = None
    if args.ratings and (out / "results.json").exists():
        prior = load_results(out)
        if prior.config == json.loads(json.dumps(asdict(cfg), default=str)):
            results = prior  # the same experiment: fold the ratings in without answering again
    if results is None:
        console = _console()
        say = lambda m: console.print(f"[dim]{m}[/dim]")  # noqa: E731
        results = run_experiment(cfg, out, progress=say, ray=args.ray, workers=args.workers)
    if args.ratings:
        results.ratings = read_ratings(args.ratings)
        write_results(results, out)
    path = write_report(results, out)
    if args.json:
        print(
            _dump(
                {
                    "aggregates": results.aggregates,
                    "costs": results.costs,
                    "paired": results.paired,
                    "report": str(path),
                }
            )
        )
    else:
        print(summary_table(results))
        print(f"\nreport: {path}")
    return 0


def cmd_evaluate(args) -> int:
    from .evaluation.evaluate import STRATEGIES, EvaluateConfig, run_evaluate
    from .evaluation.report import summary_table

    budget = args.budget_min if args.budget_min is not None else (15.0 if args.quick else 30.0)
    strategies = tuple(args.strategies.split(",")) if args.strategies else STRATEGIES
    cfg = EvaluateConfig(budget_min=budget, strategies=strategies, questions=args.questions or "", seed=args.seed,
                         ray=args.ray, workers=args.workers, rag_ft_mode=args.rag_ft_mode,
                         synth_backend=args.synth_backend)  # fmt: skip
    console = _console()
    results = run_evaluate(args.paths, args.out, cfg, say=lambda m: console.print(m, markup=False, highlight=False))
    if args.json:
        print(_dump({"aggregates": results.aggregates, "costs": results.costs, "phases": results.phases}))
    else:
        print(summary_table(results))
        print(f"\nreport: {Path(args.out) / 'report.html'}; total {results.phases['total'] / 60:.1f} min")
    return 0


def cmd_rate_sheet(args) -> int:
    from .evaluation import ratings

    if args.read:
        summary = ratings.read_question_ratings(args.read)
        if args.json:
            print(_dump(summary))
        for src, v in [] if args.json else summary.items():
            mean = "-" if v["mean"] is None else f"{v['mean']:.2f}"
            right = "-" if v["answer_right"] is None else f"{100 * v['answer_right']:.0f}%"
            print(f"{src}: mean rating {mean} over {v['n']} rated; answer right {right}")
        return 0
    if not args.read_edits and (not args.out or not (args.results or args.questions or args.edits)):
        raise ConfigError(
            "rate-sheet needs --out and one of --results (answers), --questions (synthetic questions) or --edits"
        )
    if args.read_edits:
        summary = ratings.read_edit_ratings(args.read_edits)
        if args.json:
            print(_dump(summary))
        for k, v in [] if args.json else summary.items():
            print(f"{k} sentences: {100 * v['believable']:.0f}% judged believable ({v['n']} rated)")
        return 0
    if args.edits:
        from .evaluation.compare import load_results

        sheet, key = ratings.write_edit_sheet(load_results(args.edits), args.out, seed=args.seed)
        print(f"edit sheet: {sheet} (blind: each sentence shown edited or as it was)\nkey (keep from raters): {key}\n"
              f"read it back: ragtune rate-sheet --read-edits {sheet}")  # fmt: skip
        return 0
    if args.questions:
        sheet, key = ratings.write_question_sheet(args.questions, args.out, real=args.real, n=args.n, seed=args.seed)
        print(
            f"question sheet: {sheet} (blind: order shuffled"
            + (", real questions mixed in" if args.real else "")
            + f")\nkey (keep from raters): {key}\nread it back: ragtune rate-sheet --read {sheet}"
        )
        return 0
    from .evaluation.compare import load_results

    sheet, key = ratings.write_rate_sheet(load_results(args.results), args.out, seed=args.seed)
    print(f"rating sheet: {sheet} (blind: strategies shuffled per question)\nkey (keep from raters): {key}")
    return 0


SERVE_FLAGS = {  # ServeConfig field -> the serve flag that sets it
    "max_queue": "--max-queue",
    "request_timeout_s": "--timeout",
    "batch_window_ms": "--batch-window-ms",
    "max_batch": "--max-batch",
    "cors_origins": "--cors",
}


def _check_listen(host: str, port: int) -> None:
    """Bind (host, port) as uvicorn will, then let go: a busy port is one clear line, not a banner and a trace."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except (OSError, OverflowError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        busy = getattr(exc, "errno", None) == errno.EADDRINUSE
        raise ConfigError(
            f"cannot listen on {host}:{port}: {reason}" + (" (is another server running? use --port)" if busy else "")
        ) from exc


def cmd_serve(args) -> int:
    import uvicorn

    from .server.app import ServeConfig, create_app

    Index.open(args.index)  # a missing index is one clear line, before the server starts
    try:
        cfg = ServeConfig(
            index=args.index,
            adapter=args.adapter or "",
            generator=args.generator or "",
            max_queue=args.max_queue,
            request_timeout_s=args.timeout,
            keys_file=args.keys or "",
            cors_origins=tuple(args.cors or ()),
            batch_window_ms=args.batch_window_ms,
            max_batch=args.max_batch,
        )
    except ConfigError as exc:
        raise _flag_error(exc, "ServeConfig.", SERVE_FLAGS) from exc
    _check_listen(args.host, args.port)
    print(
        f"ragtune serving {args.index} on http://{args.host}:{args.port} (OpenAPI at /docs; chat page at /)",
        file=sys.stderr,
    )
    # SIGTERM drains requests in flight; a stuck client cannot hold the process past the request time-out.
    uvicorn.run(
        create_app(cfg), host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=args.timeout + 5
    )
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(Path(args.out), quick=args.quick, console=_console())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ragtune", description="RAG or fine-tuning? Measure it on your own documents.")
    p.add_argument("--config", help="ragtune.toml with [chunk] and [rag] sections")
    p.add_argument("--verbose", action="store_true", help="show libraries' warnings, logs and progress bars")
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda", "mps"), help="where models run (default auto: a GPU if present)"
    )
    p.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        help="what a transformers generator computes in (default auto: bfloat16 on a GPU and on a CPU with "
        "native bfloat16, AVX512-BF16 or AMX; float32 elsewhere). Training has --precision",
    )
    sub = p.add_subparsers(dest="verb", required=True)

    def common(sp, index_required=True):
        ask = sp.prog.split()[-1] == "ask"
        sp.add_argument(
            "--index",
            required=index_required and not ask,
            help="index: a directory (LanceDB), pg:DIR (embedded PostgreSQL) or postgresql://user@host/db"
            + ("; required unless --no-retrieval" if ask else ""),
        )
        sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = sub.add_parser("ingest", help="add files and folders to an index (incremental)")
    sp.add_argument("paths", nargs="+")
    common(sp)
    sp.add_argument("--sync", action="store_true", help="delete indexed documents that are no longer in PATHS")
    sp.add_argument("--strict", action="store_true", help="abort (writing nothing) if any file cannot be read")
    sp.add_argument("--embedder", help="embedder for a new index (default all-minilm-l6-v2; see `ragtune models`)")
    sp.add_argument(
        "--groups",
        metavar="A,B",
        help="access groups for every document of this call that names none itself (serve --keys filters by them)",
    )
    sp.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="chunk and embed on Ray: alone, a local Ray on every core ($RAGTUNE_RAY_CPUS); 'auto' joins the "
        "running cluster; else a Ray address (ray://HOST:10001). Needs pip install 'ragtune[ray]'",
    )
    sp.set_defaults(func=cmd_ingest)

    for name, func, what in (("search", cmd_search, "query"), ("ask", cmd_ask, "question")):
        sp = sub.add_parser(name, help="retrieve chunks" if name == "search" else "answer with cited sources")
        sp.add_argument(what)
        common(sp)
        sp.add_argument("--k", type=int, help="number of hits")
        sp.add_argument("--mode", choices=RETRIEVAL_MODES)
        sp.add_argument("--filter", action="append", metavar="KEY=VALUE", help="doc_id, title, source or a meta key")
        if name == "ask":
            sp.add_argument("--generator", help="registry name, HF folder, .gguf or openai:URL#MODEL")
            sp.add_argument("--adapter", help="a fine-tuned adapter or model folder (from `ragtune finetune`)")
            sp.add_argument("--no-retrieval", action="store_true", help="ask the model alone (closed book)")
        sp.set_defaults(func=func)

    sp = sub.add_parser("models", help="the embedders, generators and stores available, and where each comes from")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_models)

    sp = sub.add_parser(
        "tune", help="choose retrieval settings and calibrate the answerability gate for an index; record both in it"
    )
    common(sp)
    sp.add_argument("--questions", help="QA JSONL with doc_id per line (default: synthetic questions from the index)")
    sp.add_argument("--n", type=int, default=120, help="synthetic questions to make when --questions is not given")
    sp.add_argument("--no-gate", action="store_true", help="tune retrieval only")
    sp.add_argument(
        "--target-false-abstention", type=float, default=0.10, help="share of answerable questions the gate may refuse"
    )
    sp.add_argument("--generator", help="generator the gate is calibrated with (default: the bundled one)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--dry-run", action="store_true", help="print the choice without recording it")
    sp.set_defaults(func=cmd_tune)

    sp = sub.add_parser(
        "finetune-embedder", help="train the embedder on (question, passage) pairs of an index; re-embed the index"
    )
    common(sp)
    sp.add_argument("--out", required=True, help="folder for the fine-tuned sentence-transformers model")
    sp.add_argument("--questions", help="QA JSONL with doc_id per line (default: synthetic questions from the index)")
    sp.add_argument("--n", type=int, default=300, help="synthetic questions to make when --questions is not given")
    where = sp.add_mutually_exclusive_group()
    where.add_argument("--reindex", help="write the re-embedded index here (a new index; the old one is kept)")
    where.add_argument("--in-place", action="store_true", help="re-embed this index in place")
    sp.add_argument("--epochs", type=int, default=1)
    sp.add_argument("--batch-size", type=int, default=16)
    sp.add_argument("--no-hard-negatives", action="store_true", help="in-batch negatives only")
    sp.add_argument("--seed", type=int, default=0)
    sp.set_defaults(func=cmd_finetune_embedder)

    sp = sub.add_parser("index-info", help="what an index holds")
    common(sp)
    sp.set_defaults(func=cmd_index_info)

    sp = sub.add_parser("synth", help="make question/answer pairs from an index's passages (no labels needed)")
    src = sp.add_mutually_exclusive_group(required=True)
    src.add_argument("--index", help="index whose passages to ask about")
    src.add_argument(
        "--documents", nargs="+", help="files or folders NOT in the index: their questions are unanswerable"
    )
    sp.add_argument("--out", required=True, help="QA JSONL to write (report beside it: <name>.report.md / .json)")
    sp.add_argument("--n", type=int, default=100, help="questions wanted after filtering")
    sp.add_argument("--per-doc", type=int, default=0, help="at most this many per document (default: an even share)")
    sp.add_argument("--generator", help="write questions with this generator, prompted (default: bundled adapter)")
    sp.add_argument(
        "--writer-backend", default="transformers", choices=GENERATOR_BACKENDS,
        help="what runs the bundled question writer: llama (llama.cpp, pip install 'ragtune[llama]') is ~2.4x faster",
    )  # fmt: skip
    sp.add_argument(
        "--round-trip-top", type=int,
        help="keep a question when the reader ranks its answer among this many most likely spans "
        "(default 10, which keeps 93%% of real SQuAD questions; 1 = Alberti et al.'s filter: only questions the "
        "untrained reader already answers)",
    )  # fmt: skip
    sp.add_argument(
        "--max-echo", type=float,
        help="the share of its answer's words a question may repeat (default 0: 'What is the most common practice "
        "of immunology?' for 'everyday practice' gives it away in part; 1 keeps every such question)",
    )  # fmt: skip
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_synth)

    sp = sub.add_parser("prepare", help="clean and split task data for fine-tuning")
    sp.add_argument("inputs", nargs="+", help="QA/instruction JSONL, SQuAD JSON, a document folder or an index")
    sp.add_argument("--out", required=True)
    sp.add_argument("--split", default="0.8,0.1,0.1", help="train,validation,test shares")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument(
        "--conflicts",
        default="majority",
        choices=("majority", "drop", "first"),
        help="policy for the same question with different answers",
    )
    sp.add_argument("--max-tokens", type=int, default=1024, help="longer examples are length outliers")
    sp.add_argument("--skip-bad", action="store_true", help="skip malformed lines (reported) instead of failing")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_prepare)

    sp = sub.add_parser("finetune", help="train an adapter (or top layers / full model) on prepared data")
    sp.add_argument("--data", required=True, help="a folder written by `ragtune prepare`")
    sp.add_argument("--out", required=True)
    sp.add_argument(
        "--index", help="index for --mode raft (gold chunk and distractors); --mode reader: passages examples lack"
    )
    sp.add_argument("--ft-config", help="TOML file with a [finetune] section")
    _add_ft_options(sp)
    sp.add_argument(
        "--sweep", nargs="+", metavar="FIELD=V1,V2", help="train every combination, keep the best by validation loss"
    )
    sp.add_argument("--json", action="store_true")
    sp.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="data-parallel training on Ray Train workers (each takes a share of every step's examples; gradients "
        "summed): alone, a local Ray; 'auto' joins the running cluster. Same artefacts as a local run",
    )
    sp.add_argument("--workers", type=int, help="with --ray: training workers (default 2)")
    sp.add_argument(
        "--max-failures",
        type=int,
        default=2,
        help="with --ray: times a dead worker restarts the group from the last checkpoint (-1: no limit)",
    )
    sp.set_defaults(func=cmd_finetune)

    sp = sub.add_parser("export", help="merge a LoRA adapter into a standalone model folder")
    sp.add_argument("--adapter", required=True)
    sp.add_argument("--out", required=True)
    sp.set_defaults(func=cmd_export)

    sp = sub.add_parser("compare", help="answer the same questions with every strategy; write results and report.html")
    sp.add_argument(
        "--config", dest="experiment", required=True, help="experiment TOML ([experiment], [[strategy]], [prices])"
    )
    sp.add_argument("--out", required=True)
    sp.add_argument("--ratings", help="a filled rating sheet (from `ragtune rate-sheet`) to fold into the report")
    sp.add_argument("--json", action="store_true")
    ray_options(sp, "answer the questions")
    sp.set_defaults(func=cmd_compare)

    sp = sub.add_parser(
        "evaluate", help="RAG, fine-tuning or both? one command for a folder with no labelled questions"
    )
    sp.add_argument("paths", nargs="+", help="document files and folders")
    sp.add_argument("--out", required=True)
    sp.add_argument("--quick", action="store_true", help="a 15-minute budget (default 30)")
    sp.add_argument("--budget-min", type=float, help="minutes the whole run may take; the plan is sized to fit")
    sp.add_argument("--strategies", help="comma-separated subset of base,rag,ft,rag+ft")
    sp.add_argument("--questions", help="real labelled questions (QA JSONL or SQuAD JSON) for the test split")
    sp.add_argument(
        "--rag-ft-mode", choices=["reader", "raft"], default="reader",
        help="how rag+ft is fine-tuned: reader (the span reader rag answers with; default) or raft (cited answers)",
    )  # fmt: skip
    sp.add_argument(
        "--synth-backend", default="transformers", choices=GENERATOR_BACKENDS,
        help="what runs the question writer: llama (llama.cpp, pip install 'ragtune[llama]') is ~2.4x faster",
    )  # fmt: skip
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--json", action="store_true")
    ray_options(sp, "answer the comparison's questions")
    sp.set_defaults(func=cmd_evaluate)

    sp = sub.add_parser("rate-sheet", help="export a blind sheet for human rating (answers, or synthetic questions)")
    sp.add_argument("--results", help="a compare / evaluate output folder: rate the strategies' answers")
    sp.add_argument("--questions", help="synthetic questions (QA JSONL from `ragtune synth`): vet them")
    sp.add_argument("--real", help="with --questions: real questions to mix in blind, for comparison")
    sp.add_argument("--n", type=int, default=50, help="with --questions: how many synthetic questions")
    sp.add_argument("--read", help="a filled question sheet: print the ratings by source")
    sp.add_argument("--edits", help="a compare / evaluate output folder: are its fact edits believable? (blind)")
    sp.add_argument("--read-edits", help="a filled edit sheet: believable share, edited vs original sentences")
    sp.add_argument("--out", help="CSV to write (its key goes beside it)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_rate_sheet)

    sp = sub.add_parser("serve", help="HTTP API, OpenAI-compatible endpoint and chat page")
    sp.add_argument(
        "--index",
        required=True,
        help="index to answer from: a directory (LanceDB), pg:DIR (embedded PostgreSQL) or postgresql://user@host/db",
    )
    sp.add_argument("--adapter", help="fine-tuned adapter: adds the ft and rag+ft strategies")
    sp.add_argument(
        "--generator", help="base generator: registry name, HF folder, .gguf or openai:URL#MODEL (`ragtune models`)"
    )
    sp.add_argument(
        "--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 for every interface (default %(default)s)"
    )
    sp.add_argument("--port", type=int, default=8000, help="port to listen on (default %(default)s)")
    sp.add_argument(
        "--max-queue", type=int, default=8, help="requests that may wait for the model before 503 (default %(default)s)"
    )
    sp.add_argument(
        "--timeout", type=float, default=120.0, help="seconds before a request gives up with 504 (default %(default)s)"
    )
    sp.add_argument(
        "--batch-window-ms",
        type=float,
        default=5.0,
        help="an idle model waits this long to batch concurrent questions (default %(default)s)",
    )
    sp.add_argument(
        "--max-batch",
        type=int,
        default=16,
        help="most questions answered in one model call; 1 = no batching (default %(default)s)",
    )
    sp.add_argument(
        "--keys",
        metavar="KEYS.toml",
        help="API keys: [keys.NAME] sha256 = hex digest of the token, groups = [...], write = true|false",
    )
    sp.add_argument(
        "--cors", action="append", metavar="ORIGIN", help="allow browser requests from ORIGIN (off by default)"
    )
    sp.set_defaults(func=cmd_serve)

    sp = sub.add_parser("demo", help="run ragtune on the bundled demo data")
    sp.add_argument("--out", default="ragtune-demo", help="output directory")
    sp.add_argument("--quick", action="store_true", help="fewer questions")
    sp.set_defaults(func=cmd_demo)
    return p


def quiet_libraries(verbose: bool) -> None:
    """Keep library noise (pypdf's parser warnings, weight-loading bars, deprecation warnings) off
    the user's terminal; `--verbose` shows it. Read by the libraries when they are imported."""
    import logging
    import warnings

    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bar too
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("LANCE_LOG", "error")
    os.environ.setdefault("LANCEDB_LOG", "error")
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("ragtune").setLevel(logging.WARNING)  # ours: a fallback taken, a gate read in another dtype
    warnings.filterwarnings("ignore")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    args = build_parser().parse_args(argv)
    quiet_libraries(args.verbose)
    if args.device:
        os.environ["RAGTUNE_DEVICE"] = args.device  # read wherever a model is loaded
    if args.dtype:
        os.environ["RAGTUNE_DTYPE"] = args.dtype  # read wherever a transformers generator is made
    problem = _filter_problem(getattr(args, "filter", None) or [])
    if problem:
        print(f"ragtune: error: {problem}", file=sys.stderr)
        return 2
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not as a traceback at interpreter exit
        return code
    except RagtuneError as exc:
        print(f"ragtune: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `ragtune ... | head`: the reader has gone, which is not an error
        _silence_stdout()
        return 141  # what a shell reports for a command that SIGPIPE ended (128 + 13)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's flush at exit does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (stdout replaced in tests)
        pass


if __name__ == "__main__":
    sys.exit(main())
