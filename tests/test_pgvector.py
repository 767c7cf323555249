"""PostgreSQL + pgvector beyond the shared contract: URL spellings, several indexes in one
database, a postgresql:// URL to a running server, transactions, and the CLI on `pg:`."""

import json

import numpy as np
import pytest

from ragtune import Index, Pipeline
from ragtune.cli import main
from ragtune.errors import ConfigError, IndexNotFoundError
from ragtune.stores import backend_for
from ragtune.stores.pgvector import mask, parse
from ragtune.testing import HashingEmbedder, ScriptedGenerator, make_chunks


@pytest.fixture(scope="module")
def pgdata(tmp_path_factory):
    return tmp_path_factory.mktemp("pg") / "data"


def test_url_spellings_and_validation(pgdata):
    conninfo, name = parse(f"pg:{pgdata}?index=docs_v2")
    assert name == "docs_v2" and conninfo.startswith("postgresql://")
    assert parse("postgresql://me:secret@db.example:5433/rag?index=team_a&sslmode=require") == (
        "postgresql://me:secret@db.example:5433/rag?sslmode=require",
        "team_a",
    )
    for bad in ("Robert'); DROP TABLE x;--", "UPPER", "9lives"):
        with pytest.raises(ConfigError, match="lower-case identifier"):
            parse(f"pg:{pgdata}?index={bad}")
    with pytest.raises(ConfigError, match="only"):
        parse(f"pg:{pgdata}?colour=red")
    assert mask("postgresql://me:secret@host/db") == "postgresql://me:***@host/db"
    assert backend_for("pg:x").name == backend_for("postgresql://h/db").name == "pgvector"
    assert backend_for("some/dir").name == "lancedb"


def test_unreachable_server_is_a_clear_error_with_the_password_masked():
    with pytest.raises(IndexNotFoundError, match=r"cannot connect.*me:\*\*\*@") as exc:
        Index.open("postgresql://me:hunter2@127.0.0.1:1/nodb?connect_timeout=2")
    assert "hunter2" not in str(exc.value)


def test_two_indexes_share_a_server_and_a_postgresql_url_reaches_it(pgdata, corpus_dir):
    emb = HashingEmbedder(dim=64)
    a = Index.create(f"pg:{pgdata}?index=first", embedder=emb)
    a.ingest([corpus_dir])
    b = Index.create(f"pg:{pgdata}?index=second", embedder=emb)
    b.ingest([corpus_dir / "rome.txt"])
    assert a.info().documents == 3 and b.info().documents == 1
    # The same index through a plain postgresql:// URL (what a team's own server looks like).
    url = parse(f"pg:{pgdata}")[0] + ("&" if "?" in parse(f"pg:{pgdata}")[0] else "?") + "index=first"
    same = Index.open(url, embedder=emb)
    assert (
        same.info().documents == 3 and same.search("Colosseum", k=1, mode="bm25")[0].chunk.doc_id == "corpus/rome.txt"
    )
    assert same.info().backend == "pgvector" and same.info().disk_bytes > 0


def test_a_failing_write_rolls_back_the_whole_batch(pgdata):
    emb = HashingEmbedder(dim=8)
    index = Index.create(f"pg:{pgdata}?index=atomic", embedder=emb)
    store = index.store
    old = make_chunks("doc", ["Old text about lakes.", "More old text."])
    store.upsert(["doc"], old, emb.embed([c.text for c in old]))
    version = store.version()
    # PostgreSQL refuses NUL in text: the failure comes mid-COPY, after the DELETE ran.
    new = make_chunks("doc", ["New text.", "Broken \x00 text."], version="2")
    import psycopg

    with pytest.raises(psycopg.Error):
        store.upsert(["doc"], new, emb.embed([c.text for c in new]))
    assert [c.text for c in store.get_chunks(["doc#0", "doc#1"])] == ["Old text about lakes.", "More old text."]
    assert store.version() == version
    assert store.search_text("lakes", 1)[0].chunk.id == "doc#0"


