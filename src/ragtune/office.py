"""Office files and e-mail -> Markdown documents: Word, PowerPoint, Excel and CSV through
markitdown (headings, lists and tables kept as Markdown, which chunking respects), e-mail
through the standard library's parser."""

from __future__ import annotations

import re
from pathlib import Path

from .documents import Document, DocumentError, normalise_text

KINDS = {".docx": "Word document", ".pptx": "PowerPoint deck", ".xlsx": "Excel workbook", ".csv": "CSV file"}


def _title(text: str, fallback: str) -> str:
    m = re.search(r"^#{1,3}\s+(.+)$", text, flags=re.M)
    return m.group(1).strip() if m else fallback


def _tidy_tables(md: str) -> str:
    """markitdown gives Word tables an empty header row; promote the first data row instead."""
    return re.sub(r"^(\|(?:\s*\|)+)\n(\|(?:\s*-+\s*\|)+)\n(\|.*\|)$", r"\3\n\2", md, flags=re.M)


def load_office(path: Path, doc_id: str) -> list[Document]:
    """.docx / .pptx / .xlsx / .csv -> one Markdown document."""
    kind = KINDS.get(path.suffix.lower(), "office file")
    if path.suffix.lower() != ".csv":
        import zipfile

        if not zipfile.is_zipfile(path):  # OOXML is a zip; encrypted ones are OLE files, text is text
            with path.open("rb") as fh:
                ole = fh.read(8) == bytes.fromhex("d0cf11e0a1b11ae1")
            why = "encrypted (password-protected) or an old binary Office file" if ole else "not a zip container"
            raise DocumentError(f"{path}: not a readable {kind}: {why}")
    try:
        from markitdown import MarkItDown
    except ImportError as exc:  # pragma: no cover - a dependency of ragtune
        raise DocumentError(
            f"{path}: reading a {kind} needs markitdown: pip install 'markitdown[docx,pptx,xlsx]'"
        ) from exc
    try:
        result = MarkItDown(enable_plugins=False).convert_local(str(path))
    except Exception as exc:  # markitdown wraps zip, XML and parser errors in several exception types
        reason = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
        hint = " (encrypted, corrupt, or not really this format?)" if path.suffix.lower() != ".csv" else ""
        raise DocumentError(f"{path}: not a readable {kind}{hint}: {reason}") from exc
    text = normalise_text(_tidy_tables(result.text_content or ""))
    if path.suffix.lower() == ".pptx":
        text = re.sub(r"^<!-- Slide number: (\d+) -->$", r"## Slide \1", text, flags=re.M)
    return [
        Document(
            id=doc_id, text=text, title=_title(text, path.stem), source=str(path), meta={"format": path.suffix[1:]}
        )
    ]


def load_email(path: Path, doc_id: str) -> list[Document]:
    """.eml -> subject as title, a From / To / Date line, the body (plain text, else HTML as
    text), and the names of any attachments."""
    from email import policy
    from email.parser import BytesParser

    try:
        msg = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    except Exception as exc:  # the parser is lenient; this is for truly broken input
        raise DocumentError(f"{path}: not a readable e-mail ({type(exc).__name__}: {exc})") from exc
    if not any(msg.get(h) for h in ("From", "To", "Subject", "Date")):
        raise DocumentError(f"{path}: not an e-mail (no From, To, Subject or Date header)")
    body = msg.get_body(preferencelist=("plain", "html"))
    text = ""
    if body is not None:
        try:
            text = body.get_content()
        except (LookupError, UnicodeError) as exc:
            raise DocumentError(f"{path}: e-mail body has an unreadable encoding ({exc})") from exc
        if body.get_content_type() == "text/html":
            from bs4 import BeautifulSoup

            text = BeautifulSoup(text, "lxml").get_text("\n", strip=True)
    attachments = [p.get_filename() for p in msg.iter_attachments() if p.get_filename()]
    subject = str(msg.get("Subject") or path.stem)
    head = " · ".join(f"{h}: {msg.get(h)}" for h in ("From", "To", "Date") if msg.get(h))
    parts = [f"# {subject}", head, text.strip()]
    if attachments:
        parts.append("Attachments: " + ", ".join(attachments))
    meta = {"format": "eml", "from": str(msg.get("From") or ""), "date": str(msg.get("Date") or "")}
    return [
        Document(
            id=doc_id,
            text=normalise_text("\n\n".join(p for p in parts if p)),
            title=subject,
            source=str(path),
            meta=meta,
        )
    ]
