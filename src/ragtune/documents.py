"""Documents and the loaders that read them from files: txt, md, html, pdf, jsonl, SQuAD json,
and through markitdown Word, PowerPoint, Excel and CSV (as Markdown); e-mail (.eml)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import unicodedata
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DocumentError


@dataclass(frozen=True)
class Document:
    """One source document; `id` is stable across runs, `content_hash` changes with its content."""

    id: str
    text: str
    title: str = ""
    source: str = ""  # the file it came from
    meta: dict = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        payload = json.dumps([self.title, self.text, self.meta], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class Chunk:
    """A piece of a document small enough to embed; `id` is `<doc id>#<position>`."""

    id: str
    doc_id: str
    text: str
    position: int
    title: str = ""
    source: str = ""
    content_hash: str = ""  # the parent document's hash
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk with its score and 1-based rank; `via` names the retriever."""

    chunk: Chunk
    score: float
    rank: int
    via: str
    dense_score: float | None = None  # cosine similarity when the dense retriever found it
    text_score: float | None = None  # BM25 score when the text retriever found it


@dataclass(frozen=True)
class QAExample:
    """A labelled question: gold answers and the ids of the documents that hold them."""

    id: str
    question: str
    answers: tuple[str, ...]
    doc_ids: tuple[str, ...] = ()
    context: str = ""
    title: str = ""


@dataclass(frozen=True)
class Skipped:
    """A file (or record) that was not ingested, and why."""

    path: str
    reason: str


