"""Documents and the loaders that read them from files: txt, md, html, pdf, jsonl, SQuAD json,
and through markitdown Word, PowerPoint, Excel and CSV (as Markdown); e-mail (.eml).

Every file is read once, as bytes, by `read_bytes` (regular files only, size-limited, never a
FIFO); a loader turns those bytes into documents or raises `DocumentError` with the reason.
Loaders of record files (JSONL, a JSON list) return a `LoadResult`: the good records, and each
bad one as a `Skipped` entry naming its line."""

from __future__ import annotations

import codecs
import csv
import errno
import hashlib
import io
import json
import logging
import os
import re
import stat
import struct
import unicodedata
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DocumentError

MAX_FILE_BYTES = 100_000_000  # larger files are refused; load_paths(max_file_bytes=...) overrides
MAX_UNPACKED_BYTES = 250_000_000  # an Office file whose zip entries unpack to more is refused (a zip bomb)
MAX_TITLE_CHARS = 500  # a longer title (a runaway <title>, a JSON field) is cut; it goes with every chunk


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
        return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()[:32]


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
    """A file (or one record of it) that was not ingested, and why. For a record, `path` is
    `<file>:<line>` (JSONL) or `<file>:<where>` (JSON) and `file` the file alone."""

    path: str
    reason: str
    file: str = ""  # set when `path` names a record inside this file

    @property
    def source(self) -> str:
        """The file this entry is about (what `Document.source` holds for its documents)."""
        return self.file or self.path


@dataclass
class LoadResult:
    documents: list[Document] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


# -- text: decoding and normalising ------------------------------------------------------------

_SURROGATE = re.compile("[\ud800-\udfff]")


def normalise_text(text: str) -> str:
    """NFC, unified newlines, no NUL or lone surrogates, no trailing spaces, at most one blank line
    in a row. Idempotent: normalise_text(normalise_text(t)) == normalise_text(t)."""
    # NUL and surrogates go before NFC: removing them later could leave composable pairs behind.
    text = _SURROGATE.sub("\ufffd", text.replace("\x00", ""))
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[ \t\f\v]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def clean_title(title: object) -> str:
    """One line, normalised, at most MAX_TITLE_CHARS."""
    text = " ".join(normalise_text(str(title)).split())
    return text if len(text) <= MAX_TITLE_CHARS else text[: MAX_TITLE_CHARS - 1] + "…"


