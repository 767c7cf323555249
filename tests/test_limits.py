"""Limits with clear messages, quiet terminals, tables that fit 80 columns."""

import subprocess
import sys

import pytest

from ragtune import Index
from ragtune.config import ChunkConfig
from ragtune.documents import Document
from ragtune.errors import InputError
from ragtune.evaluation.compare import Results
from ragtune.evaluation.report import summary_table
from ragtune.ingest import ingest_documents
from ragtune.testing import HashingEmbedder


def test_a_document_over_the_chunk_limit_is_skipped_and_its_stored_version_kept(tmp_path):
    index = Index.create(tmp_path / "ix", embedder="hashing", chunking=ChunkConfig(chunk_tokens=16, overlap_tokens=0))
    index.ingest([Document("big", "short first version."), Document("ok", "fine.")])
    huge = Document("big", " ".join(f"This is sentence number {i} of a long file." for i in range(200)))
    report = ingest_documents([huge, Document("new", "a new one.")], index.store, index.embedder, index.chunking,
                              max_chunks=5)  # fmt: skip
    assert [s.reason for s in report.skipped] and "over the limit of 5 per document" in report.skipped[0].reason
    assert report.added == ["new"] and report.updated == []
    assert [c.text for c in index.chunks() if c.doc_id == "big"] == ["short first version."]


def test_query_length_is_limited_with_the_limit_named(tmp_path):
    index = Index.create(tmp_path / "ix", embedder="hashing")
    index.ingest([Document("a", "some text")])
    with pytest.raises(InputError, match="limit is 2000"):
        index.search("x" * 2001)
    with pytest.raises(InputError, match="limit"):
        index.search(["fine", "y" * 5000])


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "ragtune.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_search_says_no_results_and_library_noise_stays_off_the_terminal(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The Tamsin lake is 40 metres deep.")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj<<>>endobj\n")  # pypdf warns "EOF marker not found"
    r = cli("ingest", "docs", "--index", "ix", "--embedder", "hashing", cwd=tmp_path)
    assert r.returncode == 3 and "skipped docs/broken.pdf" in r.stdout
    assert "EOF marker" not in r.stderr and "Traceback" not in r.stderr
    r = cli("search", "zzqx", "--index", "ix", "--mode", "bm25", cwd=tmp_path)
    assert r.returncode == 0 and "no results for 'zzqx'" in r.stdout
    r = cli("--verbose", "ingest", "docs", "--index", "ix2", "--embedder", "hashing", cwd=tmp_path)
    assert "EOF marker" in r.stderr or "skipped docs/broken.pdf" in r.stdout  # --verbose lets warnings through


def test_summary_table_fits_80_columns():
    from ragtune.evaluation.metrics import METRICS

    agg = {m.key: 0.123456 for m in METRICS}
    res = Results(
        config={},
        strategies=[],
        aggregates={name: agg for name in ("base", "rag", "ft", "rag+ft")},
        costs={name: {"per_1000_questions_usd": 12.3456} for name in ("base", "rag", "ft", "rag+ft")},
    )
    table = summary_table(res)
    assert max(map(len, table.splitlines())) <= 80
    assert len(table.splitlines()) == 5 and all(line.split()[0] in ("strategy", "base", "rag", "ft", "rag+ft")
                                                for line in table.splitlines())  # fmt: skip
    assert HashingEmbedder  # the fakes import cleanly alongside


def test_one_document_id_twice_in_one_ingest_is_refused_before_writing(tmp_path):
    from ragtune.errors import DocumentError

    index = Index.create(tmp_path / "ix", embedder="hashing")
    index.ingest([Document("a", "first")])
    v = index.store.version()
    with pytest.raises(DocumentError, match=r"\['b'\] given more than once"):
        index.ingest([Document("b", "one"), Document("b", "two")])
    assert index.store.version() == v and [d.id for d in index.documents()] == ["a"]
