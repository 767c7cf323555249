"""Approximate dense search: built once an index passes its size threshold, close to exact
search, filters still applied inside the query, exact below the threshold."""

import numpy as np
import pytest

from ragtune import Index
from ragtune.documents import Document
from ragtune.errors import ConfigError
from ragtune.stores.pgvector import _vec

WORDS = [f"w{i}" for i in range(400)]


def corpus(n: int, seed: int = 0) -> list[Document]:
    rng = np.random.default_rng(seed)
    return [
        Document(f"d{i}", " ".join(rng.choice(WORDS, 12)), meta={"groups": ["odd"]} if i % 2 else {})
        for i in range(n)
    ]


def test_vector_index_is_built_past_the_threshold_and_stays_close_to_exact(tmp_path):
    index = Index.create(tmp_path / "ix", embedder="hashing-64")
    assert index.set_ann(min_rows=1500, rows_per_partition=300, nprobes=8) is False  # empty: nothing to build
    index.ingest(corpus(1000))
    assert index.store._vector_index() is None  # below the threshold: exact
    index.ingest(corpus(2000)[1000:])
    assert index.store._vector_index() is not None and index.manifest.ann["built_rows"] == 2000
    queries = [" ".join(np.random.default_rng(s).choice(WORDS, 6)) for s in range(40)]
    vecs = index.embedder.embed(queries)
    table = index.store._table
    overlap = []
    for v in vecs:
        approx = {h.chunk.id for h in index.store.search_dense(v, 10)}
        exact = table.search(v, vector_column_name="vector").distance_type("cosine").bypass_vector_index()
        truth = {r["chunk_id"] for r in exact.limit(10).select(["chunk_id"]).to_list()}
        overlap.append(len(approx & truth) / 10)
    assert np.mean(overlap) >= 0.85, np.mean(overlap)
    # Filters are applied inside the approximate query too: k hits, all visible.
    hits = index.store.search_dense(vecs[0], 10, {"groups": []})
    assert len(hits) == 10 and all(int(h.chunk.doc_id[1:]) % 2 == 0 for h in hits)
    # Reopened (another process): same settings, same results.
    again = Index.open(tmp_path / "ix")
    assert [h.chunk.id for h in again.store.search_dense(vecs[1], 5)] == [
        h.chunk.id for h in index.store.search_dense(vecs[1], 5)
    ]


def test_ann_settings_are_checked(tmp_path):
    index = Index.create(tmp_path / "ix", embedder="hashing-64")
    with pytest.raises(ConfigError, match="unknown approximate-search settings"):
        index.set_ann(probes=3)
    with pytest.raises(ConfigError, match="whole numbers"):
        index.set_ann(nprobes=-1)


def test_pgvector_hnsw_index_past_the_threshold(tmp_path):
    """PostgreSQL: pgvector's HNSW index, built once the table passes `min_rows`, used by
    unfiltered queries (EXPLAIN says so), close to exact; filtered queries stay exact."""
    url = f"pg:{tmp_path / 'pg'}?index=ann"
    index = Index.create(url, embedder="hashing-64")
    assert index.set_ann(min_rows=1500, ef_search=80) is False
    index.ingest(corpus(1000))
    assert index.store._hnsw_params() is None  # below the threshold: exact
    index.ingest(corpus(2000)[1000:])
    assert index.store._hnsw_params() == (16, 64) and index.manifest.ann["built_rows"] == 2000
    store = index.store
    queries = [" ".join(np.random.default_rng(s).choice(WORDS, 6)) for s in range(40)]
    vecs = index.embedder.embed(queries)
    overlap = []
    for v in vecs:
        approx = {h.chunk.id for h in store.search_dense(v, 10)}
        exact = store._q(
            f"SELECT chunk_id FROM {store.chunks_table} ORDER BY embedding <=> %s::vector, chunk_id LIMIT 10",
            [_vec(v)],
        )
        overlap.append(len(approx & {r[0] for r in exact}) / 10)
    assert np.mean(overlap) >= 0.85, np.mean(overlap)
    plan = store._q(
        f"EXPLAIN SELECT chunk_id FROM {store.chunks_table} ORDER BY embedding <=> %s::vector LIMIT 10", [_vec(vecs[0])]
    )
    assert any("ann_chunks_hnsw" in r[0] for r in plan), plan
    hits = store.search_dense(vecs[0], 10, {"groups": []})  # filtered: exact, k visible hits
    assert len(hits) == 10 and all(int(h.chunk.doc_id[1:]) % 2 == 0 for h in hits)
    assert index.set_ann(ef_construction=32) is True and store._hnsw_params() == (16, 32)  # rebuilt
    assert index.set_ann(ef_search=40) is False  # a query setting: nothing to rebuild
    store.close()


