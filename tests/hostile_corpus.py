"""A folder of hostile input files, generated (no binary file is committed).

`write_hostile_corpus(folder)` writes good files and some fifty kinds of hostile ones (wrong
encodings, binary data, broken and malicious PDFs, wrong JSON schemas, bad JSONL lines,
special files, symlinks leaving the folder, ...) and returns what ingest must do with each:
file name -> "load" | "skip". A key `<file>:<line>` (or `<file>:<where>`) names one record of a
file that loads: that record must be skipped, with a reason, while the rest of the file lands.

    python tests/hostile_corpus.py DIR      # writes the corpus to DIR and prints the expectations
"""

from __future__ import annotations

import codecs
import io
import json
import os
import socket
import struct
import sys
import zipfile
import zlib
from email.message import EmailMessage
from pathlib import Path

PROSE = (
    "The harbour of Valdera was rebuilt in 1884 after the great storm. Its new breakwater is "
    "two kilometres long. Ships from the northern provinces unload timber and salt there."
)


def pdf_bytes(text: str | None = None, content: bytes | None = None, flate: bool = False) -> bytes:
    """A one-page PDF: `text` in Helvetica, or the raw content stream `content` (Flate-compressed
    when `flate`), xref offsets computed."""
    stream = content if content is not None else f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    head = b"<< /Length %d%s >>\nstream\n" % (len(stream), b" /Filter /FlateDecode" if flate else b"")
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        head + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def _pypdf_written(build) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes("Quarterly figures inside a PDF"))))
    build(writer)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def _blank_pdf() -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(612, 792)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def _flate_bomb_pdf(mb: int = 76) -> bytes:
    """A content stream of `mb` MB of spaces, Flate-compressed to ~100 kB: over pypdf's 75 MB
    decompression limit, so it must be refused without using that memory or time."""
    z = zlib.compressobj(9)
    block = b" " * (1 << 20)
    parts = [z.compress(block) for _ in range(mb)]
    parts += [z.compress(b"BT /F1 12 Tf 72 720 Td (bomb) Tj ET"), z.flush()]
    return pdf_bytes(content=b"".join(parts), flate=True)


