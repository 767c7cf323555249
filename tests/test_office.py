"""Word, PowerPoint, Excel, CSV and e-mail load as Markdown (fixtures made here, none committed),
bad ones are skipped with a reason naming the problem, and chunking keeps headings, list items
and table rows together."""

import csv
import io
import zipfile
from email.message import EmailMessage

import pytest

from ragtune import ChunkConfig, Index
from ragtune.chunking import chunk_document, whitespace_tokens
from ragtune.documents import Document, load_file, load_paths


def make_docx(path, extra_sections=0):
    from docx import Document as Docx

    doc = Docx()
    doc.add_heading("Travel policy", 1)
    doc.add_paragraph("Employees book trains for trips under 500 km.")
    doc.add_heading("Allowances", 2)
    table = doc.add_table(rows=3, cols=2)
    for i, row in enumerate([("City", "Daily allowance"), ("Paris", "90 EUR"), ("Oslo", "120 EUR")]):
        table.cell(i, 0).text, table.cell(i, 1).text = row
    doc.add_paragraph("Receipts are kept for seven years.", style="List Bullet")
    doc.add_paragraph("Taxis need a manager's approval.", style="List Bullet")
    for k in range(extra_sections):
        doc.add_heading(f"Region {k}", 2)
        doc.add_paragraph(" ".join(f"Rule {k}.{j} applies to every trip in region {k}." for j in range(12)))
    doc.save(path)


def make_pptx(path):
    from pptx import Presentation

    deck = Presentation()
    for title, body, notes in (
        ("Quarterly review", "Revenue grew 12 percent.", "Mention the Porto pilot."),
        ("Next steps", "Open the Lisbon office.", ""),
    ):
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
        if notes:
            slide.notes_slide.notes_text_frame.text = notes
    deck.save(path)


def make_xlsx(path, rows=1):
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "Offices"
    ws.append(["Office", "Head", "Staff"])
    ws.append(["Lisbon", "Ana Duarte", 42])
    for i in range(rows - 1):
        ws.append([f"Branch{i}", f"Head{i}", i])
    budget = wb.create_sheet("Budget")
    budget.append(["Year", "Amount"])
    budget.append([2024, 125000])
    wb.save(path)


def make_eml(path):
    msg = EmailMessage()
    msg["Subject"], msg["From"], msg["To"] = "Server move on Friday", "ops@example.org", "all@example.org"
    msg["Date"] = "Fri, 07 Mar 2025 09:00:00 +0000"
    msg.set_content("The file server moves to rack 7 on Friday at 18:00.")
    msg.add_alternative("<h1>Server move</h1><p>The file server moves to <b>rack 7</b>.</p>", subtype="html")
    msg.add_attachment(b"x", maintype="application", subtype="octet-stream", filename="plan.bin")
    msg.add_attachment(b"Cable the rack before noon.", maintype="text", subtype="plain", filename="steps.txt")
    path.write_bytes(bytes(msg))


@pytest.fixture
def office_dir(tmp_path):
    d = tmp_path / "office"
    d.mkdir()
    make_docx(d / "policy.docx")
    make_pptx(d / "review.pptx")
    make_xlsx(d / "offices.xlsx")
    make_eml(d / "move.eml")
    with (d / "rates.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["currency", "rate"], ["EUR", "1.00"], ["NOK", "11.5"]])
    return d


def _table_rows(text):
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines() if line[:1] == "|"]


