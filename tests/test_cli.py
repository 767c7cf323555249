import json

import pytest

from ragtune.cli import EXIT_SKIPPED, main
from ragtune.stores import LanceStore

from .tiny_models import build_tiny_llama


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_ingest_search_info_and_exit_codes(tmp_path, corpus_dir, capsys):
    index = str(tmp_path / "ix")
    code, out, _ = run(capsys, "ingest", str(corpus_dir), "--index", index, "--embedder", "hashing", "--json")
    assert code == 0 and json.loads(out)["counts"]["added"] == 3
    (corpus_dir / "junk.txt").write_bytes(b"\x00\x01\x02" * 50)
    code, out, _ = run(capsys, "ingest", str(corpus_dir), "--index", index)
    assert code == EXIT_SKIPPED and "1 skipped" in out and "junk.txt" in out and "binary" in out
    code, out, _ = run(capsys, "search", "Eiffel Tower", "--index", index, "--k", "1", "--mode", "bm25", "--json")
    hits = json.loads(out)
    assert code == 0 and [h["chunk"]["doc_id"] for h in hits] == ["corpus/paris.txt"]
    code, out, _ = run(capsys, "index-info", "--index", index)
    assert code == 0 and "documents: 3" in out


def test_errors_are_one_line_and_change_nothing(tmp_path, corpus_dir, capsys):
    index = tmp_path / "ix"
    run(capsys, "ingest", str(corpus_dir), "--index", str(index), "--embedder", "hashing")
    version = LanceStore.open(index).info().version
    code, _, err = run(capsys, "search", "x", "--index", str(tmp_path / "missing"))
    assert code == 1 and err.count("\n") == 1 and "no ragtune index" in err
    code, _, err = run(capsys, "search", "   ", "--index", str(index))
    assert code == 1 and "empty" in err
    code, _, err = run(capsys, "search", "x", "--index", str(index), "--k", "0")
    assert code == 1 and "k=0" in err
    (corpus_dir / "empty.txt").write_text("")
    code, _, err = run(capsys, "ingest", str(corpus_dir), "--index", str(index), "--strict")
    assert code == 1 and "empty.txt" in err
    with pytest.raises(SystemExit):
        main(["search", "x", "--index", str(index), "--mode", "fuzzy"])
    assert LanceStore.open(index).info().version == version


def test_ask_with_a_local_generator_folder(tmp_path, corpus_dir, capsys):
    model = build_tiny_llama(tmp_path / "tiny")
    index = str(tmp_path / "ix")
    run(capsys, "ingest", str(corpus_dir), "--index", index, "--embedder", "hashing")
    code, out, _ = run(capsys, "ask", "What is the capital of France?", "--index", index, "--generator", str(model), "--json")
    ans = json.loads(out)
    assert code == 0
    assert ans["question"] == "What is the capital of France?"
    retrieved = {h["chunk"]["id"] for h in ans["hits"]}
    assert ans["hits"] and all(c["chunk_id"] in retrieved for c in ans["citations"])
    assert ans["timings"]["generate_s"] > 0