@dataclass
class LoadResult:
    documents: list[Document] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def normalise_text(text: str) -> str:
    """NFC, unified newlines, no trailing spaces, at most one blank line in a row."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\x00", "")
    text = re.sub(r"[ \t\f\v]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def _looks_binary(data: bytes) -> bool:
    sample = data[:4096]
    if b"\x00" in sample:
        return True
    controls = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13))
    return len(sample) > 0 and controls / len(sample) > 0.05


def _decode(path: Path, data: bytes) -> str:
    if _looks_binary(data):
        raise DocumentError(f"{path}: looks like binary data, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"{path}: not valid UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _title_from_markdown(text: str, fallback: str) -> str:
    m = re.search(r"^#\s+(.+)$", text, flags=re.M)
    return m.group(1).strip() if m else fallback


def load_text(path: Path, doc_id: str) -> list[Document]:
    text = normalise_text(_decode(path, path.read_bytes()))
    title = _title_from_markdown(text, path.stem) if path.suffix.lower() in (".md", ".markdown") else path.stem
    return [Document(id=doc_id, text=text, title=title, source=str(path))]


def load_html(path: Path, doc_id: str) -> list[Document]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_decode(path, path.read_bytes()), "lxml")
    title = soup.title.get_text(strip=True) if soup.title else path.stem
    for tag in soup(["script", "style", "noscript", "nav", "header", "footer", "aside", "form", "template", "svg"]):
        tag.decompose()
    root = soup.find("main") or soup.find("article") or soup.body or soup
    blocks = []
    for el in root.find_all(
        ["h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "pre", "blockquote", "td", "th", "dd", "dt"]
    ):
        if el.find(["p", "li", "pre", "blockquote", "td"]):
            continue  # a container; its children are taken on their own
        piece = " ".join(el.get_text(" ", strip=True).split())
        if piece:
            blocks.append(piece)
    text = "\n\n".join(blocks) if blocks else root.get_text("\n", strip=True)
    return [Document(id=doc_id, text=normalise_text(text), title=title or path.stem, source=str(path))]


def load_pdf(path: Path, doc_id: str) -> list[Document]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise DocumentError(f"{path}: not a readable PDF ({type(exc).__name__}: {exc})") from exc
    text = normalise_text("\n\n".join(p.strip() for p in pages))
    return [
        Document(id=doc_id, text=text, title=str(meta_title) or path.stem, source=str(path), meta={"pages": len(pages)})
    ]


def load_jsonl(path: Path, doc_id: str) -> list[Document]:
    """One JSON object a line: `text` (required), `id`, `title`, `meta`."""
    docs = []
    for lineno, line in enumerate(_decode(path, path.read_bytes()).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DocumentError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
        if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
            raise DocumentError(f"{path}:{lineno}: each line needs a string field 'text'")
        meta = rec.get("meta") or {}
        if not isinstance(meta, dict):
            raise DocumentError(f"{path}:{lineno}: 'meta' must be an object, got {type(meta).__name__}")
        rid = str(rec.get("id", f"{doc_id}:{lineno}"))
        docs.append(
            Document(
                id=rid, text=normalise_text(rec["text"]), title=str(rec.get("title", "")), source=str(path), meta=meta
            )
        )
    return docs


def _slug(title: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.,()-]+", "_", title).strip("_") or "untitled"


def load_squad(path: str | Path) -> tuple[list[Document], list[QAExample]]:
    """SQuAD v1.1 JSON -> one Document per paragraph (`<title>/<index>`) and its QA examples."""
    path = Path(path)
    try:
        data = json.loads(_decode(path, path.read_bytes()))
        articles = data["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DocumentError(f"{path}: not a SQuAD JSON file ({exc})") from exc
    docs: list[Document] = []
    examples: list[QAExample] = []
    for article in articles:
        title = article.get("title", "").replace("_", " ")
        for i, para in enumerate(article.get("paragraphs", [])):
            did = f"{_slug(article.get('title', ''))}/{i}"
            docs.append(Document(id=did, text=normalise_text(para["context"]), title=title, source=str(path)))
            for qa in para.get("qas", []):
                answers = tuple(dict.fromkeys(a["text"] for a in qa.get("answers", [])))
                examples.append(
                    QAExample(
                        id=qa["id"],
                        question=qa["question"].strip(),
                        answers=answers,
                        doc_ids=(did,),
                        context=para["context"],
                        title=title,
                    )
                )
    return docs, examples


def _is_squad(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(2048)
    return head.lstrip().startswith(b"{") and b'"data"' in head


def _load_json(path: Path, doc_id: str) -> list[Document]:
    if not _is_squad(path):
        raise DocumentError(f"{path}: JSON files must be SQuAD format (use .jsonl for one document a line)")
    return load_squad(path)[0]


LOADERS: dict[str, Callable[[Path, str], list[Document]]] = {
    ".txt": load_text,
    ".md": load_text,
    ".markdown": load_text,
    ".html": load_html,
    ".htm": load_html,
    ".pdf": load_pdf,
    ".jsonl": load_jsonl,
    ".json": _load_json,
}


# Office formats go through markitdown's converter for that one format: no guessing from the
# content and no falling back to another converter (a zip named .docx must fail as a Word
# document, not load as a listing of the zip). markitdown is imported on the first office file.
OFFICE = {  # suffix -> (what it is, markitdown converter, the OOXML family its zip must hold)
    ".docx": ("Word document", "DocxConverter", "wordprocessingml"),
    ".pptx": ("PowerPoint deck", "PptxConverter", "presentationml"),
    ".xlsx": ("Excel workbook", "XlsxConverter", "spreadsheetml"),
    ".xls": ("Excel 97-2003 workbook", "XlsConverter", ""),
    ".csv": ("CSV file", "CsvConverter", ""),
}
_OLE = bytes.fromhex("d0cf11e0a1b11ae1")  # the container of encrypted OOXML and of old .doc/.xls/.ppt


def _check_office(path: Path, data: bytes, suffix: str) -> None:
    """Name what is wrong with a file before a converter fails on it with a parser's message."""
    kind, _, family = OFFICE[suffix]
    if family:
        if data[:8] == _OLE:
            encrypted = "EncryptedPackage".encode("utf-16-le") in data
            why = "password-protected (encrypted)" if encrypted else "an old binary Office file with a new suffix"
            raise DocumentError(f"{path}: not a readable {kind}: {why}")
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                types = zf.read("[Content_Types].xml").decode("utf-8", "replace")
        except zipfile.BadZipFile:
            raise DocumentError(f"{path}: not a readable {kind}: not a zip container (corrupt or cut short?)") from None
        except KeyError:
            raise DocumentError(f"{path}: not a readable {kind}: a zip archive, but not an Office file") from None
        if family not in types:
            other = next((OFFICE[s][0] for s in (".docx", ".pptx", ".xlsx") if OFFICE[s][2] in types), "something else")
            raise DocumentError(f"{path}: not a readable {kind}: the file holds a {other}")
    elif suffix == ".xls" and data[:8] != _OLE:
        raise DocumentError(f"{path}: not a readable {kind}: not an OLE container (a renamed .xlsx or CSV?)")
    elif suffix == ".csv" and _looks_binary(data):
        raise DocumentError(f"{path}: not a readable {kind}: looks like binary data, not text")