_BOMS = (  # UTF-32 first: its little-endian BOM starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Control bytes that text does not hold (NUL aside: it is stripped; TAB LF VT FF CR ESC are text).
_CONTROLS = bytes(b for b in range(1, 32) if b not in (9, 10, 11, 12, 13, 27))
# cp1252, with its five undefined bytes kept as the C1 controls Latin-1 gives them (as browsers do).
_CP1252 = [bytes([b]).decode("latin-1" if b in (0x81, 0x8D, 0x8F, 0x90, 0x9D) else "cp1252") for b in range(256)]


def _as_cp1252(exc: UnicodeError) -> tuple[str, int]:
    """Decoding error handler: bytes that are not UTF-8 are read as cp1252 (nothing is lost)."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return "".join(_CP1252[b] for b in exc.object[exc.start : exc.end]), exc.end


codecs.register_error("ragtune-cp1252", _as_cp1252)
_LATIN_PUNCT = set("\xa0€‚„…‘’“”•–—™¡¢£¥§©«®°±´·»¿×÷")


def _samples(data: bytes, size: int = 8192) -> bytes:
    """The head, the middle and the tail of `data`: enough to judge a file without a full scan.
    Each piece starts and ends at a UTF-8 character boundary (no character is cut in two)."""
    if len(data) <= 3 * size:
        return data

    def boundary(i: int) -> int:  # back up over at most 3 continuation bytes
        for _ in range(3):
            if i <= 0 or i >= len(data) or data[i] & 0xC0 != 0x80:
                break
            i -= 1
        return i

    mid = len(data) // 2
    windows = ((0, size), (mid, mid + size), (len(data) - size, len(data)))
    return b"".join(data[boundary(a) : boundary(b)] for a, b in windows)


def _looks_binary(data: bytes) -> bool:
    sample = _samples(data).replace(b"\x00", b"")
    controls = len(sample) - len(sample.translate(None, _CONTROLS))
    return len(sample) > 0 and controls / len(sample) > 0.05


def _utf16_without_bom(data: bytes) -> str | None:
    """'utf-16-le' / 'utf-16-be' for BOM-less UTF-16 of mostly Latin text (every other byte NUL)."""
    sample = data[:8192]
    nul = sample.count(0)
    if len(sample) < 4 or nul < len(sample) * 0.3:
        return None
    for codec, zeros in (("utf-16-le", sample[1::2].count(0)), ("utf-16-be", sample[0::2].count(0))):
        if zeros >= 0.9 * nul:
            text = sample[: len(sample) // 2 * 2].decode(codec, "replace")
            low = sum(1 for c in text if c < "\u0100")
            controls = sum(1 for c in text if c < " " and c not in "\t\n\r\f\x0b\x1b")
            if low >= 0.5 * len(text) and controls <= 0.05 * len(text):
                return codec
    return None


def _western(text: str) -> bool:
    """Whether a cp1252 reading looks like Western European text: its non-ASCII characters are
    Latin letters or common typography, and at most half of the letters."""
    letters = sum(1 for c in text if c.isalpha())
    odd = [c for c in text if c > "\x7f"]
    if not odd or len(odd) > 0.5 * max(letters, 1):
        return False
    return all(c in _LATIN_PUNCT or (c.isalpha() and "LATIN" in unicodedata.name(c, "")) for c in odd)


# UTF-16/32 without a BOM was ruled out by decode_text (no NUL bytes), and text files are not
# EBCDIC: a guess of either for a few Latin bytes ('AAAÀaA' as CJK, or in cp037) would be wrong.
_EXCLUDED_CODECS = ["utf_16", "utf_16_le", "utf_16_be", "utf_32", "utf_32_le", "utf_32_be", "utf_7"]
_EXCLUDED_CODECS += ["cp037", "cp273", "cp424", "cp500", "cp875", "cp1026", "cp1140"]


def _guess_codec(data: bytes) -> str | None:
    """A legacy encoding for bytes that are not UTF-8: charset-normalizer's guess on a sample,
    with a preference for cp1252 where its reading is Western text and no messier."""
    from charset_normalizer import from_bytes
    from charset_normalizer.md import mess_ratio

    sample = data[:65536]
    cut = sample.rfind(b"\n")
    if len(data) > len(sample) and cut > 32768:
        sample = sample[: cut + 1]

    best = from_bytes(sample, cp_exclusion=_EXCLUDED_CODECS).best()
    as1252 = sample.decode("cp1252", "replace")
    if _western(as1252):
        # 'café' reads as well in cp1006 (Urdu) or cp1250 for the detector: prefer the Western
        # reading unless the other is a better one in Latin script too (Czech in cp1250).
        other = str(best) if best is not None else ""
        if not other or _mixes_scripts(other) or mess_ratio(as1252, 1.0) <= mess_ratio(other, 1.0) + 0.01:
            return "cp1252"
    return best.encoding if best is not None else None


def _mixes_scripts(text: str) -> bool:
    """Whether a word holds ASCII letters and letters of another script: a sign of the wrong code page."""
    for word in re.findall(r"[^\W\d_]*[A-Za-z][^\W\d_]*", text):
        if any(c > "\x7f" and c.isalpha() and "LATIN" not in unicodedata.name(c, "") for c in word):
            return True
    return False


def _declared_charset(data: bytes) -> str:
    """The charset an HTML page declares in a <meta> tag ('' if none or unknown)."""
    m = re.search(rb"<meta[^>]{0,200}?charset\s*=\s*[\"']?\s*([A-Za-z0-9_.:-]{1,40})", data[:4096], re.I)
    if not m:
        return ""
    try:
        name = codecs.lookup(m.group(1).decode("ascii")).name
    except LookupError:
        return ""
    return "cp1252" if name in ("latin-1", "iso8859-1", "ascii") else name  # as browsers read them


def _decode(data: bytes, codec: str) -> tuple[str, int]:
    """(text, bytes that did not decode); those are replaced with U+FFFD."""
    try:
        return data.decode(codec), 0
    except UnicodeDecodeError:
        text = data.decode(codec, "replace")
        return text, text.count("\ufffd")


def _mostly_utf8(data: bytes) -> bool | None:
    """Judged on samples: None when they are valid UTF-8; else whether the file is UTF-8 with a
    legacy encoding's bytes mixed in: it holds well-formed multi-byte UTF-8 sequences, and reading
    the other bytes as cp1252 gives plausible text (not the mess that CJK or Cyrillic bytes make).
    A legacy file fails here without a full decode that would fail anyway."""
    from charset_normalizer.md import mess_ratio

    sample = _samples(data, 65536)
    try:
        sample.decode("utf-8")
        return None
    except UnicodeDecodeError:
        text = sample.decode("utf-8", "surrogateescape")
    bad = len(_SURROGATE.findall(text))
    good = sum(1 for c in text if c > "\x7f") - bad
    return good > 0 and mess_ratio(sample.decode("utf-8", "ragtune-cp1252"), 0.2) < 0.1


def decode_text(path: Path, data: bytes, declared: str = "") -> tuple[str, dict]:
    """Bytes of a text file -> (text, meta). UTF-8 unless a BOM says otherwise; UTF-16 without a BOM
    is recognised; other bytes get their encoding detected (`declared`, an HTML page's charset, is
    tried first). A UTF-8 file with stray bytes of another encoding keeps both (the stray bytes are
    read as cp1252). NUL bytes are dropped. meta names the encoding when it is not UTF-8 and counts
    the bytes that no encoding fitted (replaced with U+FFFD); binary data raises DocumentError."""
    codec = next((c for bom, c in _BOMS if data.startswith(bom)), None)
    if codec is None and b"\x00" in data[:8192]:
        codec = _utf16_without_bom(data)
    if codec is not None:
        text, bad = _decode(data, codec)
        return text.replace("\x00", ""), _encoding_meta(codec.removesuffix("-sig"), bad)
    if b"\x00" in data:
        data = data.replace(b"\x00", b"")
    if _looks_binary(data):
        raise DocumentError(f"{path}: looks like binary data, not text")
    mixed = _mostly_utf8(data)  # None: the samples are valid UTF-8
    if mixed is None:
        try:
            return data.decode("utf-8"), {}
        except UnicodeDecodeError:
            mixed = True  # the bad bytes are few: they hide outside the samples
    if declared and declared != "utf-8":
        text, bad = _decode(data, declared)
        return text, _encoding_meta(declared, bad)
    if mixed:
        return data.decode("utf-8", "ragtune-cp1252"), {"encoding": "utf-8+cp1252"}
    codec = _guess_codec(data)
    if codec is None:
        raise DocumentError(f"{path}: looks like binary data, not text (no text encoding fits)")
    text, bad = _decode(data, codec)
    return text, _encoding_meta(codec, bad)


def _encoding_meta(codec: str, replaced: int) -> dict:
    name = codecs.lookup(codec).name
    meta = {} if name == "utf-8" else {"encoding": name}
    if replaced:
        meta["undecodable_bytes"] = replaced
    return meta


# -- reading a file's bytes ---------------------------------------------------------------------


def _size(n: float) -> str:
    if n < 1000:
        return f"{n:g} bytes"
    if n < 1e6:
        return f"{n / 1e3:.1f} kB"
    return f"{n / 1e6:.1f} MB"


def _limit(n: float) -> str:
    return f"{n / 1e6:g} MB" if n >= 1e6 else f"{n / 1e3:g} kB" if n >= 1000 else f"{n:g} bytes"


def _not_regular(mode: int) -> str:
    """What a file system entry that is not a regular file is, for a reason ('' for a regular file)."""
    for test, what in (
        (stat.S_ISREG, ""),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return what
    return "a special file"


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "disappeared before it could be read (deleted or moved while loading?)"
    if isinstance(exc, PermissionError):
        return "permission denied: cannot read it"
    if exc.errno == errno.ELOOP:
        return "became a symlink while loading (not followed)"
    return f"cannot read: {exc.strerror or exc}"


def _read_fd(fd: int, n: int) -> bytes:
    """Up to `n` bytes from `fd` (fewer at the end of the file), without a second copy."""
    first = os.read(fd, n)
    parts = [first]
    got = len(first)
    while parts[-1] and got < n:
        parts.append(os.read(fd, n - got))
        got += len(parts[-1])
    return first if len(parts) == 1 or not parts[1] else b"".join(parts)


def read_bytes(path: str | Path, max_bytes: int = MAX_FILE_BYTES, follow_symlinks: bool = True) -> bytes:
    """The bytes of one regular file, read once. DocumentError (with the path) for a FIFO, socket
    or device (never opened: opening a FIFO blocks), a file over `max_bytes`, one that cannot be
    read, and one that disappears or changes while it is read."""
    path = Path(path)
    try:
        what = _not_regular(os.stat(path, follow_symlinks=follow_symlinks).st_mode)
    except OSError as exc:
        raise DocumentError(f"{path}: {_os_reason(exc)}") from exc
    if what:
        raise DocumentError(f"{path}: {what}, not a regular file")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise DocumentError(f"{path}: {_os_reason(exc)}") from exc
    try:
        before = os.fstat(fd)
        what = _not_regular(before.st_mode)  # it may have been swapped since the stat above
        if what:
            raise DocumentError(f"{path}: {what}, not a regular file")
        if before.st_size > max_bytes:
            raise DocumentError(f"{path}: the file is {_size(before.st_size)}, over the {_limit(max_bytes)} limit")
        data = _read_fd(fd, before.st_size + 1)
        after = os.fstat(fd)
    except OSError as exc:
        raise DocumentError(f"{path}: {_os_reason(exc)}") from exc
    finally:
        os.close(fd)
    if len(data) != before.st_size or (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise DocumentError(
            f"{path}: changed while being read ({before.st_size} bytes when opened, {len(data)} read"
            f"{'' if after.st_size == before.st_size else f', {after.st_size} now'}); try again"
        )
    return data


# -- loaders: bytes of one file -> documents ----------------------------------------------------

Loader = Callable[[Path, str, bytes], "list[Document] | LoadResult"]


def _title_from_markdown(text: str, fallback: str) -> str:
    m = re.search(r"^#[ \t]+(.+)$", text, flags=re.M)
    return clean_title(m.group(1)) if m else fallback


def load_text(path: Path, doc_id: str, data: bytes) -> list[Document]:
    raw, meta = decode_text(path, data)
    del data  # the only reference (see read_file): a large file is not held as bytes and text
    text = normalise_text(raw)
    del raw
    if not text:
        raise DocumentError(f"{path}: no text (only whitespace or NUL bytes)")
    title = _title_from_markdown(text, path.stem) if path.suffix.lower() in (".md", ".markdown") else path.stem
    return [Document(id=doc_id, text=text, title=title, source=str(path), meta=meta)]


def load_html(path: Path, doc_id: str, data: bytes) -> list[Document]:
    from bs4 import BeautifulSoup

    raw, meta = decode_text(path, data, declared=_declared_charset(data))
    del data  # the only reference (see read_file)
    soup = BeautifulSoup(raw, "lxml")
    del raw
    title = clean_title(soup.title.get_text(" ", strip=True)) if soup.title else ""
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
    text = normalise_text("\n\n".join(blocks) if blocks else root.get_text("\n", strip=True))
    if not text:
        raise DocumentError(f"{path}: no text found (only markup)")
    return [Document(id=doc_id, text=text, title=title or path.stem, source=str(path), meta=meta)]


@contextmanager
def _quiet(logger: str):
    """Silence a library's log records and warnings (pypdf: 'EOF marker not found', ...) for a while;
    what they say reaches the user as the reason a file was skipped."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.CRITICAL + 1)  # child loggers (pypdf._reader, ...) inherit the level
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def _error_text(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[-1][:200]}" if lines else type(exc).__name__


def load_pdf(path: Path, doc_id: str, data: bytes) -> list[Document]:
    """The text layer of each page. Encrypted PDFs open when their user password is empty; pages
    that fail are named in meta['unreadable_pages'] while the others are kept."""
    from pypdf import PdfReader
    from pypdf import errors as pdf_errors

    limit_error = getattr(pdf_errors, "LimitReachedError", pdf_errors.PdfReadError)
    encrypted = f"{path}: encrypted (password-protected) PDF"
    pages: list[str] = []
    failed: list[tuple[int, str]] = []
    with _quiet("pypdf"):
        # pypdf raises many kinds of error on corrupt input (parser, zlib, struct, key and index
        # errors ...); each becomes the reason this one file is skipped.
        try:
            reader = PdfReader(io.BytesIO(data))
            if reader.is_encrypted:
                try:
                    opened = reader.decrypt("")  # an owner password only: readable without one
                except pdf_errors.DependencyError as exc:
                    raise DocumentError(f"{encrypted}; reading it needs the 'cryptography' package") from exc
                except Exception as exc:
                    raise DocumentError(encrypted) from exc
                if not opened:
                    raise DocumentError(encrypted)
            n_pages = len(reader.pages)
        except DocumentError:
            raise
        except pdf_errors.FileNotDecryptedError as exc:
            raise DocumentError(encrypted) from exc
        except limit_error as exc:
            raise DocumentError(
                f"{path}: over pypdf's safety limits, a compression bomb? ({_error_text(exc)})"
            ) from exc
        except Exception as exc:
            raise DocumentError(f"{path}: not a readable PDF ({_error_text(exc)})") from exc
        for i in range(n_pages):
            try:
                pages.append(reader.pages[i].extract_text() or "")
            except limit_error as exc:
                failed.append((i + 1, f"over pypdf's safety limits, a compression bomb? ({_error_text(exc)})"))
            except Exception as exc:
                failed.append((i + 1, _error_text(exc)))
        try:
            meta_title = (reader.metadata.title if reader.metadata else None) or ""
        except Exception:  # a broken info dictionary costs the title only
            meta_title = ""
    text = normalise_text("\n\n".join(p.strip() for p in pages))
    if not text:
        if failed:
            page, why = failed[0]
            raise DocumentError(f"{path}: no page could be read (page {page}: {why})")
        if not n_pages:
            raise DocumentError(f"{path}: the PDF has no pages")
        raise DocumentError(f"{path}: no text layer (a scanned image? run OCR first)")
    meta: dict = {"pages": n_pages}
    if failed:
        meta["unreadable_pages"] = [p for p, _ in failed]
    return [Document(id=doc_id, text=text, title=clean_title(meta_title) or path.stem, source=str(path), meta=meta)]


# -- JSON: records (JSONL lines, a JSON list) and SQuAD ---------------------------------------------


class _BadRecord(Exception):
    """One record (a JSONL line, a SQuAD field) is malformed; the message says how."""


def _jtype(value: object) -> str:
    """A JSON value's type, as a reason names it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    for kind, name in ((dict, "an object"), (list, "a list"), (str, "a string"), ((int, float), "a number")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


def _parse_json(text: str):
    """json.loads, with every way it fails (bad syntax, NaN, 5000-digit numbers, deep nesting)
    turned into _BadRecord."""
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise _BadRecord(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc
    except ValueError as exc:
        raise _BadRecord(f"not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise _BadRecord("not readable JSON (nested too deeply)") from exc


_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def _scrub(value):
    """Lone surrogates (JSON allows the escape "\\ud800") replaced, in every string of a value."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    return value


def _groups(value: object, where: str) -> list[str]:
    """Access groups: a list of non-empty strings -> sorted, unique, stripped."""
    if not isinstance(value, list):
        raise _BadRecord(f"'{where}' must be a list of strings, got {_jtype(value)}")
    out = set()
    for i, g in enumerate(value):
        if not isinstance(g, str):
            raise _BadRecord(f"'{where}'[{i}] must be a string, got {_jtype(g)}")
        if not g.strip():
            raise _BadRecord(f"'{where}'[{i}] is empty (an empty group name would make the document public)")
        out.add(g.strip())
    return sorted(out)


def _record_document(rec: object, default_id: str, source: str, file_meta: dict) -> Document:
    """One record: `text` (required), `id`, `title`, `meta`, `groups` (access groups, a list of
    strings; stored as meta['groups'])."""
    if not isinstance(rec, dict):
        raise _BadRecord(f"expected a JSON object, got {_jtype(rec)}")
    text = rec.get("text")
    if not isinstance(text, str):
        raise _BadRecord(f"'text' must be a string, got {_jtype(text)}" if text is not None else "needs a field 'text'")
    text = normalise_text(text)
    if not text:
        raise _BadRecord("'text' is empty")
    rid = rec.get("id")
    if rid is None or (isinstance(rid, str) and not rid.strip()):
        rid = default_id
    elif isinstance(rid, bool) or not isinstance(rid, (str, int)):
        raise _BadRecord(f"'id' must be a string or an integer, got {_jtype(rid)}")
    title = rec.get("title")
    if title is not None and (isinstance(title, (bool, dict, list))):
        raise _BadRecord(f"'title' must be a string, got {_jtype(title)}")
    meta = rec.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise _BadRecord(f"'meta' must be an object, got {_jtype(meta)}")
    meta = dict(meta or {})
    if "groups" in rec:
        meta["groups"] = _groups(rec["groups"], "groups")
    elif "groups" in meta:
        meta["groups"] = _groups(meta["groups"], "meta.groups")
    for key, value in file_meta.items():
        meta.setdefault(key, value)
    title = "" if title is None else clean_title(title)
    return Document(id=_SURROGATE.sub("\ufffd", str(rid)), text=text, title=title, source=source, meta=meta)


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """(number, line) of JSONL text, split at \\n only: a JSON string may hold U+2028 and other
    characters that str.splitlines() would break a line at."""
    start, lineno = 0, 1
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        yield lineno, text[start:end]
        start, lineno = end + 1, lineno + 1


def _records(path: Path, items: Iterator[tuple[str, str, object]], file_meta: dict, parse: bool) -> LoadResult:
    """Documents of (where, default id, record) items, each record a JSON text to parse (`parse`)
    or a parsed value; each bad record is a Skipped entry `<path>:<where>` with the reason, and so
    is a repeated id."""
    out = LoadResult()
    first: dict[str, str] = {}
    for where, default_id, raw in items:
        try:
            rec = raw
            if parse:
                rec = _parse_json(raw)
                if _ESCAPED_SURROGATE.search(raw):
                    rec = _scrub(rec)
            doc = _record_document(rec, default_id, str(path), file_meta)
        except _BadRecord as exc:
            out.skipped.append(Skipped(f"{path}:{where.split()[-1]}", f"{where}: {exc}", file=str(path)))
            continue
        except RecursionError:
            out.skipped.append(Skipped(f"{path}:{where.split()[-1]}", f"{where}: nested too deeply", file=str(path)))
            continue
        if doc.id in first:
            out.skipped.append(
                Skipped(
                    f"{path}:{where.split()[-1]}",
                    f"{where}: duplicate id {doc.id!r} (first at {first[doc.id]})",
                    file=str(path),
                )
            )
            continue
        first[doc.id] = where
        out.documents.append(doc)
    return out


def load_jsonl(path: Path, doc_id: str, data: bytes) -> LoadResult:
    """One JSON object a line: `text` (required), `id`, `title`, `meta`, `groups`. Good lines load;
    each bad one is skipped as `<path>:<line>` with the reason."""
    text, file_meta = decode_text(path, data)
    lines = ((f"line {n}", f"{doc_id}:{n}", line) for n, line in _lines(text) if line.strip())
    result = _records(path, lines, file_meta, parse=True)
    if not result.documents:
        raise DocumentError(f"{path}: {_no_records(result, 'line')}")
    return result


def _no_records(result: LoadResult, what: str) -> str:
    if not result.skipped:
        return f"no {what} with a document (only blank lines?)"
    reasons = "; ".join(s.reason for s in result.skipped[:3])
    more = f"; {len(result.skipped) - 3} more" if len(result.skipped) > 3 else ""
    return f"no valid {what}: {reasons}{more}"


def _slug(title: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.,()-]+", "_", title).strip("_") or "untitled"


_MISSING = object()


def _field(obj: dict, key: str, kind: type | tuple, where: str, default=_MISSING):
    """obj[key], checked to be of `kind` (a JSON type); `default` when missing or null."""
    value = obj.get(key)
    if value is None:
        if default is _MISSING:
            raise _BadRecord(f"{where}: missing {key!r}")
        return default
    if not isinstance(value, kind) or isinstance(value, bool):
        names = {dict: "an object", list: "a list", str: "a string"}
        expected = names.get(kind, "a string or a number")  # type: ignore[arg-type]
        raise _BadRecord(f"{where}.{key}: expected {expected}, got {_jtype(value)}")
    return value


def _squad(path: Path, data: object) -> tuple[list[Document], list[QAExample]]:
    """Parsed SQuAD v1.1/v2.0 JSON -> one Document per paragraph (`<title>/<index>`) and its QA
    examples; a field of the wrong shape raises _BadRecord naming where it is."""
    if not isinstance(data, dict) or "data" not in data:
        raise _BadRecord("not a SQuAD file: expected an object with a 'data' list")
    articles = _field(data, "data", list, "(top)")
    docs: list[Document] = []
    examples: list[QAExample] = []
    slugs: set[str] = set()
    for a_i, article in enumerate(articles):
        where = f"data[{a_i}]"
        if not isinstance(article, dict):
            raise _BadRecord(f"{where}: expected an object, got {_jtype(article)}")
        raw_title = _field(article, "title", str, where, "")
        title = clean_title(raw_title.replace("_", " "))
        slug = base = _slug(raw_title)
        n = 1
        while slug in slugs:  # two articles with one title: each keeps its own documents
            n += 1
            slug = f"{base}_{n}"
        slugs.add(slug)
        for p_i, para in enumerate(_field(article, "paragraphs", list, where)):
            p_where = f"{where}.paragraphs[{p_i}]"
            if not isinstance(para, dict):
                raise _BadRecord(f"{p_where}: expected an object, got {_jtype(para)}")
            context = _field(para, "context", str, p_where)
            did = f"{slug}/{p_i}"
            docs.append(Document(id=did, text=normalise_text(context), title=title, source=str(path)))
            for q_i, qa in enumerate(_field(para, "qas", list, p_where, [])):
                q_where = f"{p_where}.qas[{q_i}]"
                if not isinstance(qa, dict):
                    raise _BadRecord(f"{q_where}: expected an object, got {_jtype(qa)}")
                answers = []
                for n_i, a in enumerate(_field(qa, "answers", list, q_where, [])):
                    if isinstance(a, dict):
                        a = _field(a, "text", str, f"{q_where}.answers[{n_i}]")
                    elif not isinstance(a, str):
                        raise _BadRecord(f"{q_where}.answers[{n_i}]: expected an object, got {_jtype(a)}")
                    answers.append(a)
                examples.append(
                    QAExample(
                        id=str(_field(qa, "id", (str, int), q_where, f"{did}/q{q_i}")),
                        question=_field(qa, "question", str, q_where).strip(),
                        answers=tuple(dict.fromkeys(answers)),
                        doc_ids=(did,),
                        context=context,
                        title=title,
                    )
                )
    return docs, examples


def _parse_json_file(path: Path, data: bytes):
    text, _ = decode_text(path, data)
    try:
        parsed = _parse_json(text)
    except _BadRecord as exc:
        raise DocumentError(f"{path}: {exc}") from exc
    return _scrub(parsed) if _ESCAPED_SURROGATE.search(text) else parsed


def load_squad(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> tuple[list[Document], list[QAExample]]:
    """SQuAD v1.1 JSON -> one Document per paragraph (`<title>/<index>`) and its QA examples.
    A field of the wrong shape is a DocumentError naming it, e.g. `data[0].paragraphs: expected a
    list, got a string`."""
    path = Path(path)
    try:
        return _squad(path, _parse_json_file(path, read_bytes(path, max_bytes)))
    except _BadRecord as exc:
        raise DocumentError(f"{path}: {exc}") from exc
    except RecursionError as exc:
        raise DocumentError(f"{path}: nested too deeply to read") from exc


def _load_json(path: Path, doc_id: str, data: bytes) -> LoadResult:
    """SQuAD JSON (its paragraphs), or a list of records like JSONL lines."""
    parsed = _parse_json_file(path, data)
    if isinstance(parsed, list):
        items = ((f"item [{i}]", f"{doc_id}[{i}]", rec) for i, rec in enumerate(parsed))
        result = _records(path, items, {}, parse=False)
        if not result.documents:
            raise DocumentError(f"{path}: {_no_records(result, 'item')}")
        return result
    if not isinstance(parsed, dict) or "data" not in parsed:
        raise DocumentError(
            f"{path}: JSON files must be SQuAD format ({{\"data\": [...]}}) or a list of records with 'text'"
            " (use .jsonl for one document a line)"
        )
    try:
        docs, _ = _squad(path, parsed)
    except _BadRecord as exc:
        raise DocumentError(f"{path}: {exc}") from exc
    result = LoadResult()
    for d in docs:
        if d.text:
            result.documents.append(d)
        else:
            result.skipped.append(Skipped(f"{path}:{d.id}", f"{d.id}: empty 'context'", file=str(path)))
    return result


LOADERS: dict[str, Loader] = {
    ".txt": load_text,
    ".md": load_text,
    ".markdown": load_text,
    ".html": load_html,
    ".htm": load_html,
    ".pdf": load_pdf,
    ".jsonl": load_jsonl,
    ".json": _load_json,
}
# Formats whose file holds records (JSONL lines, a JSON list, SQuAD paragraphs), each a document with
# an id of its own; every other format is one document a file, under the id `iter_files` gives it.
RECORD_FORMATS = frozenset({".jsonl", ".json"})


# -- Office and e-mail ----------------------------------------------------------------------------

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
                # zipfile stops each entry at its declared size, so the declared sizes bound the work.
                unpacked = sum(info.file_size for info in zf.infolist())
                if unpacked > MAX_UNPACKED_BYTES:
                    raise DocumentError(
                        f"{path}: not a readable {kind}: it unpacks to {_size(unpacked)}, over the "
                        f"{_limit(MAX_UNPACKED_BYTES)} limit (a zip bomb?)"
                    )
                types = zf.read("[Content_Types].xml").decode("utf-8", "replace")
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError):
            raise DocumentError(f"{path}: not a readable {kind}: not a zip container (corrupt or cut short?)") from None
        except (zlib.error, NotImplementedError, RuntimeError, struct.error) as exc:  # a damaged or encrypted entry
            why = f"a damaged zip container ({_error_text(exc)})"
            raise DocumentError(f"{path}: not a readable {kind}: {why}") from None
        except KeyError:
            raise DocumentError(f"{path}: not a readable {kind}: a zip archive, but not an Office file") from None
        if family not in types:
            other = next((OFFICE[s][0] for s in (".docx", ".pptx", ".xlsx") if OFFICE[s][2] in types), "something else")
            raise DocumentError(f"{path}: not a readable {kind}: the file holds a {other}")
    elif suffix == ".xls" and data[:8] != _OLE:
        raise DocumentError(f"{path}: not a readable {kind}: not an OLE container (a renamed .xlsx or CSV?)")


@contextmanager
def _csv_fields_unlimited():
    """csv refuses fields over 128 kB by default; a long cell is text, not an attack."""
    before = csv.field_size_limit()
    csv.field_size_limit(max(before, MAX_FILE_BYTES))
    try:
        yield
    finally:
        csv.field_size_limit(before)


def _convert_office(path: Path, data: bytes, suffix: str) -> tuple[str, dict]:
    """Bytes of one office file -> (Markdown, meta), through markitdown's converter for the format."""
    kind, converter, _ = OFFICE[suffix]
    _check_office(path, data, suffix)
    meta: dict = {}
    charset = None
    if suffix == ".csv":  # decoded here (encoding detection, NUL bytes), handed on as UTF-8
        try:
            text, meta = decode_text(path, data)
        except DocumentError as exc:
            raise DocumentError(f"{path}: not a readable {kind}: {_reason(path, exc)}") from None
        data, charset = text.encode("utf-8", "surrogatepass"), "utf-8"
    try:
        from markitdown import StreamInfo, converters
    except ImportError as exc:  # pragma: no cover - a dependency of ragtune
        raise DocumentError(f"{path}: a {kind} needs markitdown: pip install 'markitdown[docx,pptx,xlsx,xls]'") from exc
    try:
        with _csv_fields_unlimited(), _quiet("markitdown"):
            result = getattr(converters, converter)().convert(
                io.BytesIO(data), StreamInfo(extension=suffix, charset=charset)
            )
    except Exception as exc:  # converters raise zip, XML, pandas and their own errors alike
        raise DocumentError(
            f"{path}: not a readable {kind} (corrupt, encrypted or another format?): {_error_text(exc)}"
        ) from exc
    text = result.markdown or ""
    if suffix == ".docx":
        # Word tables come with an empty header row; the first data row is the header.
        text = re.sub(r"^(\|(?:\s*\|)+)\n(\|(?:\s*-+\s*\|)+)\n(\|.*\|)$", r"\3\n\2", text, flags=re.M)
    if suffix == ".pptx":  # each slide a section named by its title; its notes stay in the section
        text = re.sub(r"^<!-- Slide number: (\d+) -->\n# (.+)$", r"## Slide \1: \2", text, flags=re.M)
        text = re.sub(r"^<!-- Slide number: (\d+) -->$", r"## Slide \1", text, flags=re.M)
        text = re.sub(r"^### Notes:$", "Notes:", text, flags=re.M)
    return normalise_text(text), meta


def load_office(path: Path, doc_id: str, data: bytes) -> list[Document]:
    """.docx .pptx .xlsx .xls .csv -> one Markdown document: headings, lists and tables kept,
    a slide or a sheet a section. Title: the first top heading (a deck: its first slide's title),
    else the file name."""
    suffix = path.suffix.lower()
    text, meta = _convert_office(path, data, suffix)
    if not text:
        raise DocumentError(f"{path}: no text found (an empty {OFFICE[suffix][0]}?)")
    if suffix == ".pptx":
        m = re.search(r"^## Slide \d+: (.+)$", text, flags=re.M)
        title = clean_title(m.group(1)) if m else path.stem
    else:
        title = _title_from_markdown(text, path.stem)
    return [Document(id=doc_id, text=text, title=title, source=str(path), meta={"format": suffix[1:], **meta})]


_TEXT_ATTACHMENTS = (".txt", ".md", ".markdown")


def _attachment_text(path: Path, name: str, data: bytes) -> str:
    """The text of an e-mail attachment that ragtune reads, else "" (it is then only named)."""
    suffix = Path(name).suffix.lower()
    try:
        if suffix in OFFICE:
            return _convert_office(path, data, suffix)[0]
        if suffix in _TEXT_ATTACHMENTS:
            return normalise_text(decode_text(path, data)[0])
    except DocumentError:
        pass
    return ""


def _header(msg, name: str) -> str:
    """A header's value as one line; '' when missing or unparseable (the parser is lazy and a
    malformed address or date fails only when read). Raw 8-bit bytes in a header, which email
    turns into U+FFFD, are read as UTF-8 (else cp1252) instead."""
    try:
        value = str(msg.get(name) or "")
        if "\ufffd" in value:
            raw = next((str(v) for k, v in msg.raw_items() if k.lower() == name.lower()), "")
            if _SURROGATE.search(raw):
                value = raw.encode("utf-8", "surrogateescape").decode("utf-8", "ragtune-cp1252")
    except Exception:  # email's header classes raise assorted errors on malformed values
        return ""
    return " ".join(value.split())


def _body_text(body) -> str:
    """An e-mail part's text; a charset Python does not know (or that lies) gets detected instead."""
    try:
        return body.get_content()
    except (LookupError, UnicodeError):
        payload = body.get_payload(decode=True)
        return decode_text(Path("body"), payload)[0] if isinstance(payload, bytes) else ""


def load_email(path: Path, doc_id: str, data: bytes) -> list[Document]:
    """.eml -> subject as title, a From / To / Date line, the body (plain text, else the HTML
    part as Markdown), the attachments' names, and the text of those ragtune reads (office, text)."""
    from email import policy
    from email.parser import BytesParser

    try:
        msg = BytesParser(policy=policy.default).parsebytes(data)
    except RecursionError as exc:
        raise DocumentError(f"{path}: not a readable e-mail (MIME parts nested too deeply)") from exc
    except Exception as exc:  # the parser is lenient; this is for truly broken input
        raise DocumentError(f"{path}: not a readable e-mail ({_error_text(exc)})") from exc
    headers = {h: _header(msg, h) for h in ("From", "To", "Subject", "Date")}
    if not any(headers.values()):
        raise DocumentError(f"{path}: not an e-mail (no From, To, Subject or Date header)")
    text = ""
    try:
        body = msg.get_body(preferencelist=("plain", "html"))
        if body is not None:
            text = _body_text(body)
            if body.get_content_type() == "text/html":
                from markitdown.converters import HtmlConverter

                text = HtmlConverter().convert_string(text).markdown or ""
        attachments = [(part.get_filename(), part.get_payload(decode=True)) for part in msg.iter_attachments()]
    except DocumentError as exc:
        raise DocumentError(f"{path}: e-mail body: {_reason('body', exc)}") from exc
    except RecursionError as exc:
        raise DocumentError(f"{path}: not a readable e-mail (MIME parts nested too deeply)") from exc
    except Exception as exc:  # a malformed MIME structure: email raises from deep inside
        raise DocumentError(f"{path}: not a readable e-mail ({_error_text(exc)})") from exc
    subject = clean_title(headers["Subject"]) or path.stem
    head = " · ".join(f"{h}: {headers[h]}" for h in ("From", "To", "Date") if headers[h])
    parts = [f"# {subject}", head, str(text).strip()]
    names, sections = [], []
    for name, payload in attachments:
        if not name:
            continue
        names.append(str(name))
        content = _attachment_text(path, str(name), payload) if isinstance(payload, bytes) else ""
        if content:
            sections.append(f"## Attachment: {name}\n\n{content}")
    if names:
        parts.append("Attachments: " + ", ".join(names))
    meta = {"format": "eml", "from": headers["From"], "date": headers["Date"]}
    text = normalise_text("\n\n".join(p for p in parts + sections if p))
    return [Document(id=doc_id, text=text, title=subject, source=str(path), meta=meta)]


LOADERS.update({suffix: load_office for suffix in OFFICE})
LOADERS[".eml"] = load_email


# -- finding files --------------------------------------------------------------------------------


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def iter_files(paths: list[str | Path], skipped: list[Skipped] | None = None) -> Iterator[tuple[Path, str]]:
    """Regular files under the given paths, each with its document id (the path relative to the
    argument's parent). Hidden files and folders are left out. What is not read goes to `skipped`
    with the reason: FIFOs, sockets and devices, symlinks pointing outside the argument or to a
    folder, broken symlinks, folders that cannot be listed. A symlink to a file inside the argument
    is read (from its target) unless the target is read anyway. A missing argument raises."""
    skipped = skipped if skipped is not None else []
    for raw in paths:  # every argument is checked before anything is read
        if not os.path.lexists(raw):
            raise DocumentError(f"{raw}: no such file or directory")
    for raw in paths:
        p = Path(raw)
        try:
            st = p.stat()
        except OSError as exc:
            reason = "broken symlink" if p.is_symlink() and isinstance(exc, FileNotFoundError) else _os_reason(exc)
            skipped.append(Skipped(str(p), reason))
            continue
        if stat.S_ISREG(st.st_mode):
            yield Path(os.path.realpath(p)) if p.is_symlink() else p, p.name
        elif stat.S_ISDIR(st.st_mode):
            yield from _walk(p, skipped)
        else:
            skipped.append(Skipped(str(p), f"{_not_regular(st.st_mode)}, not a regular file"))


def _walk(top: Path, skipped: list[Skipped]) -> Iterator[tuple[Path, str]]:
    root = os.path.realpath(top)
    name = os.path.basename(root)
    files: list[Path] = []
    links: list[tuple[Path, str]] = []  # (link, its target)
    folders = [top]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            why = "permission denied" if isinstance(exc, PermissionError) else (exc.strerror or str(exc))
            skipped.append(Skipped(str(folder), f"cannot list the folder: {why}"))
            continue
        for e in entries:
            if e.name.startswith("."):
                continue
            p = Path(e.path)
            try:
                if e.is_symlink():
                    target = os.path.realpath(p)
                    if not os.path.exists(target):
                        loop = os.path.islink(target)  # realpath stops at a link it has met before
                        why = "a symlink loop" if loop else f"broken symlink (to {os.readlink(p)})"
                        skipped.append(Skipped(str(p), why))
                    elif not _inside(target, root):
                        skipped.append(Skipped(str(p), f"symlink pointing outside {top} (to {target})"))
                    elif os.path.isdir(target):
                        skipped.append(Skipped(str(p), "symlink to a folder (not followed; its folder is read itself)"))
                    else:
                        links.append((p, target))
                elif e.is_dir(follow_symlinks=False):
                    folders.append(p)
                elif e.is_file(follow_symlinks=False):
                    files.append(p)
                else:
                    what = _not_regular(e.stat(follow_symlinks=False).st_mode)
                    skipped.append(Skipped(str(p), f"{what}, not a regular file"))
            except OSError as exc:
                skipped.append(Skipped(str(p), _os_reason(exc)))
    read = {os.path.join(root, os.path.relpath(f, top)) for f in files}
    out = [(f, f) for f in files]
    for link, target in sorted(links):
        if target in read:
            skipped.append(Skipped(str(link), f"symlink to {target}, which is read itself"))
        else:
            read.add(target)
            out.append((link, Path(target)))
    for shown, real in sorted(out):
        yield real, Path(name, shown.relative_to(top)).as_posix()


# -- loading --------------------------------------------------------------------------------------


def _reason(path: Path | str, exc: Exception) -> str:
    return str(exc).removeprefix(f"{path}: ")


def read_file(
    path: str | Path, doc_id: str, max_bytes: int = MAX_FILE_BYTES, follow_symlinks: bool = True
) -> LoadResult:
    """One file -> its documents, and its records that were skipped (a bad JSONL line). Raises
    DocumentError with the reason when no document comes out of it."""
    path = Path(path)
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise DocumentError(f"{path}: unsupported file type {path.suffix or '(none)'!r}; supported: {sorted(LOADERS)}")
    data = read_bytes(path, max_bytes, follow_symlinks)
    if not data:
        raise DocumentError(f"{path}: empty file")
    # Hand the bytes over so that the loader holds the only reference: a text loader drops them
    # once decoded, and a large file is not held twice (bytes and text) while it is normalised.
    box = [data]
    del data
    try:
        out = loader(path, doc_id, box.pop())
    except RecursionError as exc:  # a parser recursing into deeply nested HTML, XML, MIME ...
        raise DocumentError(f"{path}: nested too deeply to read") from exc
    except MemoryError as exc:
        raise DocumentError(f"{path}: too large to read into memory") from exc
    result = out if isinstance(out, LoadResult) else LoadResult(out)
    result.documents = [d for d in result.documents if d.text.strip()]
    if not result.documents:
        raise DocumentError(f"{path}: {_no_records(result, 'record') if result.skipped else 'no text found'}")
    return result


def load_file(path: str | Path, doc_id: str, max_bytes: int = MAX_FILE_BYTES) -> list[Document]:
    """Read one file with the loader for its suffix; raises DocumentError with the reason. (Records
    of it that were skipped are left out; `read_file` returns them too.)"""
    return read_file(path, doc_id, max_bytes).documents


def load_paths(
    paths: list[str | Path],
    on_file: Callable[[Path], None] | None = None,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> LoadResult:
    """Load every supported file under `paths`. A file that fails is recorded in `skipped` with the
    reason, and so is each bad record of a file that loads; the other files always load."""
    result = LoadResult()
    seen: dict[str, str] = {}
    for path, doc_id in iter_files(paths, result.skipped):
        if on_file:
            on_file(path)
        try:
            loaded = read_file(path, doc_id, max_file_bytes, follow_symlinks=False)
        except DocumentError as exc:
            result.skipped.append(Skipped(str(path), _reason(path, exc)))
            continue
        except Exception as exc:  # a loader bug must cost this one file, not the run
            result.skipped.append(
                Skipped(str(path), f"unexpected error in the {path.suffix.lower()} loader: {_error_text(exc)}")
            )
            continue
        result.skipped.extend(loaded.skipped)
        for d in loaded.documents:
            if d.id in seen:
                result.skipped.append(
                    Skipped(str(path), f"duplicate document id {d.id!r} (first seen in {seen[d.id]})")
                )
                continue
            seen[d.id] = str(path)
            result.documents.append(d)
    return result