def test_each_format_loads_as_markdown_with_headings_tables_and_a_title(office_dir):
    doc = load_file(office_dir / "policy.docx", "policy.docx")[0]
    lines = doc.text.splitlines()
    assert doc.title == "Travel policy" and doc.meta == {"format": "docx"}
    assert lines[0] == "# Travel policy" and "## Allowances" in lines
    # The Word table's first row is the header row, every cell in its row.
    assert _table_rows(doc.text) == [
        ["City", "Daily allowance"],
        ["---", "---"],
        ["Paris", "90 EUR"],
        ["Oslo", "120 EUR"],
    ]
    assert "* Receipts are kept for seven years." in lines and "* Taxis need a manager's approval." in lines

    deck = load_file(office_dir / "review.pptx", "review.pptx")[0]
    assert deck.title == "Quarterly review"
    assert "## Slide 1: Quarterly review" in deck.text and "## Slide 2: Next steps" in deck.text
    assert "Notes:\nMention the Porto pilot." in deck.text  # notes stay in their slide's section

    book = load_file(office_dir / "offices.xlsx", "offices.xlsx")[0]
    assert book.title == "offices"  # sheet names are sections, not the title
    assert "## Offices" in book.text and "## Budget" in book.text
    assert ["Lisbon", "Ana Duarte", "42"] in _table_rows(book.text) and ["2024", "125000"] in _table_rows(book.text)

    rates = load_file(office_dir / "rates.csv", "rates.csv")[0]
    assert rates.title == "rates" and _table_rows(rates.text) == [["currency", "rate"], ["---", "---"]] + [
        ["EUR", "1.00"],
        ["NOK", "11.5"],
    ]

    mail = load_file(office_dir / "move.eml", "move.eml")[0]
    assert mail.title == "Server move on Friday" and mail.meta["format"] == "eml"
    assert "From: ops@example.org · To: all@example.org · Date: Fri, 07 Mar 2025" in mail.text
    assert "rack 7 on Friday at 18:00" in mail.text and "<b>" not in mail.text  # the plain part is preferred
    assert "Attachments: plan.bin, steps.txt" in mail.text
    assert "## Attachment: steps.txt\n\nCable the rack before noon." in mail.text


def test_html_only_mail_becomes_markdown(tmp_path):
    msg = EmailMessage()
    msg["Subject"], msg["From"] = "Prices", "shop@example.org"
    msg.set_content("<h2>Price list</h2><table><tr><th>Item</th><th>Price</th></tr><tr><td>Tea</td><td>3</td></tr>"
                    "</table>", subtype="html")  # fmt: skip
    (tmp_path / "prices.eml").write_bytes(bytes(msg))
    mail = load_file(tmp_path / "prices.eml", "prices.eml")[0]
    assert "## Price list" in mail.text and ["Tea", "3"] in _table_rows(mail.text)


def test_old_excel_files_load(tmp_path):
    xlwt = pytest.importorskip("xlwt")
    wb = xlwt.Workbook()
    ws = wb.add_sheet("Offices")
    for r, row in enumerate([["Office", "Head"], ["Lisbon", "Ana Duarte"]]):
        for c, v in enumerate(row):
            ws.write(r, c, v)
    wb.save(str(tmp_path / "old.xls"))
    book = load_file(tmp_path / "old.xls", "old.xls")[0]
    assert "## Offices" in book.text and ["Lisbon", "Ana Duarte"] in _table_rows(book.text)


def test_bad_office_files_are_skipped_with_a_reason_and_the_rest_land(office_dir, tmp_path):
    (office_dir / "broken.docx").write_bytes(bytes(range(256)) * 4)
    (office_dir / "fake.xlsx").write_text("this is plain text, not a workbook")
    (office_dir / "note.eml").write_text("just some words, no headers at all")
    (office_dir / "locked.docx").write_bytes(  # the shape of an encrypted OOXML file: OLE + EncryptedPackage
        bytes.fromhex("d0cf11e0a1b11ae1") + bytes(504) + "EncryptedPackage".encode("utf-16-le") + bytes(512)
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("hello.txt", "a zip that is no slide deck")
    (office_dir / "archive.pptx").write_bytes(buf.getvalue())
    (office_dir / "sheet.xlsx").write_bytes((office_dir / "policy.docx").read_bytes())  # a Word file renamed
    (office_dir / "noise.csv").write_bytes(bytes(range(256)) * 4)

    loaded = load_paths([office_dir])
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in loaded.skipped}
    assert set(reasons) == {
        "broken.docx",
        "fake.xlsx",
        "note.eml",
        "locked.docx",
        "archive.pptx",
        "sheet.xlsx",
        "noise.csv",
    }
    assert reasons["broken.docx"] == "not a readable Word document: not a zip container (corrupt or cut short?)"
    assert reasons["fake.xlsx"].startswith("not a readable Excel workbook: not a zip container")
    assert reasons["locked.docx"] == "not a readable Word document: password-protected (encrypted)"
    assert reasons["archive.pptx"] == "not a readable PowerPoint deck: a zip archive, but not an Office file"
    assert reasons["sheet.xlsx"] == "not a readable Excel workbook: the file holds a Word document"
    assert reasons["noise.csv"] == "not a readable CSV file: looks like binary data, not text"
    assert "not an e-mail" in reasons["note.eml"]

    index = Index.create(tmp_path / "ix", embedder="hashing-64")
    report = index.ingest([office_dir])
    assert report.counts()["added"] == 5 and report.counts()["skipped"] == 7
    hit = index.search("Ana Duarte", k=1, mode="bm25")[0]
    assert hit.chunk.doc_id == "office/offices.xlsx" and "| Lisbon | Ana Duarte | 42 |" in hit.chunk.text


