"""What a single-file ingest updates, and what `sync` deletes: only what came from the paths given."""

import pytest

from ragtune.documents import Document
from ragtune.index import Index


@pytest.fixture
def docs(tmp_path, monkeypatch):
    """A folder `docs` in the current directory (arguments are relative, as typed at a shell)."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "tamsin.txt").write_text("Tamsin keeps bees on the hill.", encoding="utf-8")
    (folder / "orchard.md").write_text("# Orchard\n\nThe orchard has forty apple trees.", encoding="utf-8")
    (folder / "records.jsonl").write_text(
        '{"id": "rec-a", "text": "Alpha record."}\n{"id": "rec-b", "text": "Beta record."}\n', encoding="utf-8"
    )
    return folder


@pytest.fixture
def index(tmp_path, embedder, small_chunking):
    return Index.create(tmp_path / "index", embedder=embedder, chunking=small_chunking)


FOLDER_IDS = {"docs/tamsin.txt", "docs/orchard.md", "rec-a", "rec-b"}


def stored(index) -> set[str]:
    return set(Index.open(index.url).store.document_hashes())


def text_of(index, doc_id: str) -> str:
    return " ".join(c.text for c in Index.open(index.url).chunks() if c.doc_id == doc_id)


@pytest.mark.parametrize("spelling", ["docs/tamsin.txt", "./docs/../docs/tamsin.txt", "absolute"])
def test_a_file_given_by_itself_updates_its_document_from_the_folder(docs, index, spelling):
    index.ingest(["docs"])
    (docs / "tamsin.txt").write_text("Tamsin sold the bees and now keeps goats.", encoding="utf-8")
    arg = str(docs / "tamsin.txt") if spelling == "absolute" else spelling
    r = Index.open(index.url).ingest([arg])
    assert r.updated == ["docs/tamsin.txt"] and r.added == []
    assert stored(index) == FOLDER_IDS  # no second id `tamsin.txt` beside the stale one
    assert "goats" in text_of(index, "docs/tamsin.txt")


def test_a_file_never_ingested_before_keeps_its_bare_name(docs, index):
    (docs.parent / "loose.txt").write_text("A loose note about hives.", encoding="utf-8")
    index.ingest(["docs"])
    r = Index.open(index.url).ingest(["loose.txt"])
    assert r.added == ["loose.txt"]


def test_a_jsonl_file_given_by_itself_keeps_its_record_ids(docs, index):
    index.ingest(["docs"])
    (docs / "records.jsonl").write_text('{"id": "rec-a", "text": "Alpha, rewritten."}\n', encoding="utf-8")
    r = Index.open(index.url).ingest(["docs/records.jsonl"])
    assert r.updated == ["rec-a"] and r.added == []
    assert stored(index) == FOLDER_IDS


def test_sync_of_a_second_folder_keeps_the_first_folders_documents(docs, index):
    index.ingest(["docs"])
    notes = docs.parent / "notes"
    notes.mkdir()
    (notes / "hives.txt").write_text("The hives face south.", encoding="utf-8")
    r = Index.open(index.url).ingest(["notes"], sync=True)
    assert r.added == ["notes/hives.txt"] and r.deleted == []
    assert stored(index) == FOLDER_IDS | {"notes/hives.txt"}


def test_sync_of_a_folder_keeps_documents_added_as_objects(docs, index, tmp_path):
    index.ingest(["docs"])
    gone = tmp_path / "ragtune-upload-x" / "upload" / "orla.txt"  # the server's upload folder, removed since
    uploads = [
        Document("upload/orla.txt", "Orla repairs the fences.", "Orla", str(gone)),
        Document("faq-1", "Honey is harvested in August.", "FAQ", "api"),
        Document("note", "A note from the Python API.", "Note"),
    ]
    Index.open(index.url).ingest(uploads)
    r = Index.open(index.url).ingest(["docs"], sync=True)
    assert r.deleted == []
    assert stored(index) == FOLDER_IDS | {"upload/orla.txt", "faq-1", "note"}


def test_sync_of_a_folder_deletes_its_files_that_are_gone(docs, index):
    index.ingest(["docs"])
    (docs / "orchard.md").unlink()
    (docs / "records.jsonl").unlink()  # its records have ids of their own: found by their source
    r = Index.open(index.url).ingest(["docs"], sync=True)
    assert r.deleted == ["docs/orchard.md", "rec-a", "rec-b"]
    assert stored(index) == {"docs/tamsin.txt"}


def test_sync_from_another_directory_deletes_by_the_folder_id(docs, index, tmp_path, monkeypatch):
    index.ingest(["docs"])  # sources stored relative to tmp_path
    (docs / "orchard.md").unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r = Index.open(index.url).ingest([str(docs)], sync=True)
    assert r.deleted == ["docs/orchard.md"]


def test_sync_of_one_file_deletes_nothing_else(docs, index):
    index.ingest(["docs"])
    Index.open(index.url).ingest([Document("faq-1", "Honey is harvested in August.", "FAQ", "api")])
    (docs / "tamsin.txt").write_text("Tamsin sold the bees and now keeps goats.", encoding="utf-8")
    r = Index.open(index.url).ingest(["docs/tamsin.txt"], sync=True)
    assert r.updated == ["docs/tamsin.txt"] and r.deleted == []
    assert stored(index) == FOLDER_IDS | {"faq-1"}


def test_sync_of_one_jsonl_file_deletes_its_records_that_are_gone(docs, index):
    index.ingest(["docs"])
    (docs / "records.jsonl").write_text('{"id": "rec-a", "text": "Alpha record."}\n', encoding="utf-8")
    r = Index.open(index.url).ingest(["docs/records.jsonl"], sync=True)
    assert r.deleted == ["rec-b"]
    assert stored(index) == FOLDER_IDS - {"rec-b"}


def test_sync_with_document_objects_only_deletes_every_other_document(docs, index):
    index.ingest(["docs"])
    r = Index.open(index.url).ingest([Document("faq-1", "Honey is harvested in August.")], sync=True)
    assert sorted(r.deleted) == sorted(FOLDER_IDS)
    assert stored(index) == {"faq-1"}