def test_the_cli_works_on_pg_by_changing_only_the_index(pgdata, corpus_dir, capsys, tmp_path):
    url = f"pg:{pgdata}?index=cli"
    assert main(["ingest", str(corpus_dir), "--index", url, "--embedder", "hashing-64"]) == 0
    assert "3 added" in capsys.readouterr().out
    assert main(["search", "Colosseum amphitheatre", "--index", url, "--mode", "bm25", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["chunk"]["doc_id"] == "corpus/rome.txt"
    assert main(["index-info", "--index", url, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backend"] == "pgvector" and info["documents"] == 3
    (corpus_dir / "rome.txt").unlink()
    assert main(["ingest", str(corpus_dir), "--index", url, "--sync"]) == 0
    assert "1 deleted" in capsys.readouterr().out
    # Answering and the server read the same index through the same API.
    gen = ScriptedGenerator(lambda m: m[-1]["content"].split(">", 1)[1].split(".")[0] + " [1]")
    ans = Pipeline(Index.open(url), gen).answer("When was the Eiffel Tower built?")
    assert ans.citations and ans.citations[0].doc_id == "corpus/paris.txt"
    from fastapi.testclient import TestClient

    from ragtune.server.app import ServeConfig, create_app

    client = TestClient(create_app(ServeConfig(index=url), generators={"rag": gen, "base": gen}))
    r = client.post(
        "/v1/documents", json={"documents": [{"id": "lisbon", "text": "Lisbon is the capital of Portugal."}]}
    )
    assert r.status_code == 200 and r.json()["added"] == 1
    r = client.post("/v1/ask", json={"question": "What is the capital of Portugal?", "k": 2})
    assert r.status_code == 200 and "Lisbon" in r.json()["answer"]
    assert client.delete("/v1/documents/lisbon").status_code == 200
    assert client.delete("/v1/documents/lisbon").status_code == 404


def test_copy_between_backends_keeps_chunks_and_vectors(pgdata, tmp_path, corpus_dir):
    emb = HashingEmbedder(dim=32)
    src = Index.create(f"pg:{pgdata}?index=copysrc", embedder=emb)
    src.ingest([corpus_dir])
    dst = src.copy_to(tmp_path / "lance-copy")
    assert dst.store.backend == "lancedb" and dst.store.document_hashes() == src.store.document_hashes()
    a = np.concatenate([v for _, v in src.store.iter_chunks(vectors=True)])
    b = np.concatenate([v for _, v in dst.store.iter_chunks(vectors=True)])
    assert np.allclose(a, b)
    with pytest.raises(Exception, match="already exists"):
        src.copy_to(tmp_path / "lance-copy")


def test_compare_runs_on_pg_with_freshness_on_a_copy(pgdata, corpus_dir, tmp_path):
    from ragtune.evaluation.compare import ExperimentConfig, run_experiment
    from ragtune.evaluation.strategies import Strategy

    url = f"pg:{pgdata}?index=compare"
    Index.create(url, embedder=HashingEmbedder(dim=64)).ingest([corpus_dir])
    qs = [
        {"id": "q1", "question": "When was the Eiffel Tower built?", "answers": ["1889"], "doc_id": "corpus/paris.txt"}
    ]
    (tmp_path / "q.jsonl").write_text("\n".join(json.dumps(q) for q in qs))

    def reader(messages):
        user = messages[-1]["content"]
        return (
            ("1889 [1]" if "1889" in user else "1890 [1]" if "1890" in user else "I don't know")
            if "<source" in user
            else "1800"
        )

    cfg = ExperimentConfig(index=url, questions=str(tmp_path / "q.jsonl"), documents=str(corpus_dir), fresh_edits=1,
                           strategies=(Strategy("base", False), Strategy("rag", True)), bootstrap=50)  # fmt: skip
    gen = ScriptedGenerator(reader)
    res = run_experiment(cfg, tmp_path / "out", generators={"base": gen, "rag": gen})
    assert res.aggregates["rag"]["f1"]["mean"] == 100.0 and res.aggregates["base"]["f1"]["mean"] == 0.0
    edits = res.freshness["edits"]
    assert len(edits) == 1 and edits[0]["old"] == "1889"
    assert Index.open(tmp_path / "out" / "fresh-index").store.backend == "lancedb"  # the edits went to a copy
    assert "1889" in Index.open(url).get_chunks(["corpus/paris.txt#0", "corpus/paris.txt#1"])[-1].text  # pg untouched
    assert res.costs["rag"]["index_bytes"] > 0
