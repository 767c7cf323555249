import json

import pytest

from ragtune.documents import load_file, load_paths, load_squad
from ragtune.errors import DocumentError


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF with `text` in Helvetica, xref offsets computed."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
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


def test_each_format_loads_its_text(tmp_path):
    (tmp_path / "a.txt").write_text("Plain text here.")
    (tmp_path / "b.md").write_text("# Title B\n\nMarkdown body.")
    (tmp_path / "c.html").write_text(
        "<html><head><title>Page C</title><style>p{color:red}</style><script>var x=1;</script></head>"
        "<body><nav>Menu Home</nav><main><h1>Heading</h1><p>Main <b>content</b> here.</p></main>"
        "<footer>Copyright</footer></body></html>"
    )
    (tmp_path / "d.pdf").write_bytes(minimal_pdf("Text inside a PDF"))
    (tmp_path / "e.jsonl").write_text(
        json.dumps({"id": "e1", "text": "JSONL doc", "title": "E", "meta": {"lang": "en"}}) + "\n"
    )
    res = load_paths([tmp_path])
    assert not res.skipped, res.skipped
    by_id = {d.id: d for d in res.documents}
    assert by_id[f"{tmp_path.name}/a.txt"].text == "Plain text here."
    assert by_id[f"{tmp_path.name}/b.md"].title == "Title B"
    html = by_id[f"{tmp_path.name}/c.html"]
    assert html.title == "Page C" and "Main content here." in html.text
    assert (
        "color" not in html.text
        and "var x" not in html.text
        and "Menu" not in html.text
        and "Copyright" not in html.text
    )
    assert "Text inside a PDF" in by_id[f"{tmp_path.name}/d.pdf"].text
    assert by_id["e1"].meta == {"lang": "en"} and by_id["e1"].title == "E"


def test_bad_files_are_skipped_with_reasons_and_good_records_land(tmp_path):
    (tmp_path / "good.txt").write_text("Fine.")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "junk.txt").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{not json\n')
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n")
    res = load_paths([tmp_path])
    assert sorted(d.text for d in res.documents) == ["Fine.", "caf\xe9 au lait", "ok"]
    latin = next(d for d in res.documents if d.text.startswith("caf"))
    assert latin.meta == {"encoding": "cp1252"}  # decoded, and it says how
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in res.skipped}
    assert reasons["empty.txt"] == "empty file"
    assert "binary" in reasons["junk.txt"]
    assert "PDF" in reasons["broken.pdf"]
    # The good line of bad.jsonl loaded; the bad one is skipped with its line number.
    assert reasons["bad.jsonl:2"].startswith("line 2: not valid JSON")
    assert next(s for s in res.skipped if s.path.endswith(":2")).source == str(tmp_path / "bad.jsonl")
    assert "unsupported file type" in reasons["image.png"]


def test_ids_and_hashes_are_stable(tmp_path):
    (tmp_path / "a.txt").write_text("Same text.")
    first = load_file(tmp_path / "a.txt", "a.txt")[0]
    again = load_file(tmp_path / "a.txt", "a.txt")[0]
    assert (first.id, first.content_hash) == (again.id, again.content_hash)
    (tmp_path / "a.txt").write_text("Changed text.")
    assert load_file(tmp_path / "a.txt", "a.txt")[0].content_hash != first.content_hash


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(DocumentError, match="no such file"):
        load_paths([tmp_path / "nope"])


def test_squad_loader_links_questions_to_paragraphs(tmp_path):
    data = {
        "version": "1.1",
        "data": [
            {
                "title": "Test_Article",
                "paragraphs": [
                    {
                        "context": "Alpha is first.",
                        "qas": [
                            {
                                "id": "q1",
                                "question": "What is first?",
                                "answers": [{"text": "Alpha", "answer_start": 0}, {"text": "Alpha", "answer_start": 0}],
                            }
                        ],
                    },
                    {
                        "context": "Beta is second.",
                        "qas": [
                            {
                                "id": "q2",
                                "question": "What is second?",
                                "answers": [{"text": "Beta", "answer_start": 0}],
                            }
                        ],
                    },
                ],
            }
        ],
    }
    p = tmp_path / "squad.json"
    p.write_text(json.dumps(data))
    docs, examples = load_squad(p)
    assert [d.id for d in docs] == ["Test_Article/0", "Test_Article/1"]
    assert docs[0].title == "Test Article"
    assert examples[0].answers == ("Alpha",) and examples[0].doc_ids == ("Test_Article/0",)
    assert examples[1].doc_ids == ("Test_Article/1",)
    # The folder loader reads SQuAD JSON into the same documents.
    assert [d.id for d in load_paths([p]).documents] == ["Test_Article/0", "Test_Article/1"]
