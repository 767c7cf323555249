"""Incremental ingest: load -> chunk -> embed -> store, touching only what changed."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

from .chunking import chunk_documents
from .config import ChunkConfig
from .documents import Document, Skipped, _inside
from .embedders import Embedder
from .errors import DocumentError
from .stores import Store


@dataclass
class IngestReport:
    """What an ingest run did, document by document."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    chunks_written: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in ("added", "updated", "deleted", "unchanged", "skipped")}


@dataclass(frozen=True)
class SyncScope:
    """The stored documents that `sync` may delete: those from the files and folders an ingest was
    given, found by their source resolved against the current directory. A folder covers the sources
    inside it; a source that names no file here (one gone since, one written relative to another
    directory, or no path at all, like the server's "api") is judged by its id: `<folder name>/...`
    is what the files of a folder are stored as. A file covers the documents from that file."""

    folders: tuple[str, ...] = ()  # resolved paths
    files: tuple[str, ...] = ()  # resolved paths

    @classmethod
    def of(cls, paths: Sequence[str | os.PathLike]) -> SyncScope:
        """The scope of these ingest arguments; one that is neither a file nor a folder (a broken
        symlink, a FIFO) covers nothing: it failed to load, and its stored documents stay."""
        real = [os.path.realpath(p) for p in paths]
        return cls(tuple(r for r in real if os.path.isdir(r)), tuple(r for r in real if os.path.isfile(r)))

    @classmethod
    def of_items(cls, items: Sequence) -> SyncScope | None:
        """The scope of an ingest's items (files, folders, Document objects): that of its paths, or
        None (sync may delete any stored document) when it was given Document objects only."""
        paths = [p for p in items if not isinstance(p, Document)]
        return cls.of(paths) if paths else None

    def covers(self, doc_id: str, source: str) -> bool:
        real = os.path.realpath(source) if source and (os.path.dirname(source) or os.path.exists(source)) else ""
        if real and (real in self.files or any(_inside(real, f) for f in self.folders)):
            return True
        if real and os.path.exists(real):  # a file somewhere else
            return False
        return any(doc_id.startswith(f"{os.path.basename(f)}/") for f in self.folders if os.path.basename(f))


def embed_text(title: str, text: str) -> str:
    """What the embedder reads for a chunk: the title gives context the chunk may lack."""
    return f"{title}\n{text}" if title else text


Progress = Callable[[str, int, int], None]  # (phase, done, total)
MAX_CHUNKS_PER_DOCUMENT = 100_000  # ~100 MB of text at the default chunk size: the file size limit's worth


def plan_ingest(
    docs: Sequence[Document],
    store,
    chunking: ChunkConfig,
    sync: bool = False,
    keep_sources: Sequence[str] = (),
    scope: SyncScope | None = None,
) -> tuple[IngestReport, list[Document]]:
    """Compare content hashes with the store before anything is embedded: a report with the added,
    updated, unchanged (and with `sync` deleted) document ids, and the documents to (re)write.
    `sync` deletes the stored documents that are not in `docs`, are covered by `scope` (every one
    when `scope` is None) and do not come from `keep_sources`. One document id twice is refused.
    (`ingest_documents` and `ragtune ingest --ray` share it.)"""
    report = IngestReport()
    ids = Counter(d.id for d in docs)
    twice = sorted(i for i, n in ids.items() if n > 1)
    if twice:
        raise DocumentError(f"document id(s) {twice[:5]} given more than once in one ingest; nothing was written")
    stored = store.document_hashes()
    rechunk_all = store.manifest.chunking != asdict(chunking)
    todo: list[Document] = []
    for d in docs:
        if d.id not in stored:
            report.added.append(d.id)
            todo.append(d)
        elif stored[d.id] != d.content_hash or rechunk_all:
            report.updated.append(d.id)
            todo.append(d)
        else:
            report.unchanged.append(d.id)
    if sync:
        seen = {d.id for d in docs}
        gone = [i for i in stored if i not in seen]
        keep = set(keep_sources)
        sources = {d.id: d.source for d in store.documents()} if gone and (keep or scope) else {}
        report.deleted = sorted(
            i for i in gone if sources.get(i) not in keep and (scope is None or scope.covers(i, sources.get(i, "")))
        )
    return report, todo


def ingest_documents(
    docs: Sequence[Document],
    store: Store,
    embedder: Embedder,
    chunking: ChunkConfig,
    sync: bool = False,
    keep_sources: Sequence[str] = (),
    scope: SyncScope | None = None,
    batch_docs: int = 64,
    progress: Progress | None = None,
    max_chunks: int = MAX_CHUNKS_PER_DOCUMENT,
) -> IngestReport:
    """Write new and changed documents; with `sync`, delete stored documents not in `docs` that
    `scope` covers (all of them when it is None), except those from `keep_sources` (files that
    failed to load this time). A document that would make more than `max_chunks` chunks is
    skipped with the limit named; its stored version, if any, stays."""
    t0 = time.perf_counter()
    c0 = time.process_time()
    report, todo = plan_ingest(docs, store, chunking, sync, keep_sources, scope)

    # One commit per batch of documents: a crash leaves each document wholly old or new.
    for start in range(0, len(todo), batch_docs):
        batch = todo[start : start + batch_docs]
        chunks = chunk_documents(batch, chunking, embedder.count_tokens)
        per_doc = Counter(c.doc_id for c in chunks)
        too_big = {d for d, n in per_doc.items() if n > max_chunks}
        if too_big:
            for d in batch:
                if d.id in too_big:
                    report.skipped.append(Skipped(
                        d.source or d.id,
                        f"document {d.id!r} makes {per_doc[d.id]} chunks, over the limit of {max_chunks} per document",
                    ))  # fmt: skip
                    for kind in (report.added, report.updated):
                        if d.id in kind:
                            kind.remove(d.id)
            batch = [d for d in batch if d.id not in too_big]
            chunks = [c for c in chunks if c.doc_id not in too_big]
            if not batch:
                continue
        t_e = time.perf_counter()
        vectors = embedder.embed([embed_text(c.title, c.text) for c in chunks])
        report.embed_seconds += time.perf_counter() - t_e
        store.upsert([d.id for d in batch], chunks, vectors)
        report.chunks_written += len(chunks)
        if progress:
            progress("embed", min(start + batch_docs, len(todo)), len(todo))
    return finish_ingest(store, report, chunking, bool(todo), t0, c0)


def finish_ingest(store, report: IngestReport, chunking: ChunkConfig, wrote: bool, t0: float, c0: float):
    """After the writes: delete what `sync` found gone, refresh the text index, and record in the
    manifest what building the index cost (the comparison reports it as set-up cost) and how it
    was chunked. `t0`, `c0`: perf_counter and process_time when the ingest began."""
    store.delete(report.deleted)
    if wrote or report.deleted:
        store.refresh_text_index()
    report.seconds = time.perf_counter() - t0
    m = store.manifest
    store.save_manifest(
        replace(
            m,
            build_wall_s=m.build_wall_s + report.seconds,
            build_cpu_s=m.build_cpu_s + time.process_time() - c0,
            chunking=asdict(chunking),
        )
    )
    return report
