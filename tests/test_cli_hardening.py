"""The CLI's edges: closed pipes, bad paths, repeated filters, busy ports, flag names in errors, help."""

import functools
import json
import socket
import subprocess
import sys

import pytest

from ragtune import cli
from ragtune.cli import main
from ragtune.rag import Pipeline
from ragtune.testing import ScriptedGenerator


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def index(tmp_path, corpus_dir, capsys):
    path = str(tmp_path / "ix")
    assert main(["ingest", str(corpus_dir), "--index", path, "--embedder", "hashing"]) == 0
    capsys.readouterr()
    return path


def test_a_closed_pipe_ends_quietly(index):
    for argv in (["search", "capital", "--index", index, "--json"], ["index-info", "--index", index]):
        # The reader is gone before the command writes: every write hits a closed pipe (EPIPE).
        proc = subprocess.Popen(
            [sys.executable, "-m", "ragtune.cli", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        proc.stdout.close()
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=120)
        assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err
        assert code in (0, 141)


def test_missing_paths_are_all_named_and_leave_no_index_behind(tmp_path, capsys):
    target = tmp_path / "new" / "ix"
    code, _, err = run(capsys, "ingest", str(tmp_path / "nope1"), str(tmp_path / "nope2"), "--index", str(target))
    assert code == 1 and err.count("\n") == 1
    assert "nope1: no such file or directory" in err and "nope2: no such file or directory" in err
    assert not (tmp_path / "new").exists()


def test_a_failed_first_ingest_leaves_no_empty_index(tmp_path, corpus_dir, capsys):
    (corpus_dir / "empty.txt").write_text("")
    target = tmp_path / "ix"
    code, _, err = run(capsys, "ingest", str(corpus_dir), "--index", str(target), "--embedder", "hashing", "--strict")
    assert code == 1 and "empty.txt" in err
    assert not target.exists()


def test_a_failed_ingest_into_an_existing_index_keeps_it(index, corpus_dir, capsys):
    (corpus_dir / "empty.txt").write_text("")
    code, _, _ = run(capsys, "ingest", str(corpus_dir), "--index", index, "--strict")
    code2, out, _ = run(capsys, "index-info", "--index", index)
    assert code == 1 and code2 == 0 and "documents: 3" in out


def test_a_filter_key_given_twice_is_an_error(index, capsys):
    code, out, err = run(capsys, "search", "capital", "--index", index, "--filter", "doc_id=a", "--filter", "doc_id=b")
    assert code == 2 and not out and "--filter doc_id given twice; one value per key" in err
    code, _, err = run(capsys, "search", "capital", "--index", index, "--filter", "lang=a", "--filter", "meta.lang=b")
    assert code == 2 and "given twice" in err
    code, _, err = run(capsys, "search", "capital", "--index", index, "--filter", "=a")
    assert code == 2 and "KEY=VALUE" in err
    code, _, _ = run(capsys, "search", "capital", "--index", index, "--filter", "doc_id=corpus/paris.txt",
                     "--filter", "title=Paris")  # fmt: skip
    assert code == 0


def test_serve_on_a_busy_port_says_so_before_announcing_itself(index, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = run(capsys, "serve", "--index", index, "--port", str(port))
    assert code == 1 and err.count("\n") == 1
    assert f"ragtune: error: cannot listen on 127.0.0.1:{port}:" in err and "use --port" in err
    assert "serving" not in err


def test_serve_config_errors_name_the_flag(index, capsys):
    code, _, err = run(capsys, "serve", "--index", index, "--max-queue", "0")
    assert code == 1 and "ragtune: error: --max-queue 0: must be a positive integer" in err
    assert "ServeConfig" not in err
    code, _, err = run(capsys, "serve", "--index", index, "--timeout", "0")
    assert code == 1 and "--timeout 0.0: must be positive" in err
    code, _, err = run(capsys, "serve", "--index", index, "--cors", "nonsense")
    assert code == 1 and "--cors: 'nonsense'" in err


def test_search_flag_errors_name_the_flag(index, capsys):
    code, _, err = run(capsys, "search", "x", "--index", index, "--k", "0")
    assert code == 1 and "--k 0: must be" in err


def test_help_documents_serve_flags_and_when_ask_needs_an_index(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--index INDEX index to answer from" in out
    assert "--host HOST address to listen on" in out and "(default 127.0.0.1)" in out
    assert "--port PORT port to listen on (default 8000)" in out
    assert "(default 8)" in out and "(default 16)" in out
    with pytest.raises(SystemExit):
        main(["ask", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "required unless --no-retrieval" in out


def test_ingest_summary_counts_are_plural_only_when_they_should_be(tmp_path, capsys):
    (tmp_path / "one.txt").write_text("Paris is the capital of France.")
    code, out, _ = run(
        capsys, "ingest", str(tmp_path / "one.txt"), "--index", str(tmp_path / "ix"), "--embedder", "hashing"
    )
    assert code == 0 and " 1 chunk embedded" in out
    code, out, _ = run(capsys, "ingest", str(tmp_path / "one.txt"), "--index", str(tmp_path / "ix"))
    assert code == 0 and " 0 chunks embedded" in out


def test_no_results_names_a_filter_key_no_document_has(tmp_path, capsys):
    docs = tmp_path / "docs.jsonl"
    rows = [{"id": "a", "text": "Paris is the capital of France.", "meta": {"lang": "en"}},
            {"id": "b", "text": "Rome is the capital of Italy.", "meta": {"lang": "it"}}]  # fmt: skip
    docs.write_text("\n".join(json.dumps(r) for r in rows))
    ix = str(tmp_path / "ix")
    run(capsys, "ingest", str(docs), "--index", ix, "--embedder", "hashing")
    code, out, _ = run(capsys, "search", "capital", "--index", ix, "--filter", "nokey=1")
    assert code == 0 and "no results" in out and "no document has a field or meta key 'nokey'" in out
    code, out, _ = run(capsys, "search", "capital", "--index", ix, "--filter", "lang=fr")
    assert code == 0 and "no results" in out and "no document has" not in out  # the key exists; the value does not
    code, out, _ = run(capsys, "search", "capital", "--index", ix, "--filter", "meta.lang=it")
    assert code == 0 and "Rome" in out


def test_ask_with_no_matching_passage_names_the_unknown_filter_key(index, monkeypatch, capsys):
    gen = ScriptedGenerator(lambda prompt: "I don't know.")
    monkeypatch.setattr(cli, "make_generator", lambda name, adapter=None: gen)
    monkeypatch.setattr(cli, "Pipeline", functools.partial(Pipeline, gate=False))  # no answerability gate to read
    code, out, _ = run(capsys, "ask", "What is the capital of France?", "--index", index, "--filter", "nokey=1")
    assert code == 0 and "no document has a field or meta key 'nokey'" in out


def test_a_zero_budget_is_refused_not_taken_for_the_default(tmp_path, corpus_dir, capsys):
    code, _, err = run(capsys, "evaluate", str(corpus_dir), "--out", str(tmp_path / "o"), "--budget-min", "0")
    assert code == 1 and "budget_min=0" in err and "between 2" in err
    assert not (tmp_path / "o").exists()


def test_synth_checks_its_output_before_writing_any_question(index, tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    code, _, err = run(capsys, "synth", "--index", index, "--out", str(blocker / "q.jsonl"), "--n", "2")
    assert code == 1 and "afile" in err and "not a folder" in err


def test_index_info_says_which_gate_checks_answers(index, tmp_path, corpus_dir, capsys):
    from ragtune.config import DEFAULT_GENERATOR

    path = str(tmp_path / "bundled")
    assert main(["ingest", str(corpus_dir), "--index", path]) == 0  # the bundled embedder: the default gate applies
    capsys.readouterr()
    code, out, _ = run(capsys, "index-info", "--index", path, "--json")
    gates = json.loads(out)["gates"]
    assert code == 0 and "default gate" in gates[DEFAULT_GENERATOR]
    code, out, _ = run(capsys, "index-info", "--index", index, "--json")  # hashing embedder: no gate fits
    assert json.loads(out)["gates"] == {}
