"""`Index`: a store, the embedder it was built with, and its chunking and retrieval settings.

index = Index.create("my-index")                  # or "pg:pgdata", "postgresql://me@db/x"
index.ingest(["docs/"])                           # incremental; sync=True deletes docs/'s vanished files
hits = index.search("Who built the bridge?", k=5) # hybrid by default
index = Index.open("my-index")                    # later
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import overload

from .config import ChunkConfig, RagConfig
from .devices import describe
from .documents import Chunk, Document, Hit
from .errors import DocumentError, IndexMismatchError, IndexNotFoundError, InputError, RagtuneError
from .ingest import IngestReport, Progress, SyncScope, ingest_documents
from .stores import DocumentInfo, IndexInfo, IndexManifest, Store, backend_for
from .stores.base import FORMAT, GROUPS, doc_groups


def with_groups(doc: Document, groups: Sequence[str]) -> Document:
    """`doc` with access `groups` unless it names its own."""
    if doc_groups(doc.meta):
        return doc
    clean = doc_groups({GROUPS: list(groups)})
    return replace(doc, meta={**doc.meta, GROUPS: clean}) if clean else doc


# RagConfig fields an index may record (`ragtune tune` chooses them)
RETRIEVAL_KEYS = ("k", "mode", "rrf_k", "fusion", "dense_weight", "candidates", "context_tokens", "reranker",
                  "rerank_depth")  # fmt: skip


def load_items(
    items, strict: bool = False, groups: Sequence[str] | None = None, store: Store | None = None
) -> tuple[list[Document], list]:
    """Files, folders and Document objects as documents to ingest, and the files skipped (with
    reasons). With `strict`, any skipped file aborts before anything is written; `groups` go to
    every document that names none itself. With `store`, a file given by itself keeps the id its
    document is stored under (`reuse_stored_ids`)."""
    from .documents import load_paths

    docs = [d for d in items if isinstance(d, Document)]
    paths = [p for p in items if not isinstance(p, Document)]
    loaded = load_paths(paths) if paths else None
    skipped = loaded.skipped if loaded else []
    if strict and skipped:
        raise DocumentError(
            f"{skipped[0].path}: {skipped[0].reason} ({len(skipped)} file(s) unreadable; nothing was written)"
        )
    if loaded:
        files = {os.path.realpath(p): Path(p).name for p in paths if os.path.isfile(p)}
        docs += reuse_stored_ids(loaded.documents, files, store) if store is not None and files else loaded.documents
    if groups:
        docs = [with_groups(d, groups) for d in docs]
    return docs, skipped


def reuse_stored_ids(docs: list[Document], files: dict[str, str], store: Store) -> list[Document]:
    """`docs`, with the document of each file given by itself (`files`: its resolved path -> the
    id it loads under, its bare name) renamed to the id of the one stored document from that file
    (stored sources resolved here), if there is exactly one: `ingest docs/a.txt` after `ingest docs`
    then updates `docs/a.txt` instead of adding a newer `a.txt` beside it. Files of one document
    only: the records of a JSONL or JSON file keep their own ids."""
    from .documents import RECORD_FORMATS

    names = set(files.values())
    mine: dict[str, int] = {}  # resolved file -> its document's position in docs
    for i, d in enumerate(docs):
        if d.id in names and Path(d.source).suffix.lower() not in RECORD_FORMATS:
            real = os.path.realpath(d.source)
            if files.get(real) == d.id:
                mine[real] = i
    if not mine:
        return docs
    # A stored file source has the base name of its resolved path (a symlink is stored as its
    # target): comparing base names first spares resolving every stored source.
    bases = {os.path.basename(r) for r in mine}
    found: dict[str, list[str]] = {}
    for info in store.documents():
        if info.source and os.path.basename(info.source) in bases:
            real = os.path.realpath(info.source)
            if real in mine:
                found.setdefault(real, []).append(info.id)
    out = list(docs)
    taken = {d.id for d in docs}
    for real, i in mine.items():
        ids = found.get(real, [])
        if len(ids) == 1 and ids[0] not in taken:  # taken: loaded in this run already (its folder given too)
            out[i] = replace(docs[i], id=ids[0])
            taken.add(ids[0])
    return out


class Index:
    """One ragtune index, whatever the backend. Cheap to open: the embedder loads on first use."""

    def __init__(self, store: Store, embedder=None):
        self.store = store
        self._embedder = embedder
        self._chunking: ChunkConfig | None = None

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, url: str | Path, embedder=None) -> Index:
        """An existing index (IndexNotFoundError if there is none)."""
        return cls(backend_for(str(url)).open(str(url)), embedder)

    @classmethod
    def create(
        cls, url: str | Path, embedder=None, chunking: ChunkConfig | None = None, exist_ok: bool = True
    ) -> Index:
        """Create an index (or open it if it exists and `exist_ok`); it must keep its embedder.

        `embedder` is a name or an Embedder object (default: the bundled MiniLM)."""
        from .registry import make_embedder

        url = str(url)
        backend = backend_for(url)
        emb = embedder if embedder is None or not isinstance(embedder, str) else make_embedder(embedder)
        if backend.exists(url):
            if not exist_ok:
                raise IndexMismatchError(f"an index already exists at {url!r}")
            index = cls(backend.open(url), emb)
            m = index.manifest
            if emb is not None and (m.embedder, m.dim) != (emb.name, emb.dim):
                raise IndexMismatchError(
                    f"index {url!r} was built with embedder {m.embedder!r} (dim {m.dim}); "
                    f"refusing to mix in {emb.name!r} (dim {emb.dim}): use another --index"
                )
            index._chunking = chunking  # a changed chunking re-chunks every document on the next ingest
            return index
        emb = emb or make_embedder(None)
        chunking = chunking or ChunkConfig()
        manifest = IndexManifest(FORMAT, emb.name, emb.dim, asdict(chunking), time.time())
        return cls(backend.create(url, manifest), emb)

    # -- what it is ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.store.url

    @property
    def manifest(self) -> IndexManifest:
        return self.store.manifest

    @property
    def chunking(self) -> ChunkConfig:
        return self._chunking or ChunkConfig(**self.manifest.chunking)

    @property
    def embedder(self):
        if self._embedder is None:
            from .registry import make_embedder

            self._embedder = make_embedder(self.manifest.embedder)
        return self._embedder

    def rag_config(self, base: RagConfig | None = None) -> RagConfig:
        """`base` (default RagConfig()) with the retrieval settings recorded in this index applied."""
        base = base or RagConfig()
        tuned = {k: v for k, v in self.manifest.retrieval.items() if k in RETRIEVAL_KEYS}
        return replace(base, **tuned) if tuned else base

    def set_retrieval(self, **settings) -> None:
        """Record retrieval settings (fields of RagConfig) that every later search uses."""
        known = {f.name for f in fields(RagConfig)} & set(RETRIEVAL_KEYS)
        unknown = sorted(set(settings) - known)
        if unknown:
            from .errors import ConfigError

            raise ConfigError(f"unknown retrieval settings {unknown}; known: {sorted(known)}")
        RagConfig(**settings)  # validates the values
        self.store.save_manifest(replace(self.manifest, retrieval={**self.manifest.retrieval, **settings}))

    def set_ann(self, build: bool = True, **settings) -> bool:
        """Approximate dense search: `min_rows` (build the vector index past this size),
        `rows_per_partition`, and the probe settings `nprobes`, `ef`, `refine_factor`; recorded in the
        index. With `build`, (re)builds the vector index now if the table is past `min_rows`.
        Returns whether an index was built. Backends without approximate search refuse."""
        from .errors import ConfigError

        current = getattr(self.store, "ann_settings", None)
        if current is None:
            raise ConfigError(f"the {self.store.backend} backend has no approximate search settings")
        unknown = sorted(set(settings) - set(current()) - {"built_rows"})
        if unknown:
            raise ConfigError(f"unknown approximate-search settings {unknown}; known: {sorted(current())}")
        bad = [k for k, v in settings.items() if not isinstance(v, int) or v < 0]
        if bad:
            raise ConfigError(f"approximate-search settings {bad} must be whole numbers >= 0")
        self.store.save_manifest(replace(self.manifest, ann={**self.manifest.ann, **settings}))
        return bool(build and self.store.refresh_vector_index())

    def gate(self, generator: str):
        """The answerability gate calibrated on this index for `generator` (its name), or None."""
        from .gate import Gate

        data = self.manifest.gate.get(generator)
        return Gate.from_dict(data) if data else None

    def set_gate(self, gate, generator: str) -> None:
        """Record a gate calibrated with `generator` (None removes it); every later Pipeline on this
        index with that generator uses it. A gate reads one model's likelihoods, so each has its own."""
        gates = {k: v for k, v in self.manifest.gate.items() if k != generator}
        if gate is not None:
            gates[generator] = gate.to_dict()
        self.store.save_manifest(replace(self.manifest, gate=gates))

    def info(self) -> IndexInfo:
        m = self.manifest
        return IndexInfo(
            url=self.url,
            backend=self.store.backend,
            documents=len(self.store.document_hashes()),
            chunks=self.store.count_chunks(),
            embedder=m.embedder,
            dim=m.dim,
            chunking=m.chunking,
            version=self.store.version(),
            disk_bytes=self.store.disk_bytes(),
            retrieval=dict(m.retrieval),
            embedder_runtime=describe(self._embedder_or_none()),
            gates=self._gates(),
        )

    def _gates(self) -> dict:
        """What checks each generator's answers here: a gate calibrated on this index, or the default one."""
        from .config import DEFAULT_GENERATOR
        from .gate import default_gate

        out = {}
        for name, data in self.manifest.gate.items():
            cal = data.get("calibration") or {}
            out[name] = (f"calibrated on {cal.get('answerable', 0)} answerable and {cal.get('unanswerable', 0)} "
                         f"unanswerable questions, threshold {data['threshold']:.3f}")  # fmt: skip
        if DEFAULT_GENERATOR not in out and default_gate(DEFAULT_GENERATOR, self.manifest.embedder) is not None:
            out[DEFAULT_GENERATOR] = "ragtune's default gate: not calibrated on this index (`ragtune tune` does that)"
        return out

    def _embedder_or_none(self):
        try:
            return self.embedder
        except RagtuneError:  # the index's embedder is not installed here: info still works
            return None

    def documents(self, groups: Sequence[str] | None = None) -> list[DocumentInfo]:
        """Every document, sorted by id; with `groups`, only those a reader of these groups may see
        (documents without groups are visible to everyone)."""
        return self.store.documents(groups)

    def chunks(self, batch_size: int = 512) -> Iterator[Chunk]:
        """Every chunk, ordered by document and position."""
        for batch, _ in self.store.iter_chunks(batch_size):
            yield from batch

    def get_chunks(self, chunk_ids: Sequence[str]) -> list[Chunk]:
        return self.store.get_chunks(chunk_ids)

    # -- writing ---------------------------------------------------------------------------
    def ingest(
        self,
        items: Sequence[str | Path | Document],
        sync: bool = False,
        strict: bool = False,
        progress: Progress | None = None,
        groups: Sequence[str] | None = None,
        atomic: bool = False,
    ) -> IngestReport:
        """Add new and changed documents (files, folders or Document objects); a file given by
        itself updates the document stored from it under its stored id (`ingest docs/a.txt` after
        `ingest docs` updates `docs/a.txt`). With `sync`, also delete stored documents that are not
        among them: given files or folders, only those that came from them (`SyncScope`: a folder's
        files and records that are gone, a file's records that are gone), so other folders'
        documents and the server's uploads stay; given only Document objects, every one. Documents
        of a file that failed to load this time stay. With `strict`, a file that cannot be
        read aborts the run before anything is written. `groups`: the access groups of every
        document of this call that does not name its own (a JSONL record's `groups` field).
        `atomic`: every document of the call in one commit (all or nothing; the server's uploads),
        instead of one commit per batch of 64 (bounded memory for big folders)."""
        t0 = time.perf_counter()
        docs, skipped = load_items(items, strict, groups, store=self.store)
        report = ingest_documents(
            docs,
            self.store,
            self.embedder,
            self.chunking,
            sync=sync,
            keep_sources=[s.source for s in skipped],  # a bad line keeps its file's stored records
            scope=SyncScope.of_items(items),
            progress=progress,
            batch_docs=max(1, len(docs)) if atomic else 64,
        )
        report.skipped = skipped + report.skipped
        report.seconds = time.perf_counter() - t0
        return report

    def delete(self, doc_ids: Sequence[str]) -> int:
        """Delete documents; returns how many chunks went."""
        n = self.store.delete(list(doc_ids))
        if n:
            self.store.refresh_text_index()
        return n

    def copy_to(self, url: str | Path) -> Index:
        """A new index at `url` (any backend) holding the same chunks and vectors, no re-embedding."""
        target = backend_for(str(url))
        if target.exists(str(url)):
            raise IndexMismatchError(f"an index already exists at {str(url)!r}; refusing to overwrite it")
        store = target.create(str(url), self.manifest)
        for chunks, vectors in self.store.iter_chunks(vectors=True):
            by_doc: dict[str, list[int]] = {}
            for i, c in enumerate(chunks):
                by_doc.setdefault(c.doc_id, []).append(i)
            store.upsert(list(by_doc), chunks, vectors)
        store.refresh_text_index()
        return Index(store, self._embedder)

    # -- searching -------------------------------------------------------------------------
    @overload
    def search(
        self,
        query: str,
        k: int | None = ...,
        mode: str | None = ...,
        filters: dict | None = ...,
        config: RagConfig | None = ...,
    ) -> list[Hit]: ...
    @overload
    def search(
        self,
        query: list[str],
        k: int | None = ...,
        mode: str | None = ...,
        filters: dict | None = ...,
        config: RagConfig | None = ...,
    ) -> list[list[Hit]]: ...

    def search(self, query, k=None, mode=None, filters=None, config: RagConfig | None = None):
        """Hits for one query, or a list of hit lists for a list of queries (embedded in one batch).
        `config` (default: this index's settings) gives the fusion and depth; `k` and `mode` override it."""
        retriever = self.retriever(config)
        limit = retriever.config.max_question_chars
        for q in [query] if isinstance(query, str) else query:
            if len(q) > limit:
                raise InputError(f"the query has {len(q)} characters; the limit is {limit}")
        if isinstance(query, str):
            return retriever.search_batch([query], k=k, mode=mode, filters=filters)[0]
        return retriever.search_batch(list(query), k=k, mode=mode, filters=filters)

    def retriever(self, config: RagConfig | None = None):
        from .retrieval import Retriever

        return Retriever(self.store, self.embedder, config or self.rag_config())

    def close(self) -> None:
        self.store.close()

    def __repr__(self) -> str:
        return f"Index({self.url!r}, backend={self.store.backend!r})"


def open_or_none(url: str | Path) -> Index | None:
    try:
        return Index.open(url)
    except IndexNotFoundError:
        return None
