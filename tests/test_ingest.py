import pytest

from ragtune.errors import DocumentError, IndexMismatchError, IndexNotFoundError
from ragtune.index import Index


def doc_ids(hits):
    return [h.chunk.doc_id for h in hits]


def test_incremental_add_modify_delete(tmp_path, corpus_dir, embedder, small_chunking):
    index = tmp_path / "index"
    r1 = Index.create(index, embedder=embedder, chunking=small_chunking).ingest([corpus_dir])
    assert r1.counts() == {"added": 3, "updated": 0, "deleted": 0, "unchanged": 0, "skipped": 0}
    store = Index.open(index)
    retr = store.retriever()
    assert doc_ids(retr.search("Colosseum amphitheatre", k=1, mode="bm25")) == ["corpus/rome.txt"]

    # Re-run with nothing changed: nothing embedded.
    r2 = Index.create(index, embedder=embedder, chunking=small_chunking).ingest([corpus_dir])
    assert r2.counts()["unchanged"] == 3 and r2.chunks_written == 0

    # Modify one, add one, delete one (with --sync).
    (corpus_dir / "rome.txt").write_text("Rome is the capital of Italy. The Pantheon is a temple in Rome.")
    (corpus_dir / "madrid.txt").write_text("Madrid is the capital of Spain. The Prado is a museum in Madrid.")
    (corpus_dir / "berlin.md").unlink()
    r3 = Index.create(index, embedder=embedder, chunking=small_chunking).ingest([corpus_dir], sync=True)
    assert r3.counts() == {"added": 1, "updated": 1, "deleted": 1, "unchanged": 1, "skipped": 0}
    assert (
        r3.added == ["corpus/madrid.txt"] and r3.updated == ["corpus/rome.txt"] and r3.deleted == ["corpus/berlin.md"]
    )

    store = Index.open(index)
    retr = store.retriever()
    for mode in ("bm25", "dense", "hybrid"):
        assert doc_ids(retr.search("Prado museum", k=1, mode=mode)) == ["corpus/madrid.txt"]
        assert "corpus/berlin.md" not in doc_ids(retr.search("Brandenburg Gate Berlin", k=5, mode=mode))
    assert retr.search("Colosseum", k=3, mode="bm25") == []
    assert sorted(store.store.document_hashes()) == ["corpus/madrid.txt", "corpus/paris.txt", "corpus/rome.txt"]


def test_without_sync_nothing_is_deleted(tmp_path, corpus_dir, embedder, small_chunking):
    index = tmp_path / "index"
    Index.create(index, embedder=embedder, chunking=small_chunking).ingest([corpus_dir])
    (corpus_dir / "paris.txt").unlink()
    r = Index.create(index, embedder=embedder, chunking=small_chunking).ingest([corpus_dir])
    assert r.counts()["deleted"] == 0
    assert "corpus/paris.txt" in Index.open(index).store.document_hashes()


def test_sync_keeps_documents_whose_file_failed_to_load(tmp_path, corpus_dir, embedder, small_chunking):
    index = tmp_path / "index"
    Index.create(index, embedder=embedder, chunking=small_chunking).ingest([corpus_dir])
    (corpus_dir / "paris.txt").write_bytes(bytes(range(1, 32)) * 8)  # control bytes: binary, no encoding fits
    r = Index.create(index, embedder=embedder, chunking=small_chunking).ingest([corpus_dir], sync=True)
    assert [s.path.rsplit("/", 1)[-1] for s in r.skipped] == ["paris.txt"]
    assert r.deleted == []
    assert "corpus/paris.txt" in Index.open(index).store.document_hashes()


def test_strict_aborts_before_writing(tmp_path, corpus_dir, embedder, small_chunking):
    index = tmp_path / "index"
    Index.create(index, embedder=embedder, chunking=small_chunking).ingest([corpus_dir])
    version = Index.open(index).info().version
    (corpus_dir / "new.txt").write_text("New document about Lisbon.")
    (corpus_dir / "empty.txt").write_text("")
    with pytest.raises(DocumentError, match="empty.txt"):
        Index.create(index, embedder=embedder, chunking=small_chunking).ingest([corpus_dir], strict=True)
    store = Index.open(index)
    assert store.info().version == version and "corpus/new.txt" not in store.store.document_hashes()


