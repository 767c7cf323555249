"""Shared set-up for the benchmarks: the SQuAD dev set from ../shared and a full-dev index."""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SQUAD_DEV = Path(os.environ.get("SQUAD_DEV", ROOT.parent / "shared" / "datasets" / "squad_v1.1_dev" / "dev-v1.1.json"))


def squad_dev():
    from ragtune.documents import load_squad

    if not SQUAD_DEV.is_file():
        sys.exit(f"SQuAD v1.1 dev not found at {SQUAD_DEV}; set SQUAD_DEV=/path/to/dev-v1.1.json")
    return load_squad(SQUAD_DEV)


def held_out_squad():
    """SQuAD dev's 12 articles the question-generation adapter never saw: their paragraphs and questions."""
    from ragtune.synth.qg import HELD_OUT_ARTICLES

    docs, examples = squad_dev()
    docs = [d for d in docs if d.id.rsplit("/", 1)[0] in HELD_OUT_ARTICLES]  # ids keep the underscores
    ids = {d.id for d in docs}
    return docs, [e for e in examples if e.doc_ids[0] in ids]


def squad_index(path: Path, embedder, docs):
    """Open (or build, incrementally) an index of the given SQuAD paragraphs; returns a ragtune.Index.
    `path` may be any index URL (a folder, pg:DIR, postgresql://...); `embedder` a name or an Embedder."""
    from ragtune import ChunkConfig, Index

    index = Index.create(path, embedder=embedder, chunking=ChunkConfig())
    t0 = time.perf_counter()
    report = index.ingest(docs, sync=True)
    print(f"index {path}: {report.counts()} in {time.perf_counter() - t0:.1f}s", flush=True)
    return index


def median(xs):
    return statistics.median(xs)


def pyplot():
    """matplotlib's pyplot on the Agg backend (files, no display), or None when it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return None
    return plt
