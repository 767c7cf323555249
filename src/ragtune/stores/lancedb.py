"""LanceDB, embedded in a directory: vectors + text + metadata, with a native BM25 index.

Every write is one LanceDB commit (a merge-insert or a delete), so a reader, or a run that
dies part-way, only ever sees each document wholly old or wholly new.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa

from ..documents import Chunk, Hit
from ..errors import IndexMismatchError, IndexNotFoundError

MANIFEST = "ragtune-index.json"
TABLE = "chunks"
FORMAT = 1
COLUMNS = ("doc_id", "title", "source")  # filterable in the database; other keys filter on `meta`


@dataclass(frozen=True)
class IndexManifest:
    """What the index was built with; a later ingest must match it."""

    format: int
    embedder: str
    dim: int
    chunking: dict
    created: float
    build_wall_s: float = 0.0  # summed over every ingest into this index
    build_cpu_s: float = 0.0


@dataclass(frozen=True)
class IndexInfo:
    path: str
    documents: int
    chunks: int
    embedder: str
    dim: int
    chunking: dict
    version: int  # LanceDB table version; each write adds one
    disk_bytes: int


def _sql_str(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _in_list(ids: Sequence[str]) -> str:
    return "(" + ", ".join(_sql_str(i) for i in ids) + ")"


class LanceStore:
    """A ragtune index in `path`. `LanceStore.open` for existing ones, `.create_or_open` to ingest."""

    def __init__(self, path: str | Path, manifest: IndexManifest, table):
        self.path = Path(path)
        self.manifest = manifest
        self._table = table

    # -- opening --------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> "LanceStore":
        import lancedb

        path = Path(path)
        mf = path / MANIFEST
        if not mf.is_file():
            raise IndexNotFoundError(f"no ragtune index at {str(path)!r} (run `ragtune ingest ... --index {path}` first)")
        manifest = IndexManifest(**json.loads(mf.read_text()))
        table = lancedb.connect(str(path)).open_table(TABLE)
        return cls(path, manifest, table)

    @classmethod
    def create_or_open(cls, path: str | Path, embedder: str, dim: int, chunking: dict) -> "LanceStore":
        """Open the index, checking it was built with the same embedder; create it if absent."""
        import lancedb

        path = Path(path)
        if (path / MANIFEST).is_file():
            store = cls.open(path)
            m = store.manifest
            if (m.embedder, m.dim) != (embedder, dim):
                raise IndexMismatchError(
                    f"index {str(path)!r} was built with embedder {m.embedder!r} (dim {m.dim}); "
                    f"refusing to mix in {embedder!r} (dim {dim}): use another --index"
                )
            return store
        if path.exists() and any(path.iterdir()):
            raise IndexNotFoundError(f"{str(path)!r} exists, is not empty and holds no ragtune index; refusing to write there")
        path.mkdir(parents=True, exist_ok=True)
        schema = pa.schema(
            [
                ("chunk_id", pa.string()),
                ("doc_id", pa.string()),
                ("position", pa.int32()),
                ("text", pa.string()),
                ("title", pa.string()),
                ("source", pa.string()),
                ("content_hash", pa.string()),
                ("meta", pa.string()),  # JSON
                ("vector", pa.list_(pa.float32(), dim)),
            ]
        )
        table = lancedb.connect(str(path)).create_table(TABLE, schema=schema)
        manifest = IndexManifest(FORMAT, embedder, dim, dict(chunking), time.time())
        store = cls(path, manifest, table)
        store.write_manifest()
        return store

    def record_build(self, wall_s: float, cpu_s: float, chunking: dict | None = None) -> None:
        m = asdict(self.manifest)
        m["build_wall_s"] += wall_s
        m["build_cpu_s"] += cpu_s
        if chunking is not None:
            m["chunking"] = dict(chunking)
        self.manifest = IndexManifest(**m)
        self.write_manifest()

    def write_manifest(self) -> None:
        tmp = self.path / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(asdict(self.manifest), indent=2))
        tmp.replace(self.path / MANIFEST)

    # -- writing --------------------------------------------------------------------------
    def upsert(self, doc_ids: Sequence[str], chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        """Replace every chunk of `doc_ids` with `chunks` in one commit."""
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        if not doc_ids:
            return
        rows = pa.table(
            {
                "chunk_id": [c.id for c in chunks],
                "doc_id": [c.doc_id for c in chunks],
                "position": pa.array([c.position for c in chunks], pa.int32()),
                "text": [c.text for c in chunks],
                "title": [c.title for c in chunks],
                "source": [c.source for c in chunks],
                "content_hash": [c.content_hash for c in chunks],
                "meta": [json.dumps(c.meta, ensure_ascii=False, sort_keys=True) for c in chunks],
                "vector": pa.FixedSizeListArray.from_arrays(
                    pa.array(np.asarray(vectors, dtype=np.float32).reshape(-1)), self.manifest.dim
                ),
            },
            schema=self._table.schema,
        )
        (
            self._table.merge_insert("chunk_id")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .when_not_matched_by_source_delete(f"doc_id IN {_in_list(doc_ids)}")
            .execute(rows)
        )

    def delete(self, doc_ids: Sequence[str]) -> int:
        if not doc_ids:
            return 0
        before = self._table.count_rows()
        self._table.delete(f"doc_id IN {_in_list(doc_ids)}")
        return before - self._table.count_rows()

    def refresh_text_index(self) -> None:
        """Fold new rows into the BM25 index (queries are exact either way: LanceDB searches
        unindexed rows by brute force, so this is about speed, not correctness)."""
        from lancedb.index import FTS

        if self._table.count_rows() == 0:
            return
        if not any(ix.index_type == "FTS" for ix in self._table.list_indices()):
            self._table.create_index("text", config=FTS(with_position=False), replace=True)
        else:
            self._table.optimize()

    # -- reading --------------------------------------------------------------------------
    def document_hashes(self) -> dict[str, str]:
        t = self._table.search().select(["doc_id", "content_hash"]).limit(None).to_arrow()
        return dict(zip(t.column("doc_id").to_pylist(), t.column("content_hash").to_pylist()))

    def list_documents(self) -> list[dict]:
        """One entry per document: id, title, source and how many chunks it has."""
        t = self._table.search().select(["doc_id", "title", "source"]).limit(None).to_arrow()
        docs: dict[str, dict] = {}
        for d, ti, so in zip(*(t.column(c).to_pylist() for c in ("doc_id", "title", "source"))):
            entry = docs.setdefault(d, {"id": d, "title": ti, "source": so, "chunks": 0})
            entry["chunks"] += 1
        return sorted(docs.values(), key=lambda x: x["id"])

    def document_sources(self) -> dict[str, str]:
        t = self._table.search().select(["doc_id", "source"]).limit(None).to_arrow()
        return dict(zip(t.column("doc_id").to_pylist(), t.column("source").to_pylist()))

    def count_chunks(self) -> int:
        return self._table.count_rows()

    def _where(self, filters: dict | None) -> tuple[str | None, dict]:
        if not filters:
            return None, {}
        sql = [f"{k} = {_sql_str(v)}" for k, v in filters.items() if k in COLUMNS]
        rest = {k.removeprefix("meta."): v for k, v in filters.items() if k not in COLUMNS}
        return (" AND ".join(sql) or None), rest

    @staticmethod
    def _row_to_chunk(r: dict) -> Chunk:
        return Chunk(
            id=r["chunk_id"], doc_id=r["doc_id"], text=r["text"], position=int(r["position"]), title=r["title"],
            source=r["source"], content_hash=r["content_hash"], meta=json.loads(r["meta"] or "{}"),
        )

    def _run(self, query, k: int, filters: dict | None, score_col: str, via: str) -> list[Hit]:
        where, meta_filters = self._where(filters)
        if where:
            query = query.where(where, prefilter=True)
        # Filters on `meta` run after the search, so fetch more to still return k.
        query = query.limit(k * 10 if meta_filters else k)
        cols = ["chunk_id", "doc_id", "position", "text", "title", "source", "content_hash", "meta", score_col]
        rows = query.select(cols).to_list()
        hits = []
        for r in rows:
            chunk = self._row_to_chunk(r)
            if any(str(chunk.meta.get(key)) != str(val) for key, val in meta_filters.items()):
                continue
            score = 1.0 - r[score_col] if score_col == "_distance" else r[score_col]  # cosine similarity / BM25
            hits.append(Hit(chunk, float(score), len(hits) + 1, via))
            if len(hits) == k:
                break
        return hits

    def search_dense(self, vector: np.ndarray, k: int, filters: dict | None = None) -> list[Hit]:
        q = self._table.search(np.asarray(vector, dtype=np.float32), vector_column_name="vector").distance_type("cosine")
        return self._run(q, k, filters, "_distance", "dense")

    def search_text(self, query: str, k: int, filters: dict | None = None) -> list[Hit]:
        if not query.strip() or self._table.count_rows() == 0:
            return []
        q = self._table.search(query, query_type="fts", fts_columns="text")
        return self._run(q, k, filters, "_score", "bm25")

    def get_chunks(self, chunk_ids: Sequence[str]) -> list[Chunk]:
        if not chunk_ids:
            return []
        rows = self._table.search().where(f"chunk_id IN {_in_list(chunk_ids)}").limit(None).to_list()
        by_id = {r["chunk_id"]: self._row_to_chunk(r) for r in rows}
        return [by_id[i] for i in chunk_ids if i in by_id]

    def info(self) -> "IndexInfo":
        size = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        return IndexInfo(
            str(self.path), len(self.document_hashes()), self.count_chunks(), self.manifest.embedder,
            self.manifest.dim, self.manifest.chunking, int(self._table.version), size,
        )
