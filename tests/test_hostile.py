"""Hostile input: `ragtune ingest` over a generated folder of broken, malicious and odd files
finishes, lands every good file (and every good record of a partly bad one), and names every
file or record it skips with a reason, in its text and its JSON output alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ragtune import documents
from ragtune.cli import EXIT_SKIPPED
from ragtune.documents import load_paths, read_file
from ragtune.errors import DocumentError

from .hostile_corpus import pdf_bytes, unlock, write_hostile_corpus


def _ingest(folder: Path, index: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ragtune.cli", "ingest", str(folder), "--index", str(index), "--embedder", "hashing"]
    env = {**os.environ, "PYTHONWARNINGS": "default"}  # library warnings would show, were any printed
    return subprocess.Popen([*cmd, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile") / "corpus"
    expected = write_hostile_corpus(root)
    index = root.parent / "index"
    # Both forms at once (two indexes): the run is as slow as one.
    runs = [_ingest(root, index, "--json"), _ingest(root, root.parent / "index-text")]
    as_json, as_text = (_finish(p) for p in runs)
    yield root, expected, index, as_json, as_text
    unlock(root)


def _where(root: Path, path: str) -> str:
    """A skipped entry's path, relative to the corpus folder (records keep their ':<where>')."""
    return os.path.relpath(path, root) if path.startswith(str(root)) else path


def test_ingest_finishes_without_a_traceback_and_says_some_files_were_skipped(hostile):
    _, _, _, as_json, as_text = hostile
    for run in (as_json, as_text):
        assert run.returncode in (0, EXIT_SKIPPED), run.stderr[-3000:]
        assert run.returncode == EXIT_SKIPPED
        assert "Traceback" not in run.stdout + run.stderr
        # Parser chatter (pypdf's "EOF marker not found", warnings) stays off the terminal.
        assert "pypdf" not in run.stderr and "Warning" not in run.stderr, run.stderr[-3000:]


def test_every_skip_is_named_with_a_reason_in_json_and_text(hostile):
    root, expected, _, as_json, as_text = hostile
    report = json.loads(as_json.stdout)
    reasons = {_where(root, s["path"]): s["reason"] for s in report["skipped"]}
    skips = {name for name, outcome in expected.items() if outcome == "skip"}
    assert skips <= set(reasons), sorted(skips - set(reasons))
    assert all(reasons[name].strip() for name in skips)
    # Nothing that should load is reported as skipped.
    loads = {name for name, outcome in expected.items() if outcome == "load"}
    assert not loads & set(reasons), sorted(loads & set(reasons))
    assert report["counts"]["skipped"] == len(report["skipped"])
    # The text form lists the same entries, one line each: "  skipped <path>: <reason>".
    for name in skips:
        file, _, record = name.partition(":")
        line = f"  skipped {root / file}{':' + record if record else ''}: "
        assert line in as_text.stdout, (name, as_text.stdout[-2000:])
        after = as_text.stdout.split(line, 1)[1].split("\n", 1)[0]
        assert after.strip() == reasons[name]


def test_every_good_file_and_record_lands_in_the_index(hostile):
    from ragtune import Index

    root, expected, index, as_json, _ = hostile
    docs = Index.open(index).documents()
    landed = {os.path.realpath(d.source) for d in docs}
    for name, outcome in expected.items():
        if outcome == "load" and ":" not in name:
            assert os.path.realpath(root / name) in landed, name
    ids = {d.id for d in docs}
    # partial.jsonl: the good lines are there, the bad ones are not.
    assert {"p-1", "p-14", "p-15", "p-16"} <= ids
    assert not {"p-3", "p-5", "p-6", "p-8", "p-11"} & ids
    # Both SQuAD articles titled "Twin" keep their paragraph.
    assert {"Twin/0", "Twin_2/0"} <= ids
    added = json.loads(as_json.stdout)["added"]
    assert len(added) == len(docs)


