"""LanceDB, embedded in a directory: vectors + text + metadata, with a native BM25 index.

Every write is one LanceDB commit (a merge-insert or a delete), so a reader, or a run that
dies part-way, only ever sees each document wholly old or wholly new.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..documents import Chunk, Hit
from ..errors import IndexNotFoundError
from .base import DocumentInfo, IndexManifest, access_groups, doc_groups, meta_filters, visible

MANIFEST = "ragtune-index.json"
TABLE = "chunks"
CHUNK_COLUMNS = ["chunk_id", "doc_id", "position", "text", "title", "source", "content_hash", "meta"]
GROUPS_TYPE = pa.list_(pa.string())


def _sql_str(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _in_list(ids: Sequence[str]) -> str:
    return "(" + ", ".join(_sql_str(i) for i in ids) + ")"


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _local(url: str) -> Path:
    return Path(url.removeprefix("file://"))


def _connect(url: str):
    """Every read sees the latest commit, also one made by another process (a CLI ingest while the
    server runs): LanceDB's default never looks for other writers' versions."""
    import datetime

    import lancedb

    return lancedb.connect(url, read_consistency_interval=datetime.timedelta(0))


RETRIES = 12
# Dense search is exact below this many chunks and approximate above it (IVF-PQ, the top
# k x refine_factor candidates re-ranked on the full vectors). benchmarks/ann_curve.py measured it
# (docs/ann): exact search p50 128 ms at 10^5 and 1.3 s at 10^6; IVF-PQ probing half the
# partitions (nprobes 0 = auto) with refine 40: recall@10 0.98, p50 14 ms at 10^6. IVF-HNSW-SQ needed
# 28 ms for 0.96 there.
ANN = {"min_rows": 100_000, "rows_per_partition": 4096, "nprobes": 0, "refine_factor": 40}


def auto_nprobes(rows: int, rows_per_partition: int) -> int:
    """Half the partitions, at least 16 (all of them when there are fewer)."""
    partitions = max(1, rows // max(1, rows_per_partition))
    return min(partitions, max(16, partitions // 2))


def _sub_vectors(dim: int) -> int:
    """PQ sub-vectors of 8 dimensions each (384 -> 48), or the largest split that divides `dim`."""
    return next(n for n in (dim // 8, dim // 4, dim // 2, 1) if n >= 1 and dim % n == 0)


def _retry(what: str, fn, *args):
    """Run a write, retrying LanceDB's retryable commit conflicts (another writer committed first)
    with jittered back-off; each attempt is one atomic commit, so a retry never doubles a write."""
    import random
    import time

    for attempt in range(RETRIES):
        try:
            return fn(*args)
        except (RuntimeError, OSError) as exc:
            if "conflict" not in str(exc).lower() or attempt == RETRIES - 1:
                raise
            time.sleep(min(2.0, 0.02 * 2**attempt) * (0.5 + random.random()))
    raise AssertionError(what)  # unreachable


def _half_created(path: Path) -> bool:
    """Only an empty chunks table (and temp manifests): what a create killed before writing its
    manifest leaves. Nothing is ever written to the table before the manifest exists."""
    names = {p.name for p in path.iterdir() if not p.name.startswith(f"{MANIFEST}.")}
    if names != {f"{TABLE}.lance"}:
        return False
    try:
        return _connect(str(path)).open_table(TABLE).count_rows() == 0
    except Exception:  # unreadable: not ours to remove
        return False


class LanceBackend:
    """Opens and creates LanceDB indexes: a directory, or a URI LanceDB accepts (s3://...)."""

    name = "lancedb"

    def exists(self, url: str) -> bool:
        if _is_local(url):
            return (_local(url) / MANIFEST).is_file()
        return _read_remote_manifest(url) is not None

    def open(self, url: str) -> LanceStore:
        url = str(url)
        if _is_local(url):
            mf = _local(url) / MANIFEST
            data = json.loads(mf.read_text()) if mf.is_file() else None
        else:
            data = _read_remote_manifest(url)
        if data is None:
            raise IndexNotFoundError(f"no ragtune index at {url!r} (run `ragtune ingest ... --index {url}` first)")
        table = _connect(url).open_table(TABLE)
        return LanceStore(url, IndexManifest(**data), table)

    def create(self, url: str, manifest: IndexManifest) -> LanceStore:
        url = str(url)
        if _is_local(url):
            path = _local(url)
            if path.is_dir() and not (path / MANIFEST).exists() and _half_created(path):
                shutil.rmtree(path / f"{TABLE}.lance", ignore_errors=True)  # a create killed before its manifest
            if path.exists() and any(path.iterdir()):
                raise IndexNotFoundError(
                    f"{url!r} exists, is not empty and holds no ragtune index; refusing to write there"
                )
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
                ("vector", pa.list_(pa.float32(), manifest.dim)),
                ("groups", GROUPS_TYPE),  # access groups ([] = everyone), a column so filters run in the query
            ]
        )
        table = _connect(url).create_table(TABLE, schema=schema)
        store = LanceStore(url, manifest, table)
        store.save_manifest(manifest)
        return store