def _zip(entries: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in entries.items():
            zf.writestr(name, text)
    return buf.getvalue()


def _zip_bomb_docx() -> bytes:
    """A .docx whose document.xml declares 3 GB unpacked (the header says so; the check reads it)."""
    data = bytearray(
        _zip({"[Content_Types].xml": "<Types>wordprocessingml</Types>", "word/document.xml": "<w:document/>"})
    )
    big = struct.pack("<I", 3_000_000_000)
    i = 0
    while (i := data.find(b"PK\x01\x02", i)) >= 0:  # central directory: uncompressed size at +24
        data[i + 24 : i + 28] = big
        i += 4
    return bytes(data)


def _docx() -> bytes | None:
    try:
        from docx import Document as Docx
    except ImportError:  # pragma: no cover - python-docx comes with markitdown[docx]
        return None
    doc = Docx()
    doc.add_heading("Travel policy", 1)
    doc.add_paragraph("Employees book trains for trips under 500 km.")
    buf = io.BytesIO()
    doc.save(buf)
    return buf.getvalue()


def _email(body: str, subject: str = "Office move") -> bytes:
    msg = EmailMessage()
    msg["From"] = "ana@example.com"
    msg["To"] = "team@example.com"
    msg["Subject"] = subject
    msg.set_content(body)
    return bytes(msg)


def _squad(data) -> str:
    return json.dumps({"version": "1.1", "data": data})


def _para(context: str, qid: str, question: str = "Where?", answer: str = "Valdera") -> dict:
    return {"context": context, "qas": [{"id": qid, "question": question, "answers": [{"text": answer}]}]}


def write_hostile_corpus(folder: str | Path) -> dict[str, str]:
    """Write the corpus into `folder` (created if missing); returns name -> "load" | "skip"."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    expect: dict[str, str] = {}

    def put(name: str, data: bytes | str, outcome: str) -> Path:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        expect[name] = outcome
        return path

    # -- good files, one of each format ------------------------------------------------------
    put("good_plain.txt", PROSE, "load")
    put("good_notes.md", f"# Harbour notes\n\n{PROSE}\n\n## Trade\n\n- timber\n- salt\n", "load")
    put(
        "good_page.html",
        f"<html><head><title>Harbour</title></head><body><main><p>{PROSE}</p></main></body></html>",
        "load",
    )
    put(
        "good_records.jsonl",
        "\n".join(
            json.dumps(r)
            for r in (
                {"id": "rec-public", "text": "The lighthouse was lit in 1890.", "title": "Lighthouse"},
                {"id": "rec-staff", "text": "Staff parking is behind the customs house.", "groups": ["staff"]},
            )
        ),
        "load",
    )
    put("good_squad.json", _squad([{"title": "Valdera", "paragraphs": [_para(PROSE, "q-good")]}]), "load")
    put("good_report.pdf", pdf_bytes("Annual harbour report with tonnage figures"), "load")
    put("good_table.csv", "port,tonnage\nValdera,1200\nOstra,800\n", "load")
    put("good_mail.eml", _email("The office moves to the harbour building on Monday."), "load")
    docx = _docx()
    if docx:
        put("good_policy.docx", docx, "load")

    # -- encodings and odd text: all of these load ------------------------------------------------
    put("latin1.txt", "Le café du port ouvre à six heures; la crème brûlée est célèbre.".encode("latin-1"), "load")
    put("cp1252_quotes.md", "# Prices\n\nThe “naïve” café charges 5 € — déjà vu.".encode("cp1252"), "load")
    put("utf16_bom.txt", codecs.BOM_UTF16_LE + f"UTF-16 little-endian: {PROSE} Grüße.".encode("utf-16-le"), "load")
    put("utf16be_bom.txt", codecs.BOM_UTF16_BE + f"UTF-16 big-endian: {PROSE}".encode("utf-16-be"), "load")
    put("utf16_no_bom.txt", f"UTF-16 without a byte order mark: {PROSE}".encode("utf-16-le"), "load")
    put("utf32_bom.txt", f"UTF-32 with a BOM: {PROSE}".encode("utf-32"), "load")
    put("utf8_bom.md", codecs.BOM_UTF8 + b"# BOM\n\nA UTF-8 file with a byte order mark.", "load")
    put(
        "mixed_encodings.txt",
        "First part in UTF-8: naïve café. ".encode() + "Second part in Latin-1: crème brûlée.".encode("latin-1"),
        "load",
    )
    put("nul_bytes.txt", b"Text with stray NUL\x00 bytes\x00\x00 in the middle of it.", "load")
    put("cyrillic_cp1251.txt", "Порт Вальдера был перестроен в 1884 году после шторма.".encode("cp1251"), "load")
    put("japanese_sjis.txt", "ヴァルデラ港は嵐の後に再建されました。防波堤は長いです。".encode("shift_jis"), "load")
    put("line_endings.txt", b"Windows line.\r\nOld Mac line.\rUnix line.\n", "load")
    put("million_char_line.txt", ("word " * 200_000).encode(), "load")
    put("million_char_token.txt", b"x" * 1_000_000, "load")
    put("encoded_surrogate.txt", b"Bytes of a UTF-8-encoded surrogate: \xed\xa0\x80 end.", "load")
    put("invisible_chars.txt", "Zero\u200bwidth, bidi \u202etxet\u202c, soft\u00adhyphen and text.", "load")
    put("Upper Case NAME.TXT", "A file with an upper-case suffix and spaces in its name.", "load")
    put("naïve ünïcode näme.md", "# Unicode name\n\nThe file name is not ASCII.", "load")
    put("new\nline in name.txt", "A newline in the file name.", "load")
    put(("long_name_" * 24)[:240] + ".txt", "A file name of 244 characters.", "load")
    put("/".join(f"d{i}" for i in range(40)) + "/deep_folder.txt", "Forty folders down.", "load")
    put("deep_nested.html", "<div>" * 5000 + "Deep inside five thousand divs." + "</div>" * 5000, "load")
    put(
        "declared_charset.html",
        '<html><head><meta charset="iso-8859-1"><title>Caf\xe9</title></head><body><p>Cr\xe8me br\xfbl\xe9e.</p>'
        "</body></html>".encode("latin-1"),
        "load",
    )
    put("headings_only.md", "\n".join(f"{'#' * (1 + i % 6)} Heading {i}" for i in range(3000)), "load")
    put("owner_password.pdf", _pypdf_written(lambda w: w.encrypt(user_password="", owner_password="own")), "load")
    put("latin1_body.eml", _email("Caf\xe9 au lait.").replace(b"Office move", b"Caf\xe9"), "load")
    put("latin1_table.csv", "ville,prix\nBéziers,5 €\n".encode("cp1252"), "load")
    put(
        "squad_same_titles.json",
        _squad(
            [{"title": "Twin", "paragraphs": [_para("First twin.", "t1")]}] * 1
            + [{"title": "Twin", "paragraphs": [_para("Second twin.", "t2")]}]
        ),
        "load",
    )
    put("records_list.json", json.dumps([{"text": "A record in a JSON list."}, {"text": "And another."}]), "load")
    put("crlf_bom_records.jsonl", codecs.BOM_UTF8 + b'{"text": "CRLF line one"}\r\n{"text": "CRLF two"}\r\n', "load")

    # -- a JSONL file with good lines and bad ones: the good lines land, each bad line is named --
    lines = [
        json.dumps({"id": "p-1", "text": "Good line one."}),
        "{not json",
        json.dumps({"id": "p-3", "text": 5}),
        json.dumps(["a", "list"]),
        json.dumps({"id": "p-5", "text": "Bad groups.", "groups": "staff"}),
        json.dumps({"id": "p-6", "text": "Bad group item.", "groups": ["staff", 7]}),
        json.dumps({"id": "p-7", "text": "   "}),
        '{"id": "p-8", "text": "NaN inside", "meta": {"x": NaN}}',
        '{"id": "p-9", "text": "huge number", "n": ' + "9" * 5000 + "}",
        "[" * 50_000,
        json.dumps({"id": "p-11", "text": "Meta is a list.", "meta": [1]}),
        json.dumps({"id": {"nested": 1}, "text": "Id is an object."}),
        json.dumps({"id": "p-1", "text": "Duplicate id of line one."}),
        '{"id": "p-14", "text": "Lone surrogate \\ud800 escaped, kept as U+FFFD."}',
        json.dumps({"id": "p-15", "text": "Line\u2028separator inside a string."}, ensure_ascii=False),
        json.dumps({"id": "p-16", "text": "Good line, groups cleaned.", "groups": [" staff ", "hr", "staff"]}),
    ]
    put("partial.jsonl", "\n".join(lines) + "\n", "load")
    for n in (2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13):
        expect[f"partial.jsonl:{n}"] = "skip"
    put(
        "squad_empty_context.json",
        _squad([{"title": "Gaps", "paragraphs": [_para("Has text.", "g1"), _para("", "g2")]}]),
        "load",
    )
    expect["squad_empty_context.json:Gaps/1"] = "skip"

    # -- files that must be skipped, each with its reason -----------------------------------------
    put("empty.txt", b"", "skip")
    put("whitespace_only.md", " \n\t\n   \r\n", "skip")
    put("only_nul_bytes.txt", bytes(4096), "skip")
    put("random_binary.txt", os.urandom(8192), "skip")
    put("png_named_txt.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + os.urandom(2000), "skip")
    put("high_bytes_only.txt", bytes(range(128, 256)) * 16, "skip")
    put("control_chars.md", bytes(range(1, 9)) * 500, "skip")
    put(
        "only_markup.html",
        "<html><head><script>var a = 1;</script><style>p{}</style></head><body><div></div></body></html>",
        "skip",
    )
    put("squad_wrong_schema.json", json.dumps({"data": [{"title": 5, "paragraphs": "nope"}]}), "skip")
    put("squad_paragraphs_strings.json", _squad([{"title": "X", "paragraphs": ["not an object"]}]), "skip")
    put("squad_missing_context.json", _squad([{"title": "X", "paragraphs": [{"qas": []}]}]), "skip")
    put(
        "squad_question_number.json",
        _squad([{"title": "X", "paragraphs": [{"context": "C.", "qas": [{"id": "1", "question": 42}]}]}]),
        "skip",
    )
    put("squad_data_not_list.json", json.dumps({"data": {"title": "X"}}), "skip")
    put("json_not_squad.json", json.dumps({"foo": 1}), "skip")
    put("json_truncated.json", '{"data": [{"title": "X", "paragraphs": [', "skip")
    put("json_deep.json", "[" * 100_000 + "]" * 100_000, "skip")
    put("json_huge_number.json", "9" * 10_000, "skip")
    put("json_scalar.json", "42", "skip")
    put("jsonl_all_bad.jsonl", "{oops\n[1, 2]\n" + json.dumps({"text": 1}) + "\n", "skip")
    put("jsonl_blank_lines.jsonl", "\n\n   \n", "skip")
    put("pdf_junk.pdf", b"%PDF-1.4 this is not really a pdf", "skip")
    put("pdf_truncated.pdf", pdf_bytes("Cut in half")[:200], "skip")
    put("pdf_encrypted.pdf", _pypdf_written(lambda w: w.encrypt(user_password="secret", owner_password="o")), "skip")
    put("pdf_no_text_layer.pdf", _blank_pdf(), "skip")
    put("pdf_flate_bomb.pdf", _flate_bomb_pdf(), "skip")
    put("pdf_is_html.pdf", "<html><body>not a pdf</body></html>", "skip")
    put("docx_zip_bomb.docx", _zip_bomb_docx(), "skip")
    put("docx_plain_text.docx", "this is plain text, not a Word document", "skip")
    put(
        "docx_encrypted.docx",
        bytes.fromhex("d0cf11e0a1b11ae1") + bytes(504) + "EncryptedPackage".encode("utf-16-le"),
        "skip",
    )
    put("xlsx_other_zip.xlsx", _zip({"hello.txt": "a zip, not a workbook"}), "skip")
    put("csv_binary.csv", os.urandom(4096), "skip")
    put("eml_no_headers.eml", "just some words, no headers at all", "skip")
    put("unsupported.xyz", "text in a format ragtune does not read", "skip")
    put("README", "a file without a suffix", "skip")
    big = root / "too_large.txt"
    with big.open("wb") as fh:  # sparse: 101 MB on paper, nothing on disk; refused before reading
        fh.truncate(101_000_000)
    expect["too_large.txt"] = "skip"

    # -- file system hostility ----------------------------------------------------------------------
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "named_pipe.txt")  # opening it for reading would block forever
        expect["named_pipe.txt"] = "skip"
    sock_path = root / "sock.txt"
    if len(str(sock_path)) < 100 and hasattr(socket, "AF_UNIX"):
        s = socket.socket(socket.AF_UNIX)
        try:
            s.bind(str(sock_path))
            expect["sock.txt"] = "skip"
        except OSError:
            pass
        finally:
            s.close()
    if hasattr(os, "symlink"):
        os.symlink(sys.executable, root / "link_outside.txt")  # a file outside the folder
        expect["link_outside.txt"] = "skip"
        os.symlink(root / "no_such_target.txt", root / "link_broken.txt")
        expect["link_broken.txt"] = "skip"
        os.symlink(root / "link_loop_b.txt", root / "link_loop_a.txt")
        os.symlink(root / "link_loop_a.txt", root / "link_loop_b.txt")
        expect["link_loop_a.txt"] = expect["link_loop_b.txt"] = "skip"
        os.symlink("good_plain.txt", root / "link_to_good.txt")  # the target is read itself
        expect["link_to_good.txt"] = "skip"
        os.symlink("d0", root / "link_to_folder")
        expect["link_to_folder"] = "skip"
        hidden = put(".hidden/kept_via_link.txt", "Only reachable through a symlink.", "load")
        del expect[".hidden/kept_via_link.txt"]
        os.symlink(hidden, root / "link_to_hidden.txt")
        expect["link_to_hidden.txt"] = "load"
    locked = put("unreadable.txt", "Nobody may read this.", "skip")
    locked.chmod(0)
    locked_dir = root / "unreadable_dir"
    put("unreadable_dir/inside.txt", "Inside a folder nobody may list.", "load")
    locked_dir.chmod(0)
    if os.access(locked, os.R_OK):  # root reads anything: then these load
        expect["unreadable.txt"] = "load"
    else:
        del expect["unreadable_dir/inside.txt"]
        expect["unreadable_dir"] = "skip"
    return expect


def unlock(folder: str | Path) -> None:
    """Give back the permissions write_hostile_corpus took away, so that the folder can be deleted."""
    for name in ("unreadable.txt", "unreadable_dir"):
        p = Path(folder) / name
        if p.exists():
            p.chmod(0o755)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/hostile_corpus.py DIR")
    outcomes = write_hostile_corpus(sys.argv[1])
    for name, outcome in sorted(outcomes.items()):
        print(f"{outcome:5} {name!r}")
    print(
        f"{len(outcomes)} entries: {sum(v == 'load' for v in outcomes.values())} load, "
        f"{sum(v == 'skip' for v in outcomes.values())} skip"
    )