def test_reasons_say_what_is_wrong(hostile):
    root, _, _, as_json, _ = hostile
    reasons = {_where(root, s["path"]): s["reason"] for s in json.loads(as_json.stdout)["skipped"]}
    expect = {
        "pdf_encrypted.pdf": "encrypted (password-protected) PDF",
        "pdf_no_text_layer.pdf": "no text layer (a scanned image? run OCR first)",
        "pdf_flate_bomb.pdf": "compression bomb",
        "squad_wrong_schema.json": "data[0].title: expected a string, got a number",
        "squad_paragraphs_strings.json": "data[0].paragraphs[0]: expected an object",
        "squad_missing_context.json": "data[0].paragraphs[0]: missing 'context'",
        "json_deep.json": "nested too deeply",
        "random_binary.txt": "looks like binary data",
        "too_large.txt": "is 101.0 MB, over the 100 MB limit",
        "named_pipe.txt": "a FIFO (named pipe), not a regular file",
        "link_outside.txt": f"symlink pointing outside {root}",
        "link_broken.txt": "broken symlink",
        "docx_zip_bomb.docx": "over the 250 MB limit (a zip bomb?)",
        "empty.txt": "empty file",
        "partial.jsonl:2": "line 2: not valid JSON",
        "partial.jsonl:5": "line 5: 'groups' must be a list of strings",
        "partial.jsonl:6": "line 6: 'groups'[1] must be a string",
        "partial.jsonl:13": "line 13: duplicate id 'p-1' (first at line 1)",
    }
    for name, words in expect.items():
        if name in reasons or os.path.exists(root / name.split(":")[0]):
            assert words in reasons[name], (name, reasons[name])


def test_decoded_text_and_record_fields(hostile):
    root = hostile[0]
    names = ["latin1.txt", "cp1252_quotes.md", "utf16_bom.txt", "utf16_no_bom.txt", "mixed_encodings.txt"]
    names += ["cyrillic_cp1251.txt", "japanese_sjis.txt", "nul_bytes.txt", "declared_charset.html"]
    loaded = load_paths([root / n for n in names] + [root / "partial.jsonl", root / "good_records.jsonl"])
    text = {Path(d.source).name: d.text for d in loaded.documents}
    by_id = {d.id: d for d in loaded.documents}
    assert "Le café du port" in text["latin1.txt"]
    assert "“naïve” café charges 5 €" in text["cp1252_quotes.md"]
    assert "Grüße" in text["utf16_bom.txt"] and "UTF-16 without a byte order mark" in text["utf16_no_bom.txt"]
    assert "naïve café" in text["mixed_encodings.txt"] and "crème brûlée" in text["mixed_encodings.txt"]
    assert "Порт Вальдера" in text["cyrillic_cp1251.txt"] and "ヴァルデラ港" in text["japanese_sjis.txt"]
    assert text["nul_bytes.txt"] == "Text with stray NUL bytes in the middle of it."
    assert "Crème brûlée." in text["declared_charset.html"]
    assert by_id["latin1.txt"].meta == {"encoding": "cp1252"}  # how it was read is on record
    assert by_id["mixed_encodings.txt"].meta == {"encoding": "utf-8+cp1252"}
    # Records: access groups cleaned; a lone surrogate escape replaced; U+2028 kept inside its line.
    assert by_id["p-16"].meta["groups"] == ["hr", "staff"] and by_id["rec-staff"].meta["groups"] == ["staff"]
    assert "\ufffd" in by_id["p-14"].text and "\u2028" in by_id["p-15"].text
    assert by_id["p-14"].content_hash  # hashable: no lone surrogate left to fail UTF-8 encoding


# -- the file system changing under the loader -------------------------------------------------