BACKEND = LanceBackend()


def _read_remote_manifest(url: str) -> dict | None:
    """Object-store indexes keep the manifest as a file beside the table (pyarrow's filesystems)."""
    from pyarrow import fs

    try:
        filesystem, root = fs.FileSystem.from_uri(url)
        with filesystem.open_input_stream(f"{root.rstrip('/')}/{MANIFEST}") as fh:
            return json.loads(fh.read().decode())
    except (OSError, ValueError, pa.ArrowException):
        return None


class LanceStore:
    """A ragtune index in LanceDB. Open and create through `ragtune.stores.open_store` / `Index`."""

    backend = "lancedb"

    def __init__(self, url: str | Path, manifest: IndexManifest, table):
        self.url = str(url)
        self.manifest = manifest
        self._table = table

    def save_manifest(self, manifest: IndexManifest) -> None:
        data = json.dumps(asdict(manifest), indent=2)
        if _is_local(self.url):
            path = _local(self.url)
            tmp = path / f"{MANIFEST}.{os.getpid()}.tmp"
            tmp.write_text(data)
            tmp.replace(path / MANIFEST)  # atomic: a reader sees the old manifest or the new one
        else:
            from pyarrow import fs

            filesystem, root = fs.FileSystem.from_uri(self.url)
            with filesystem.open_output_stream(f"{root.rstrip('/')}/{MANIFEST}") as fh:
                fh.write(data.encode())
        self.manifest = manifest

    def close(self) -> None:
        self._table = None

    # -- writing --------------------------------------------------------------------------
    def upsert(self, doc_ids: Sequence[str], chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        """Replace every chunk of `doc_ids` with `chunks` in one commit."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(chunks), self.manifest.dim) and len(chunks):
            raise ValueError(f"{len(chunks)} chunks of dim {self.manifest.dim} but vectors of shape {vectors.shape}")
        if not doc_ids:
            return
        if not chunks:  # only deletions
            self.delete(doc_ids)
            return
        self._ensure_groups_column()
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
                "groups": pa.array([doc_groups(c.meta) for c in chunks], GROUPS_TYPE),
            },
            schema=self._table.schema,
        )
        merge = (
            self._table.merge_insert("chunk_id")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .when_not_matched_by_source_delete(f"doc_id IN {_in_list(doc_ids)}")
        )
        _retry("upsert", merge.execute, rows)

    def _has_groups(self) -> bool:
        return "groups" in self._table.schema.names

    def _ensure_groups_column(self) -> None:
        """Indexes made before access groups lack the column: add it (empty = visible to everyone)."""
        if not self._has_groups():
            try:
                _retry("add groups", self._table.add_columns, pa.field("groups", GROUPS_TYPE))
            except (RuntimeError, ValueError, OSError):
                if not self._has_groups():  # another writer may have added it first
                    raise

    def delete(self, doc_ids: Sequence[str]) -> int:
        if not doc_ids:
            return 0
        where = f"doc_id IN {_in_list(doc_ids)}"
        n = self._table.count_rows(where)
        _retry("delete", self._table.delete, where)
        return n

    def refresh_text_index(self) -> None:
        """Fold new rows into the BM25 index (queries are exact either way: LanceDB searches
        unindexed rows by brute force, so this is about speed, not correctness)."""
        from lancedb.index import FTS

        if self._table.count_rows() == 0:
            return

        def refresh():
            if not any(ix.index_type == "FTS" for ix in self._table.list_indices()):
                self._table.create_index("text", config=FTS(with_position=False), replace=True)
            else:
                self._table.optimize()

        try:
            _retry("refresh text index", refresh)
            _retry("refresh vector index", self.refresh_vector_index)
        except RuntimeError as exc:  # the data is committed; an index left behind only costs speed
            if "conflict" not in str(exc).lower():
                raise

    def ann_settings(self) -> dict:
        """The approximate-search policy: ragtune's defaults, overridden by the manifest's `ann`."""
        return {**ANN, **{k: v for k, v in (self.manifest.ann or {}).items() if k in ANN}}

    def _vector_index(self):
        return next((ix for ix in self._table.list_indices() if "vector" in ix.columns and ix.index_type != "FTS"),
                    None)  # fmt: skip

    def refresh_vector_index(self, force: bool = False) -> bool:
        """Build the vector index once the table passes `min_rows` (or `force`), and retrain it when
        the table has doubled since (new rows are added to the old partitions by `optimize` in
        between; retraining re-centres them). Returns whether it (re)built."""
        from lancedb.index import IvfPq

        cfg, rows = self.ann_settings(), self._table.count_rows()
        built = int((self.manifest.ann or {}).get("built_rows", 0))
        exists = self._vector_index() is not None
        if not force and (rows < cfg["min_rows"] or (exists and rows < 2 * built)):
            return False
        partitions = max(1, rows // int(cfg["rows_per_partition"]))
        sub = _sub_vectors(self.manifest.dim)
        config = IvfPq(distance_type="cosine", num_partitions=partitions, num_sub_vectors=sub)
        self._table.create_index("vector", config=config, replace=True)
        from dataclasses import replace

        self.save_manifest(replace(self.manifest, ann={**(self.manifest.ann or {}), "built_rows": rows}))
        return True

    # -- reading --------------------------------------------------------------------------
    def _columns(self, cols: list[str]) -> pa.Table:
        return self._table.search().select(cols).limit(None).to_arrow()

    def document_hashes(self) -> dict[str, str]:
        t = self._columns(["doc_id", "content_hash"])
        return dict(zip(t.column("doc_id").to_pylist(), t.column("content_hash").to_pylist()))

    def documents(self, groups: Sequence[str] | None = None) -> list[DocumentInfo]:
        names = ["doc_id", "title", "source", "content_hash"] + (["groups"] if self._has_groups() else [])
        t = self._columns(names)
        cols = [t.column(c).to_pylist() for c in names]
        if len(cols) == 4:
            cols.append([None] * t.num_rows)
        docs: dict[str, list] = {}
        for d, ti, so, h, g in zip(*cols):
            docs.setdefault(d, [ti, so, h, 0, tuple(g or ())])[3] += 1
        allowed = None if groups is None else list(groups)
        return [
            DocumentInfo(d, ti, so, n, h, g) for d, (ti, so, h, n, g) in sorted(docs.items()) if visible(g, allowed)
        ]

    def iter_chunks(
        self, batch_size: int = 512, vectors: bool = False
    ) -> Iterator[tuple[list[Chunk], np.ndarray | None]]:
        t = self._columns(CHUNK_COLUMNS + (["vector"] if vectors else []))
        t = t.sort_by([("doc_id", "ascending"), ("position", "ascending")])
        for start in range(0, t.num_rows, batch_size):
            part = t.slice(start, batch_size)
            rows = part.select(CHUNK_COLUMNS).to_pylist()
            vecs = None
            if vectors:
                vecs = np.asarray(part.column("vector").combine_chunks().flatten(), dtype=np.float32).reshape(
                    len(rows), -1
                )
            yield [self._row_to_chunk(r) for r in rows], vecs

    def count_chunks(self) -> int:
        return self._table.count_rows()

    def version(self) -> int:
        return int(self._table.version)

    def disk_bytes(self) -> int:
        if _is_local(self.url):
            return sum(f.stat().st_size for f in _local(self.url).rglob("*") if f.is_file())
        from pyarrow import fs  # an object store: the sizes of the objects under the index's prefix

        try:
            filesystem, root = fs.FileSystem.from_uri(self.url)
            infos = filesystem.get_file_info(fs.FileSelector(root.rstrip("/"), recursive=True))
        except (OSError, ValueError, pa.ArrowException):
            return 0
        return sum(i.size or 0 for i in infos if i.type == fs.FileType.File)

    def _where(self, filters: dict | None) -> tuple[str | None, dict]:
        cols, meta = meta_filters(filters)
        sql = [f"{k} = {_sql_str(v)}" for k, v in cols.items()]
        allowed = access_groups(filters)
        if allowed is not None and self._has_groups():  # no column: nothing was ever stored with groups
            public = "(groups IS NULL OR array_length(groups) = 0)"
            sql.append(f"({public} OR array_has_any(groups, [{', '.join(map(_sql_str, allowed))}]))" if allowed
                       else public)  # fmt: skip
        return (" AND ".join(sql) or None), meta

    @staticmethod
    def _row_to_chunk(r: dict) -> Chunk:
        return Chunk(
            id=r["chunk_id"],
            doc_id=r["doc_id"],
            text=r["text"],
            position=int(r["position"]),
            title=r["title"],
            source=r["source"],
            content_hash=r["content_hash"],
            meta=json.loads(r["meta"] or "{}"),
        )

    def _run(self, query, k: int, filters: dict | None, score_col: str, via: str) -> list[Hit]:
        where, meta = self._where(filters)
        if where:
            query = query.where(where, prefilter=True)
        # Filters on `meta` run after the search, so fetch more to still return k; a few more in
        # any case so that equal scores at the cut are broken by chunk id, the same on every run.
        query = query.limit(k * 10 if meta else k + 8)
        rows = query.select(CHUNK_COLUMNS + [score_col]).to_list()
        sign = 1.0 if score_col == "_distance" else -1.0  # distance ascending, BM25 descending
        rows.sort(key=lambda r: (sign * round(float(r[score_col]), 6), r["chunk_id"]))
        hits = []
        for r in rows:
            chunk = self._row_to_chunk(r)
            if any(str(chunk.meta.get(key)) != val for key, val in meta.items()):
                continue
            score = 1.0 - r[score_col] if score_col == "_distance" else r[score_col]  # cosine similarity / BM25
            hits.append(Hit(chunk, float(score), len(hits) + 1, via))
            if len(hits) == k:
                break
        return hits

    def search_dense(self, vector: np.ndarray, k: int, filters: dict | None = None) -> list[Hit]:
        if self._table.count_rows() == 0:
            return []
        q = self._table.search(np.asarray(vector, dtype=np.float32), vector_column_name="vector").distance_type(
            "cosine"
        )
        if (self.manifest.ann or {}).get("built_rows"):  # approximate: the recorded probe settings
            cfg = self.ann_settings()
            built = int(self.manifest.ann["built_rows"])
            q = q.nprobes(int(cfg["nprobes"]) or auto_nprobes(built, int(cfg["rows_per_partition"])))
            if cfg["refine_factor"]:
                q = q.refine_factor(int(cfg["refine_factor"]))
        return self._run(q, k, filters, "_distance", "dense")

    def search_text(self, query: str, k: int, filters: dict | None = None) -> list[Hit]:
        if not query.strip() or self._table.count_rows() == 0:
            return []
        q = self._table.search(query, query_type="fts", fts_columns="text")
        return self._run(q, k, filters, "_score", "bm25")

    def get_chunks(self, chunk_ids: Sequence[str]) -> list[Chunk]:
        if not chunk_ids:
            return []
        rows = (
            self._table.search().where(f"chunk_id IN {_in_list(chunk_ids)}").select(CHUNK_COLUMNS).limit(None).to_list()
        )
        by_id = {r["chunk_id"]: self._row_to_chunk(r) for r in rows}
        return [by_id[i] for i in chunk_ids if i in by_id]