def test_pgvector_build_sizes_its_own_memory_and_leaves_the_server_alone(tmp_path, monkeypatch):
    """The HNSW build gets enough maintenance_work_mem for the graph (no spill to disk, which pgvector
    announces in a NOTICE) for its own transaction only; a larger setting of the user's is kept."""
    from ragtune.stores import pgvector

    index = Index.create(f"pg:{tmp_path / 'pg'}?index=mem", embedder="hashing-64")
    assert index.store.ann_settings()["ef_search"] == 200  # the default, implied (nothing recorded)
    index.ingest(corpus(3000))
    store = index.store
    notices: list[str] = []
    store._conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    store._q("SET maintenance_work_mem = '1MB'")  # a small session setting: this graph (~3MB) would spill
    assert index.set_ann(min_rows=1000) is True and store._hnsw_params() == (16, 64)
    assert not [n for n in notices if "maintenance_work_mem" in n], notices
    assert int(store.last_build_settings["maintenance_work_mem"].removesuffix("MB")) >= 3
    assert store._q("SHOW maintenance_work_mem") == [("1MB",)]  # only the build's transaction had more
    store._q("SET maintenance_work_mem = '2GB'")  # the user's own, larger: kept
    assert "maintenance_work_mem" not in store.build_settings(10**6, 16)
    store._q("RESET maintenance_work_mem")
    monkeypatch.setattr(pgvector, "build_memory_cap", lambda: 2**40)
    assert store.build_settings(10**5, 16)["maintenance_work_mem"] == "116MB"  # 10^5 64-d vectors: ~1 KB each
    monkeypatch.setattr(pgvector, "build_memory_cap", lambda: 32 * 2**20)
    assert "maintenance_work_mem" not in store.build_settings(10**6, 16)  # capped: never below the server's
    # An index that recorded its own ef_search keeps it; one that did not follows the default.
    index.set_ann(ef_search=100)
    assert Index.open(f"pg:{tmp_path / 'pg'}?index=mem").store.ann_settings()["ef_search"] == 100
    store.close()


def test_pgvector_build_falls_back_to_serial_when_shared_memory_is_refused(tmp_path):
    """A parallel build needs its graph in /dev/shm (64MB in a default Docker container); when
    PostgreSQL cannot make the segment, the build is retried serially in the same transaction."""
    import psycopg

    index = Index.create(f"pg:{tmp_path / 'pg'}?index=shm", embedder="hashing-64")
    index.ingest(corpus(300))
    store, real = index.store, index.store._conn.execute
    refused = []

    def execute(sql, *args, **kw):
        if "USING hnsw" in sql and not refused:
            refused.append(sql)
            raise psycopg.errors.DiskFull('could not resize shared memory segment "/PostgreSQL.1" to 9 bytes')
        return real(sql, *args, **kw)

    store._conn.execute = execute
    assert index.set_ann(min_rows=100) is True and refused and store._hnsw_params() == (16, 64)
    assert store.last_build_settings["max_parallel_maintenance_workers"] == 0
    store.close()
