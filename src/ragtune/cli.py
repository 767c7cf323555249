"""`ragtune` command line: a few lines per verb over library functions."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path

from .config import RETRIEVAL_MODES, load_settings, replace
from .errors import RagtuneError

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

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True)


def _settings(args):
    rag = {k: getattr(args, k, None) for k in ("k", "mode")}
    return load_settings(getattr(args, "config", None), rag=rag)


def cmd_ingest(args) -> int:
    from .embedders import make_embedder
    from .ingest import ingest_paths

    settings = _settings(args)
    console = _console()
    # An existing index keeps the embedder it was built with unless one is named.
    name = args.embedder or _index_embedder(args.index) or settings.rag.embedder
    embedder = make_embedder(name)
    with _progress_bar(console) as bar:
        task = bar.add_task("embedding documents", total=None)
        report = ingest_paths(
            args.paths, args.index, embedder, settings.chunk, sync=args.sync, strict=args.strict,
            progress=lambda phase, done, total: bar.update(task, completed=done, total=total),
        )
    if args.json:
        print(_dump({"counts": report.counts(), **asdict(report)}))
    else:
        c = report.counts()
        print(
            f"ingested into {args.index}: {c['added']} added, {c['updated']} updated, {c['deleted']} deleted, "
            f"{c['unchanged']} unchanged, {c['skipped']} skipped; {report.chunks_written} chunks embedded in {report.seconds:.1f}s"
        )
        for s in report.skipped:
            print(f"  skipped {s.path}: {s.reason}")
    return EXIT_SKIPPED if report.skipped else 0


def _index_embedder(index: str) -> str | None:
    from .errors import IndexNotFoundError
    from .stores import LanceStore

    try:
        return LanceStore.open(index).manifest.embedder
    except IndexNotFoundError:
        return None


def cmd_search(args) -> int:
    from .rag import open_retriever

    settings = _settings(args)
    retriever = open_retriever(args.index, settings.rag)
    filters = dict(f.split("=", 1) for f in args.filter or [])
    hits = retriever.search(_question(args.query), k=settings.rag.k, mode=settings.rag.mode, filters=filters or None)
    if args.json:
        print(_dump(hits))
    else:
        for h in hits:
            text = " ".join(h.chunk.text.split())
            print(f"{h.rank:>2}. [{h.score:.3f}] {h.chunk.id}  {h.chunk.title}\n    {text[:200]}")
    return 0


def _question(q: str) -> str:
    if not q or not q.strip():
        raise RagtuneError("the question is empty")
    return q


def cmd_ask(args) -> int:
    from .generators import TransformersGenerator
    from .rag import answer, open_retriever

    settings = _settings(args)
    retriever = open_retriever(args.index, settings.rag)
    generator = TransformersGenerator(args.generator or settings.rag.generator)
    filters = dict(f.split("=", 1) for f in args.filter or [])
    ans = answer(_question(args.question), retriever, generator, settings.rag, filters=filters or None)
    if args.json:
        print(_dump(ans))
        return 0
    print(ans.text if not ans.abstained else f"(abstained) {ans.text}")
    for c in ans.citations:
        how = "" if c.by_model else " (attributed: the model gave no marker)"
        print(f"  [{c.number}] {c.title} — {c.chunk_id}{how}\n      {c.snippet[:160]}")
    t = ans.timings
    print(f"  retrieve {t.retrieve_s:.2f}s, context {t.context_s:.2f}s, generate {t.generate_s:.2f}s; {ans.tokens_in} tokens in, {ans.tokens_out} out")
    return 0


def cmd_index_info(args) -> int:
    from .stores import LanceStore

    info = LanceStore.open(args.index).info()
    print(_dump(info) if args.json else "\n".join(f"{k}: {v}" for k, v in asdict(info).items()))
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(Path(args.out), quick=args.quick, console=_console())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ragtune", description="RAG or fine-tuning? Measure it on your own documents.")
    p.add_argument("--config", help="ragtune.toml with [chunk] and [rag] sections")
    sub = p.add_subparsers(dest="verb", required=True)

    def common(sp, index_required=True):
        sp.add_argument("--index", required=index_required, help="index directory")
        sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = sub.add_parser("ingest", help="add files and folders to an index (incremental)")
    sp.add_argument("paths", nargs="+")
    common(sp)
    sp.add_argument("--sync", action="store_true", help="delete indexed documents that are no longer in PATHS")
    sp.add_argument("--strict", action="store_true", help="abort (writing nothing) if any file cannot be read")
    sp.add_argument("--embedder", help="embedder for a new index (default all-minilm-l6-v2)")
    sp.set_defaults(func=cmd_ingest)

    for name, func, what in (("search", cmd_search, "query"), ("ask", cmd_ask, "question")):
        sp = sub.add_parser(name, help="retrieve chunks" if name == "search" else "answer with cited sources")
        sp.add_argument(what)
        common(sp)
        sp.add_argument("--k", type=int, help="number of hits")
        sp.add_argument("--mode", choices=RETRIEVAL_MODES)
        sp.add_argument("--filter", action="append", metavar="KEY=VALUE", help="doc_id, title, source or a meta key")
        if name == "ask":
            sp.add_argument("--generator", help="registry name, HF folder or .gguf")
        sp.set_defaults(func=func)

    sp = sub.add_parser("index-info", help="what an index holds")
    common(sp)
    sp.set_defaults(func=cmd_index_info)

    sp = sub.add_parser("demo", help="run ragtune on the bundled demo data")
    sp.add_argument("--out", default="ragtune-demo", help="output directory")
    sp.add_argument("--quick", action="store_true", help="fewer questions")
    sp.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    args = build_parser().parse_args(argv)
    for f in getattr(args, "filter", None) or []:
        if "=" not in f:
            print(f"ragtune: error: --filter {f!r} must be KEY=VALUE", file=sys.stderr)
            return 2
    try:
        return args.func(args)
    except RagtuneError as exc:
        print(f"ragtune: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
