"""Word, PowerPoint, Excel, CSV and e-mail load as Markdown (fixtures made here), bad ones are
skipped with a reason, and chunking keeps headings and table rows together."""

import csv
from email.message import EmailMessage

import pytest

from ragtune import ChunkConfig, Index
from ragtune.chunking import chunk_document, whitespace_tokens
from ragtune.documents import Document, load_file, load_paths


def make_docx(path):
    from docx import Document as Docx

    doc = Docx()
    doc.add_heading("Travel policy", 1)
    doc.add_paragraph("Employees book trains for trips under 500 km.")
    doc.add_heading("Allowances", 2)
    table = doc.add_table(rows=3, cols=2)
    for i, row in enumerate([("City", "Daily allowance"), ("Paris", "90 EUR"), ("Oslo", "120 EUR")]):
        table.cell(i, 0).text, table.cell(i, 1).text = row
    doc.add_paragraph("Receipts are kept for seven years.", style="List Bullet")
    doc.save(path)


def make_pptx(path):
    from pptx import Presentation

    deck = Presentation()
    for title, body in (("Quarterly review", "Revenue grew 12 percent."), ("Next steps", "Open the Lisbon office.")):
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    deck.save(path)


def make_xlsx(path):
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "Offices"
    ws.append(["Office", "Head", "Staff"])
    ws.append(["Lisbon", "Ana Duarte", 42])
    wb.create_sheet("Budget").append(["Year", "Amount"])
    wb.save(path)


def make_eml(path):
    msg = EmailMessage()
    msg["Subject"], msg["From"], msg["To"] = "Server move on Friday", "ops@example.org", "all@example.org"
    msg.set_content("The file server moves to rack 7 on Friday at 18:00.")
    msg.add_attachment(b"x", maintype="application", subtype="octet-stream", filename="plan.bin")
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


def test_each_format_loads_with_structure(office_dir):
    doc = load_file(office_dir / "policy.docx", "policy.docx")[0]
    assert doc.title == "Travel policy" and "## Allowances" in doc.text
    assert (
        "| Paris | 90 EUR |" in doc.text
        and "| City | Daily allowance |" in doc.text.splitlines()[doc.text.splitlines().index("## Allowances") + 2]
    )
    deck = load_file(office_dir / "review.pptx", "review.pptx")[0]
    assert "Quarterly review" in deck.text and "Open the Lisbon office." in deck.text and "## Slide 2" in deck.text
    book = load_file(office_dir / "offices.xlsx", "offices.xlsx")[0]
    assert "## Offices" in book.text and "## Budget" in book.text and "| Lisbon | Ana Duarte | 42 |" in book.text
    rates = load_file(office_dir / "rates.csv", "rates.csv")[0]
    assert "| NOK | 11.5 |" in rates.text
    mail = load_file(office_dir / "move.eml", "move.eml")[0]
    assert mail.title == "Server move on Friday" and "rack 7" in mail.text and "From: ops@example.org" in mail.text
    assert "Attachments: plan.bin" in mail.text and mail.meta["format"] == "eml"


def test_bad_office_files_are_skipped_with_a_reason_and_the_rest_land(office_dir, tmp_path):
    (office_dir / "broken.docx").write_bytes(bytes(range(256)) * 4)
    (office_dir / "fake.xlsx").write_text("this is plain text, not a workbook")
    (office_dir / "note.eml").write_text("just some words, no headers at all")
    loaded = load_paths([office_dir])
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in loaded.skipped}
    assert set(reasons) == {"broken.docx", "fake.xlsx", "note.eml"}
    assert "Word document" in reasons["broken.docx"] and "Excel workbook" in reasons["fake.xlsx"]
    assert "not an e-mail" in reasons["note.eml"]
    index = Index.create(tmp_path / "ix", embedder="hashing-64")
    report = index.ingest([office_dir])
    assert report.counts()["added"] == 5 and report.counts()["skipped"] == 3
    assert index.search("Ana Duarte Lisbon", k=1, mode="bm25")[0].chunk.doc_id == "office/offices.xlsx"


def test_tables_split_between_rows_under_their_header():
    rows = "\n".join(f"| city{i} | {i * 10} EUR |" for i in range(30))
    text = f"# Rates\n\nIntro sentence about rates.\n\n## Table\n\n| city | rate |\n| --- | --- |\n{rows}"
    chunks = chunk_document(
        Document("t", text, "Rates"), ChunkConfig(chunk_tokens=40, overlap_tokens=8), whitespace_tokens
    )
    table_chunks = [c for c in chunks if "city1 " in c.text or "city2" in c.text or "| city29 |" in c.text]
    assert len(chunks) >= 3
    for c in chunks[1:]:
        lines = c.text.splitlines()
        assert lines[0] == "## Table"  # the section heading is carried
        if any(line.startswith("| city") and "EUR" in line for line in lines):
            assert lines[2:4] == ["| city | rate |", "| --- | --- |"]  # the header row is repeated
            assert all(line.endswith("|") for line in lines[2:])  # rows are never cut
    all_rows = [line for c in chunks for line in c.text.splitlines() if "EUR" in line]
    assert len(all_rows) == 30 and table_chunks


def test_a_heading_starts_a_chunk_and_every_chunk_under_it_carries_it():
    prose = " ".join(f"Sentence number {i} is here." for i in range(20))
    second = " ".join(f"Second part fact {i} holds." for i in range(20))
    text = f"# Guide\n\n{prose}\n\n## Second part\n\n{second}"
    chunks = chunk_document(
        Document("g", text, "Guide"), ChunkConfig(chunk_tokens=40, overlap_tokens=8), whitespace_tokens
    )
    assert any(c.text.startswith("## Second part") for c in chunks)
    for c in chunks:
        assert c.text.startswith("## Second part") if "Second part fact" in c.text else c.text.startswith("# Guide")
        assert len(c.text.split()) <= 40
    assert " ".join(c.text for c in chunks).count("Second part fact 19 holds.") >= 1