def _convert_office(path: Path, data: bytes, suffix: str) -> str:
    """Bytes of one office file -> Markdown, through markitdown's converter for the format."""
    kind, converter, _ = OFFICE[suffix]
    _check_office(path, data, suffix)
    try:
        from markitdown import StreamInfo, converters
    except ImportError as exc:  # pragma: no cover - a dependency of ragtune
        raise DocumentError(f"{path}: a {kind} needs markitdown: pip install 'markitdown[docx,pptx,xlsx,xls]'") from exc
    try:
        result = getattr(converters, converter)().convert(io.BytesIO(data), StreamInfo(extension=suffix))
    except Exception as exc:  # converters raise zip, XML, pandas and their own errors alike
        lines = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {lines[-1][:200]}" if lines else type(exc).__name__
        raise DocumentError(f"{path}: not a readable {kind} (corrupt, encrypted or another format?): {reason}") from exc
    text = result.markdown or ""
    if suffix == ".docx":
        # Word tables come with an empty header row; the first data row is the header.
        text = re.sub(r"^(\|(?:\s*\|)+)\n(\|(?:\s*-+\s*\|)+)\n(\|.*\|)$", r"\3\n\2", text, flags=re.M)
    if suffix == ".pptx":  # each slide a section named by its title; its notes stay in the section
        text = re.sub(r"^<!-- Slide number: (\d+) -->\n# (.+)$", r"## Slide \1: \2", text, flags=re.M)
        text = re.sub(r"^<!-- Slide number: (\d+) -->$", r"## Slide \1", text, flags=re.M)
        text = re.sub(r"^### Notes:$", "Notes:", text, flags=re.M)
    return normalise_text(text)


def load_office(path: Path, doc_id: str) -> list[Document]:
    """.docx .pptx .xlsx .xls .csv -> one Markdown document: headings, lists and tables kept,
    a slide or a sheet a section. Title: the first top heading (a deck: its first slide's title),
    else the file name."""
    suffix = path.suffix.lower()
    text = _convert_office(path, path.read_bytes(), suffix)
    if suffix == ".pptx":
        m = re.search(r"^## Slide \d+: (.+)$", text, flags=re.M)
        title = m.group(1).strip() if m else path.stem
    else:
        title = _title_from_markdown(text, path.stem)
    return [Document(id=doc_id, text=text, title=title, source=str(path), meta={"format": suffix[1:]})]


_TEXT_ATTACHMENTS = (".txt", ".md", ".markdown")


def _attachment_text(path: Path, name: str, data: bytes) -> str:
    """The text of an e-mail attachment that ragtune reads, else "" (it is then only named)."""
    suffix = Path(name).suffix.lower()
    try:
        if suffix in OFFICE:
            return _convert_office(path, data, suffix)
        if suffix in _TEXT_ATTACHMENTS:
            return normalise_text(_decode(path, data))
    except DocumentError:
        pass
    return ""