def test_a_big_sheet_is_cut_between_rows_and_each_piece_repeats_the_header(tmp_path):
    make_xlsx(tmp_path / "big.xlsx", rows=60)
    book = load_file(tmp_path / "big.xlsx", "big.xlsx")[0]
    chunks = chunk_document(book, ChunkConfig(chunk_tokens=60, overlap_tokens=8), whitespace_tokens)
    offices = [c for c in chunks if "Branch" in c.text]
    assert len(offices) >= 3
    for c in offices:
        lines = c.text.splitlines()
        assert lines[:4] == ["## Offices", "", "| Office | Head | Staff |", "| --- | --- | --- |"]
        assert all(len(row) == 3 for row in _table_rows(c.text))  # no row is cut
        assert len(c.text.split()) <= 60
    data_rows = [row for c in chunks for row in _table_rows(c.text) if row[0].startswith(("Branch", "Lisbon"))]
    assert len(data_rows) == 60 == len({tuple(r) for r in data_rows})  # every row once, none twice
    assert any(c.text.startswith("## Budget") for c in chunks)  # the next sheet starts a chunk


def test_chunks_deep_in_a_document_say_which_section_they_are_from(tmp_path):
    make_docx(tmp_path / "long.docx", extra_sections=3)
    doc = load_file(tmp_path / "long.docx", "long.docx")[0]
    chunks = chunk_document(doc, ChunkConfig(chunk_tokens=50, overlap_tokens=10), whitespace_tokens)
    for k in range(3):
        under = [c for c in chunks if f"Rule {k}." in c.text]
        assert len(under) >= 2  # the section needs more than one chunk ...
        assert all(c.text.startswith(f"## Region {k}\n\n") for c in under)  # ... and each one names it
    assert all(c.title == "Travel policy" for c in chunks)  # the title goes with every chunk, not repeated in it
    assert not any(c.text.rstrip().endswith(("## Allowances", "## Region 0", "## Region 1")) for c in chunks)


def test_nested_headings_list_items_and_a_split_table():
    rows = "\n".join(f"| city{i} | {i * 10} EUR |" for i in range(30))
    text = (
        "# Rates\n\nIntro sentence about rates.\n\n## Europe\n\n- first item here\n- second item here\n\n"
        f"### Daily\n\n| city | rate |\n| --- | --- |\n{rows}\n\n## Asia\n\nNo rates yet."
    )
    chunks = chunk_document(
        Document("t", text, "Rates"), ChunkConfig(chunk_tokens=40, overlap_tokens=8), whitespace_tokens
    )
    assert chunks[0].text.startswith("# Rates\n\nIntro sentence about rates.")
    assert "- first item here\n- second item here" in "\n".join(c.text for c in chunks)  # items keep their lines
    table_chunks = [c for c in chunks if "EUR" in c.text]
    assert len(table_chunks) >= 3
    for c in table_chunks[1:]:  # the headings above (not the title) and the header row open each piece
        assert c.text.startswith("## Europe\n### Daily\n\n| city | rate |\n| --- | --- |\n| city")
    assert sorted(r[0] for c in chunks for r in _table_rows(c.text) if "EUR" in r[1]) == sorted(
        f"city{i}" for i in range(30)
    )
    assert chunks[-1].text == "## Asia\n\nNo rates yet."  # a sibling heading drops the deeper one
    assert all(len(c.text.split()) <= 40 for c in chunks)
