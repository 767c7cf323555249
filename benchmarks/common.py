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


def bucket(key: str) -> float:
    """A stable pseudo-random number in [0, 1] for `key` (a document id): splits that do not move."""
    import hashlib

    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def exclusion_split(docs, examples):
    """SQuAD paragraphs split for abstention: three quarters indexed (by `bucket`), the questions of
    indexed paragraphs (answerable) and those of the others whose answer is nowhere in the indexed
    text (unanswerable). Returns (indexed documents, answerable, unanswerable)."""
    from ragtune.evaluation.metrics import normalize_answer

    keep = {d.id for d in docs if bucket(d.id) >= 0.25}
    indexed = [d for d in docs if d.id in keep]
    text = " " + " ".join(normalize_answer(d.text) for d in indexed) + " "
    answerable = [e for e in examples if e.doc_ids[0] in keep]
    unanswerable = [
        e
        for e in examples
        if e.doc_ids[0] not in keep and not any(f" {normalize_answer(a)} " in text for a in e.answers)
    ]
    return indexed, answerable, unanswerable


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


def demo_first_questions(n: int):
    """(an index of the bundled demo paragraphs in a temporary folder, the first question of each
    of the first `n` paragraphs): the span reader's workload in score_backends.py and score_prefix.py."""
    import tempfile

    from ragtune import Index
    from ragtune.demo import demo_data_path
    from ragtune.documents import load_squad

    docs, examples = load_squad(demo_data_path())
    first = {}  # each paragraph's first question
    for e in examples:
        first.setdefault(e.doc_ids[0], e.question)
    index = Index.create(Path(tempfile.mkdtemp(prefix="ragtune-reader-")) / "ix")
    index.ingest(docs, sync=True)
    return index, list(first.values())[:n]


def record_scoring(gen, work) -> list:
    """Run `work()` and return every `gen.score_batch(prompts, continuations)` call it made."""
    calls, score_batch = [], gen.score_batch

    def record(prompts, continuations):
        calls.append((prompts, continuations))
        return score_batch(prompts, continuations)

    gen.score_batch = record
    try:
        work()
    finally:
        del gen.score_batch  # the instance attribute: the class's method again
    return calls