def test_a_file_that_changes_while_read_is_skipped(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("Stable text.")
    target = tmp_path / "b.txt"
    target.write_text("Text that grows while ragtune reads it.")
    real = documents._read_fd

    def growing(fd, n):
        if os.fstat(fd).st_ino == target.stat().st_ino:
            with target.open("a") as fh:
                fh.write(" More text appended meanwhile.")
        return real(fd, n)

    monkeypatch.setattr(documents, "_read_fd", growing)
    res = load_paths([tmp_path])
    assert [d.text for d in res.documents] == ["Stable text."]
    (skip,) = res.skipped
    assert skip.path == str(target) and "changed while being read" in skip.reason


def test_a_file_that_disappears_or_cannot_be_opened_is_skipped(tmp_path, monkeypatch):
    for name in ("gone.txt", "locked.txt", "ok.txt"):
        (tmp_path / name).write_text(f"Text of {name}.")
    real_open = os.open

    def hostile_open(path, flags, *args, **kwargs):
        name = os.path.basename(path)
        if name == "gone.txt":
            os.unlink(path)  # deleted between listing and reading
        if name == "locked.txt":
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(documents.os, "open", hostile_open)
    res = load_paths([tmp_path])
    reasons = {Path(s.path).name: s.reason for s in res.skipped}
    assert [d.text for d in res.documents] == ["Text of ok.txt."]
    assert "disappeared" in reasons["gone.txt"]
    assert reasons["locked.txt"] == "permission denied: cannot read it"


def test_a_folder_that_cannot_be_listed_is_named(tmp_path, monkeypatch):
    (tmp_path / "open").mkdir()
    (tmp_path / "open" / "a.txt").write_text("Readable.")
    (tmp_path / "closed").mkdir()
    (tmp_path / "closed" / "b.txt").write_text("Behind a closed door.")
    real = os.scandir

    def scandir(path):
        if os.path.basename(path) == "closed":
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(documents.os, "scandir", scandir)
    res = load_paths([tmp_path])
    assert [d.text for d in res.documents] == ["Readable."]
    assert res.skipped == [documents.Skipped(str(tmp_path / "closed"), "cannot list the folder: permission denied")]


def test_the_size_limit_is_a_parameter(tmp_path):
    (tmp_path / "big.txt").write_text("word " * 400)
    (tmp_path / "small.txt").write_text("Short.")
    res = load_paths([tmp_path], max_file_bytes=1000)
    assert [d.text for d in res.documents] == ["Short."]
    assert res.skipped[0].reason == "the file is 2.0 kB, over the 1 kB limit"
    with open(tmp_path / "huge.txt", "wb") as fh:
        fh.truncate(120_000_000)
    assert "is 120.0 MB, over the 100 MB limit" in load_paths([tmp_path / "huge.txt"]).skipped[0].reason


def test_a_loader_bug_costs_one_file_not_the_run(tmp_path, monkeypatch):
    (tmp_path / "a.md").write_text("# A\n\nFine.")
    (tmp_path / "b.txt").write_text("Triggers the bug.")

    def buggy(path, doc_id, data):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setitem(documents.LOADERS, ".txt", buggy)
    res = load_paths([tmp_path])
    assert [d.title for d in res.documents] == ["A"]
    assert res.skipped[0].reason == "unexpected error in the .txt loader: ZeroDivisionError: division by zero"


def test_pdf_parser_warnings_stay_off_stderr(tmp_path, capfd):
    good = pdf_bytes("Text of a PDF without its end marker")
    (tmp_path / "no_eof.pdf").write_bytes(good.replace(b"%%EOF", b""))
    (tmp_path / "bad_xref.pdf").write_bytes(good.replace(b"xref", b"xref-broken"))
    res = load_paths([tmp_path])
    assert len(res.documents) + len(res.skipped) == 2
    assert capfd.readouterr().err == ""


def test_special_files_are_never_opened(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(tmp_path / "pipe.txt")
    with pytest.raises(DocumentError, match="FIFO"):
        read_file(tmp_path / "pipe.txt", "pipe.txt")  # would block forever if opened
    res = load_paths([tmp_path / "pipe.txt"])  # named as an argument, not found in a folder
    assert res.skipped[0].reason == "a FIFO (named pipe), not a regular file"


def test_a_missing_argument_is_an_error_before_anything_is_read(tmp_path):
    (tmp_path / "a.txt").write_text("Text.")
    seen = []
    with pytest.raises(DocumentError, match="no such file"):
        load_paths([tmp_path, tmp_path / "nope"], on_file=seen.append)
    assert seen == []
