"""Document access groups through the public API: ingest tags documents, every retrieval path
filters inside the store, and indexes made before groups existed keep working."""

import json

import lancedb
import pyarrow as pa
import pytest

from ragtune import Index, Pipeline
from ragtune.config import RagConfig
from ragtune.documents import Document
from ragtune.testing import ScriptedGenerator

SECRET = {"fin": "The zorblax budget is seven million.", "hr": "The zorblax salaries are kept private."}


def build(tmp_path, **kw):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "public.txt").write_text("The zorblax is a public project about bridges.")
    (folder / "records.jsonl").write_text(
        json.dumps({"id": "fin", "text": SECRET["fin"], "groups": ["finance"]}) + "\n"
        + json.dumps({"id": "hr", "text": SECRET["hr"], "groups": ["hr"]}) + "\n"
    )  # fmt: skip
    index = Index.create(tmp_path / "ix", embedder="hashing")
    index.ingest([folder], **kw)
    return index


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_every_retrieval_mode_filters_by_group(tmp_path, mode):
    index = build(tmp_path)
    see = lambda groups: {h.chunk.doc_id for h in index.search("zorblax", k=10, mode=mode, filters=groups)}  # noqa: E731
    assert see({"groups": ["finance"]}) == {"docs/public.txt", "fin"}
    assert see({"groups": ["hr"]}) == {"docs/public.txt", "hr"}
    assert see({"groups": []}) == {"docs/public.txt"}
    assert see(None) == {"docs/public.txt", "fin", "hr"}


def test_documents_listing_and_ingest_groups_for_a_whole_call(tmp_path):
    index = build(tmp_path, groups=["legal"])
    docs = {d.id: d.groups for d in index.documents()}
    # The records name their own groups; the text file takes the call's.
    assert docs == {"docs/public.txt": ("legal",), "fin": ("finance",), "hr": ("hr",)}
    assert [d.id for d in index.documents(groups=["finance"])] == ["fin"]
    assert [d.id for d in index.documents(groups=[])] == []


def test_pipeline_answers_only_from_visible_sources(tmp_path):
    index = build(tmp_path)
    echo = ScriptedGenerator(lambda p: p[-1]["content"])  # repeats its prompt: a leak would show
    pipe = Pipeline(index, echo, RagConfig(embedder="hashing", answer_mode="generate", k=5))
    for groups, secret, other in (["finance"], "seven million", "private"), (["hr"], "private", "seven million"):
        ans = pipe.answer("What is the zorblax budget?", filters={"groups": groups})
        assert secret in ans.text  # the visible source reached the model ...
        assert other not in ans.text and all(other not in c.snippet for c in ans.citations)  # ... the other did not
        assert all(h.chunk.doc_id in ("docs/public.txt", {"finance": "fin", "hr": "hr"}[groups[0]])
                   for h in ans.hits)  # fmt: skip
        streamed = list(pipe.stream("What is the zorblax budget?", filters={"groups": groups}))
        assert other not in "".join(p for p in streamed if isinstance(p, str))


def test_index_made_before_groups_existed(tmp_path):
    index = Index.create(tmp_path / "ix", embedder="hashing")
    index.ingest([Document("old", "An old zorblax note.")])
    index.close()
    table = lancedb.connect(str(tmp_path / "ix")).open_table("chunks")
    table.drop_columns(["groups"])  # what an index written by an earlier ragtune looks like
    old = Index.open(tmp_path / "ix")
    assert [h.chunk.doc_id for h in old.search("zorblax", filters={"groups": ["x"]})] == ["old"]
    old.ingest([Document("new", "A new zorblax secret.", meta={"groups": ["x"]})])
    assert "groups" in lancedb.connect(str(tmp_path / "ix")).open_table("chunks").schema.names
    assert {h.chunk.doc_id for h in old.search("zorblax", k=5, filters={"groups": ["y"]})} == {"old"}
    assert {h.chunk.doc_id for h in old.search("zorblax", k=5, filters={"groups": ["x"]})} == {"old", "new"}
    assert pa is not None


def test_a_create_killed_before_its_manifest_does_not_block_the_next(tmp_path):
    index = Index.create(tmp_path / "ix", embedder="hashing")
    (tmp_path / "ix" / "ragtune-index.json").unlink()  # what a kill between table and manifest leaves
    index.close()
    again = Index.create(tmp_path / "ix", embedder="hashing")
    again.ingest([Document("a", "text")])
    assert [d.id for d in Index.open(tmp_path / "ix").documents()] == ["a"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not an index")
    with pytest.raises(Exception, match="refusing"):
        Index.create(tmp_path / "other", embedder="hashing")


def test_equal_bm25_scores_come_back_in_the_same_order(tmp_path):
    index = Index.create(tmp_path / "ix", embedder="hashing")
    index.ingest([Document(f"d{i:02d}", "alpha beta gamma") for i in range(30)])
    first = [h.chunk.id for h in index.search("alpha", k=5, mode="bm25")]
    assert first == sorted(first) and all(
        [h.chunk.id for h in index.search("alpha", k=5, mode="bm25")] == first for _ in range(5)
    )