def test_failure_mid_run_leaves_previous_index_consistent(tmp_path, corpus_dir, embedder, small_chunking):
    index = tmp_path / "index"
    Index.create(index, embedder=embedder, chunking=small_chunking).ingest([corpus_dir])
    before = Index.open(index).store.document_hashes()
    for i in range(6):
        (corpus_dir / f"extra{i}.txt").write_text(f"Extra document number {i} about topic{i}.")
    (corpus_dir / "rome.txt").write_text("Rome changed text about aqueducts.")

    class Exploding:
        name, dim = embedder.name, embedder.dim
        calls = 0

        def count_tokens(self, texts):
            return embedder.count_tokens(texts)

        def embed(self, texts):
            Exploding.calls += 1
            if Exploding.calls == 2:
                raise RuntimeError("simulated crash in the second batch")
            return embedder.embed(texts)

    from ragtune.documents import load_paths
    from ragtune.ingest import ingest_documents

    store = Index.open(index)
    docs = load_paths([corpus_dir]).documents
    with pytest.raises(RuntimeError, match="simulated"):
        ingest_documents(docs, store.store, Exploding(), small_chunking, batch_docs=3)
    after = Index.open(index)
    hashes = after.store.document_hashes()
    # Every stored document is complete (old or new version), and the old ones still answer.
    assert set(before) <= set(hashes)
    for did, h in hashes.items():
        chunks = [c for c in after.get_chunks([f"{did}#{i}" for i in range(10)])]
        assert chunks and all(c.content_hash == h for c in chunks)
    assert doc_ids(after.retriever().search("Eiffel Tower", k=1, mode="bm25")) == ["corpus/paris.txt"]
    # A re-run finishes the job.
    r = Index.create(index, embedder=embedder, chunking=small_chunking).ingest([corpus_dir])
    assert r.counts()["added"] + r.counts()["updated"] >= 1 and r.counts()["skipped"] == 0


def test_open_missing_index_and_embedder_mismatch(tmp_path, corpus_dir, embedder, small_chunking):
    with pytest.raises(IndexNotFoundError, match="no ragtune index"):
        Index.open(tmp_path / "missing")
    index = tmp_path / "index"
    Index.create(index, embedder=embedder, chunking=small_chunking).ingest([corpus_dir])
    from ragtune.testing import HashingEmbedder

    with pytest.raises(IndexMismatchError, match="hashing-256"):
        Index.create(index, embedder=HashingEmbedder(dim=32), chunking=small_chunking).ingest([corpus_dir])
    (tmp_path / "notindex").mkdir()
    (tmp_path / "notindex" / "precious.txt").write_text("keep me")
    with pytest.raises(IndexNotFoundError, match="not empty"):
        Index.create(tmp_path / "notindex", embedder=embedder, chunking=small_chunking).ingest([corpus_dir])
    assert (tmp_path / "notindex" / "precious.txt").read_text() == "keep me"


def test_changed_chunking_rechunks_everything(tmp_path, corpus_dir, embedder, small_chunking):
    from ragtune.config import ChunkConfig

    index = tmp_path / "index"
    Index.create(index, embedder=embedder, chunking=small_chunking).ingest([corpus_dir])
    r = Index.create(index, embedder=embedder, chunking=ChunkConfig(chunk_tokens=20, overlap_tokens=0)).ingest(
        [corpus_dir]
    )
    assert r.counts()["updated"] == 3
    assert Index.open(index).manifest.chunking == {"chunk_tokens": 20, "overlap_tokens": 0}


def test_sync_keeps_the_stored_records_of_a_jsonl_file_with_a_bad_line(tmp_path, embedder, small_chunking):
    folder, index = tmp_path / "docs", tmp_path / "index"
    folder.mkdir()
    records = folder / "records.jsonl"
    records.write_text('{"id": "a", "text": "Alpha text."}\n{"id": "b", "text": "Beta text."}\n')
    Index.create(index, embedder=embedder, chunking=small_chunking).ingest([folder])
    records.write_text('{"id": "a", "text": "Alpha text."}\n{"id": "b", "text": "Beta \n')  # b's line broke
    r = Index.open(index).ingest([folder], sync=True)
    assert [s.path.rsplit("/", 1)[-1] for s in r.skipped] == ["records.jsonl:2"] and r.deleted == []
    assert set(Index.open(index).store.document_hashes()) == {"a", "b"}  # b's stored version stays