def load_email(path: Path, doc_id: str) -> list[Document]:
    """.eml -> subject as title, a From / To / Date line, the body (plain text, else the HTML
    part as Markdown), the attachments' names, and the text of those ragtune reads (office, text)."""
    from email import policy
    from email.parser import BytesParser

    try:
        msg = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    except Exception as exc:  # the parser is lenient; this is for truly broken input
        raise DocumentError(f"{path}: not a readable e-mail ({type(exc).__name__}: {exc})") from exc
    if not any(msg.get(h) for h in ("From", "To", "Subject", "Date")):
        raise DocumentError(f"{path}: not an e-mail (no From, To, Subject or Date header)")
    text = ""
    body = msg.get_body(preferencelist=("plain", "html"))
    if body is not None:
        try:
            text = body.get_content()
        except (LookupError, UnicodeError) as exc:
            raise DocumentError(f"{path}: e-mail body has an unreadable encoding ({exc})") from exc
        if body.get_content_type() == "text/html":
            from markitdown.converters import HtmlConverter

            text = HtmlConverter().convert_string(text).markdown or ""
    subject = " ".join(str(msg.get("Subject") or "").split()) or path.stem
    head = " · ".join(f"{h}: {msg.get(h)}" for h in ("From", "To", "Date") if msg.get(h))
    parts = [f"# {subject}", head, text.strip()]
    names, sections = [], []
    for part in msg.iter_attachments():
        name = part.get_filename()
        if not name:
            continue
        names.append(name)
        payload = part.get_payload(decode=True)
        content = _attachment_text(path, name, payload) if isinstance(payload, bytes) else ""
        if content:
            sections.append(f"## Attachment: {name}\n\n{content}")
    if names:
        parts.append("Attachments: " + ", ".join(names))
    meta = {"format": "eml", "from": str(msg.get("From") or ""), "date": str(msg.get("Date") or "")}
    text = normalise_text("\n\n".join(p for p in parts + sections if p))
    return [Document(id=doc_id, text=text, title=subject, source=str(path), meta=meta)]


LOADERS.update({suffix: load_office for suffix in OFFICE})
LOADERS[".eml"] = load_email


def iter_files(paths: list[str | Path]) -> Iterator[tuple[Path, str]]:
    """Files under the given paths, each with its document id (path relative to the argument's parent)."""
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise DocumentError(f"{raw}: no such file or directory")
        if p.is_file():
            yield p, p.name
            continue
        base = p.resolve().parent
        for f in sorted(p.rglob("*")):
            if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts):
                yield f, f.resolve().relative_to(base).as_posix()


def load_file(path: Path, doc_id: str) -> list[Document]:
    """Read one file with the loader for its suffix; raises DocumentError with the reason."""
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise DocumentError(f"{path}: unsupported file type {path.suffix or '(none)'!r}; supported: {sorted(LOADERS)}")
    if path.stat().st_size == 0:
        raise DocumentError(f"{path}: empty file")
    docs = [d for d in loader(path, doc_id) if d.text.strip()]
    if not docs:
        raise DocumentError(f"{path}: no text found")
    return docs


def load_paths(paths: list[str | Path], on_file: Callable[[Path], None] | None = None) -> LoadResult:
    """Load every supported file under `paths`; files that fail are recorded in `skipped`."""
    result = LoadResult()
    seen: dict[str, str] = {}
    for path, doc_id in iter_files(paths):
        if on_file:
            on_file(path)
        try:
            docs = load_file(path, doc_id)
        except DocumentError as exc:
            result.skipped.append(Skipped(str(path), str(exc).removeprefix(f"{path}: ")))
            continue
        except OSError as exc:
            result.skipped.append(Skipped(str(path), f"cannot read: {exc.strerror or exc}"))
            continue
        for d in docs:
            if d.id in seen:
                result.skipped.append(
                    Skipped(str(path), f"duplicate document id {d.id!r} (first seen in {seen[d.id]})")
                )
                continue
            seen[d.id] = str(path)
            result.documents.append(d)
    return result
