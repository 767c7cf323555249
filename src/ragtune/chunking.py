"""Token-aware chunking that cuts at paragraph and sentence boundaries."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence

from .config import ChunkConfig
from .documents import Chunk, Document

TokenCounter = Callable[[Sequence[str]], list[int]]

# A sentence ends at . ! ? (optionally followed by a closing quote or bracket) before
# whitespace and an upper-case letter, digit or opening quote. Common abbreviations stay put.
_SENT_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9])")
_ABBREV = re.compile(
    r"\b(?:Mr|Mrs|Ms|Dr|Prof|Sr|Jr|St|vs|etc|e\.g|i\.e|U\.S|No|Fig|Vol|Inc|Ltd|Co|Gen|Col|Lt|Mt|O\.S|N\.S)\.$"
)
_SPACES = re.compile(r"\s+")  # the characters str.split() splits at


def _collapse(text: str, piece: int = 1 << 16) -> str:
    """Whitespace runs -> one space, stripped; a long text in pieces cut after a whitespace run
    (re.sub over a whole 30 MB text holds a list of its millions of words)."""
    if len(text) <= piece:
        return _SPACES.sub(" ", text).strip()
    parts, i = [], 0
    while i < len(text):
        m = _SPACES.search(text, i + piece)
        j = m.end() if m else len(text)
        parts.append(_SPACES.sub(" ", text[i:j]))
        i = j
    return "".join(parts).strip()


# A Markdown heading line (office files load as Markdown)
_HEADING_LINE = re.compile(r"(?m)^[ \t]*#{1,6}[ \t]+\S[^\n]*$")


def split_sentences(text: str) -> list[str]:
    """Split a paragraph into sentences (regex rules; good enough for prose, never loses text);
    whitespace inside a sentence becomes one space. A Markdown heading line is a sentence of its
    own: it has no full stop to end it, and "## Slide 1: Nikola Tesla" + "Tesla was ..." made one
    sentence whose words ran together ("Nikola Tesla Tesla")."""
    if "#" not in text:
        return _split(text)
    out, pos = [], 0
    for m in _HEADING_LINE.finditer(text):
        out += _split(text[pos : m.start()]) + _split(m.group(0))
        pos = m.end()
    return out + _split(text[pos:])


def _split(text: str) -> list[str]:
    out: list[str] = []
    start = 0
    for m in _SENT_END.finditer(text):
        # The abbreviation test reads a short window before the stop, not the whole prefix:
        # slicing the prefix made a paragraph of n sentences cost O(n^2).
        if _ABBREV.search(text[max(start, m.start() - 12) : m.start()]):
            continue
        # Not inside a bracket opened just before ("born on 10 July [O.S. 28 June] 1856").
        near = text[max(start, m.start() - 40) : m.end()]
        if near.count("[") > near.count("]") or near.count("(") > near.count(")"):
            continue
        if len(text[start : m.start()].split(None, 2)) < 2:
            continue
        out.append(_collapse(text[start : m.end()]))
        start = m.end()
    tail = _collapse(text[start:])
    if tail:
        out.append(tail)
    return out


_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def iter_paragraphs(text: str) -> Iterator[str]:
    """The paragraphs of a text (split at blank lines), one at a time: a large document is not
    copied into a list of paragraphs."""
    start = 0
    for m in _PARAGRAPH_BREAK.finditer(text):
        para = text[start : m.start()].strip()
        if para:
            yield para
        start = m.end()
    para = text[start:].strip()
    if para:
        yield para


def split_paragraphs(text: str) -> list[str]:
    return list(iter_paragraphs(text))


def whitespace_tokens(texts: Sequence[str]) -> list[int]:
    """A token counter for tests and fakes: one token per whitespace-separated word."""
    return [len(t.split()) for t in texts]


def _split_long(sentence: str, n_tokens: int, limit: int) -> list[str]:
    """Cut a sentence longer than the limit into word windows of about `limit` tokens. (A regex
    walks the words: a log file without sentence ends can make one 'sentence' of millions.)"""
    n_words = sentence.count(" ") + 1  # sentences come with single spaces; for table rows a guess will do
    per = max(1, int(n_words * limit / max(n_tokens, 1)))
    return re.findall(rf"\S+(?:\s+\S+){{0,{per - 1}}}", sentence)


_HEADING = re.compile(r"^(#{1,6})\s+\S")
_TABLE_SEP = re.compile(r"^\|?\s*:?-{3,}")
_ITEM = re.compile(r"^(?:[-*+]|\d{1,3}[.)])\s+\S")
BODY = ("text", "item", "row")  # what a chunk is for, as against the headings it repeats


def _blocks(para: str) -> list[tuple[str, list[str]]]:
    """Cut a paragraph into blocks of one kind: a heading line, a Markdown table (two or more
    lines starting with `|`), or text. A paragraph with neither headings nor tables is one block."""
    blocks: list[tuple[str, list[str]]] = []
    for line in para.splitlines():
        s = line.strip()
        kind = "heading" if _HEADING.match(s) else "row" if s.startswith("|") else "text"
        if kind != "heading" and blocks and blocks[-1][0] == kind:
            blocks[-1][1].append(s)
        else:
            blocks.append((kind, [s]))
    merged: list[tuple[str, list[str]]] = []
    for kind, lines in blocks:
        kind = "text" if kind == "row" and len(lines) < 2 else kind  # one line with a pipe is prose
        if kind == "text" and merged and merged[-1][0] == "text":
            merged[-1][1].extend(lines)
        else:
            merged.append((kind, lines))
    return merged


def _text_units(lines: list[str]) -> list[tuple[str, str]]:
    """Sentences of a text block; a list item starts on its own line (kind `item`)."""
    if not any(_ITEM.match(line) for line in lines):
        return [("text", s) for s in split_sentences("\n".join(lines))]
    segments: list[list[str]] = []
    for line in lines:
        if _ITEM.match(line) or not segments:
            segments.append([line])
        else:
            segments[-1].append(line)  # a continuation line of the item (or of the lead-in prose)
    units = []
    for seg in segments:
        sents = split_sentences(" ".join(seg))
        kind = "item" if _ITEM.match(seg[0]) else "text"
        units += [(kind if j == 0 else "text", s) for j, s in enumerate(sents)]
    return units


def _units(text: str, title: str = "") -> list[tuple[int, str, str, str]]:
    """(block index, piece, kind, context): kind is text | item | heading | row, context the
    headings the piece sits under (one a line, outermost first; a top heading equal to the title,
    which goes with every chunk anyway, is left out). Prose is cut into sentences, a list into
    items, a Markdown table into rows. Plain text without headings or tables: one block a paragraph."""
    units: list[tuple[int, str, str, str]] = []
    trail: list[tuple[int, str]] = []  # (level, heading line) of the enclosing headings
    b_i = 0
    for para in iter_paragraphs(text):
        for kind, lines in _blocks(para):
            if kind == "heading":
                level = len(_HEADING.match(lines[0]).group(1))
                while trail and trail[-1][0] >= level:
                    trail.pop()
                context = _context(trail, title)  # a heading carries its ancestors
                trail.append((level, lines[0]))
                units.append((b_i, lines[0], "heading", context))
            elif kind == "row":
                context = _context(trail, title)
                units.extend((b_i, line, "row", context) for line in lines)
            else:
                context = _context(trail, title)
                units.extend((b_i, s, k, context) for k, s in _text_units(lines))
            b_i += 1
    return units


def _context(trail: list[tuple[int, str]], title: str) -> str:
    lines = [line for _, line in trail]
    if lines and trail[0][0] == 1 and lines[0].lstrip("#").strip() == title.strip():
        lines = lines[1:]
    return "\n".join(lines)


def chunk_document(doc: Document, cfg: ChunkConfig, count_tokens: TokenCounter) -> list[Chunk]:
    """Pack sentences into chunks of at most `cfg.chunk_tokens`, repeating up to
    `cfg.overlap_tokens` of trailing sentences at the start of the next chunk of the same
    paragraph, and preferring to start a new chunk where a paragraph starts. Markdown structure
    is kept: a heading starts a new chunk (once the current one is a quarter full) and every
    chunk under it opens with the headings it sits under; a table is cut only between rows,
    each piece under the table's header row; list items keep their own lines."""
    units = _units(doc.text, doc.title)
    if not units:
        return []
    contexts = sorted({u[3] for u in units if u[3]})
    sizes = count_tokens([u[1] for u in units] + contexts)
    context_n = dict(zip(contexts, sizes[len(units) :]))
    limit = cfg.chunk_tokens
    # (block, piece, tokens, kind, context)
    expanded: list[tuple[int, str, int, str, str]] = []
    for (b_i, s, kind, ctx), n in zip(units, sizes):
        if n <= limit or kind == "heading":
            expanded.append((b_i, s, n, kind, ctx))
        else:
            parts = _split_long(s, n, limit)
            expanded.extend((b_i, part, c, kind, ctx) for part, c in zip(parts, count_tokens(parts)))
    del units, sizes  # a large document's pieces live on in `expanded` only
    # A table's header: its first row and the separator line under it.
    table_rows: dict[int, list[int]] = {}
    for i, u in enumerate(expanded):
        if u[3] == "row":
            table_rows.setdefault(u[0], []).append(i)
    headers = {
        b: [(b, expanded[j][1], expanded[j][2], "header", expanded[j][4]) for j in rows[:2]]
        for b, rows in table_rows.items()
        if len(rows) >= 2 and _TABLE_SEP.match(expanded[rows[1]][1])
    }
    header_at = {j for b in headers for j in table_rows[b][:2]}
    # Tokens from unit i to the end of its block.
    rest = [0] * (len(expanded) + 1)
    for i in range(len(expanded) - 1, -1, -1):
        same = i + 1 < len(expanded) and expanded[i + 1][0] == expanded[i][0]
        rest[i] = expanded[i][2] + (rest[i + 1] if same else 0)

    def opening(i: int) -> tuple[list, int]:
        """What a fresh chunk starting at unit `i` carries first: the headings it sits under,
        and the table's header row when the unit continues a table."""
        u = expanded[i]
        head: list[tuple] = [(-1, u[4], context_n[u[4]], "context", u[4])] if u[4] else []
        if u[3] == "row" and u[0] in headers and i not in header_at:
            head += headers[u[0]]
        return head, sum(h[2] for h in head)

    def close(group: list[tuple], i: int) -> None:
        """Keep a chunk; headings left at its very end move on when the next chunk (which
        starts at unit `i`) opens with them anyway."""
        head, head_n = opening(i)
        carried = set(head[0][1].splitlines()) if head and head[0][3] == "context" else set()
        if head_n + expanded[i][2] <= limit:
            while group[-1][3] == "heading" and group[-1][1] in carried and any(x[3] in BODY for x in group[:-1]):
                group.pop()
        groups.append(group)

    groups: list[list[tuple]] = []
    cur: list[tuple] = []
    cur_n = 0
    for i, u in enumerate(expanded):
        b_i, s, n, kind, ctx = u
        if cur and kind == "heading" and cur_n >= limit // 4:
            close(cur, i)
            cur, cur_n = [], 0
        if cur and b_i != cur[-1][0] and cur_n >= limit // 2 and cur_n + rest[i] > limit:
            # Start the paragraph in a fresh chunk unless the rest of it fits here.
            close(cur, i)
            cur, cur_n = [], 0
        if cur and cur_n + n > limit:
            close(cur, i)
            carry: list[tuple] = []
            carry_n = 0
            for x in reversed(cur if kind == "text" else []):
                if x[0] != b_i or x[3] != "text" or carry_n + x[2] > cfg.overlap_tokens or len(carry) + 1 >= len(cur):
                    break
                carry.insert(0, x)
                carry_n += x[2]
            head, head_n = opening(i)
            if head_n + carry_n + n > limit:
                carry, carry_n = [], 0
            if head_n + n > limit:  # headings or a header too big to repeat: leave them out
                head, head_n = [], 0
            cur, cur_n = head + carry, head_n + carry_n
        if not cur:
            cur, cur_n = opening(i)
            if cur_n + n > limit:
                cur, cur_n = [], 0
        cur.append(u)
        cur_n += n
    if cur:
        groups.append(cur)

    chunks = []
    doc_hash = doc.content_hash  # hashes the whole document: once, not once a chunk
    for pos, group in enumerate(groups):
        text_parts: list[str] = []
        for j, (p_i, s, _, kind, _sec) in enumerate(group):
            if j:
                prev = group[j - 1]
                same_block = p_i == prev[0] and kind != "heading"
                text_parts.append(("\n" if kind in ("row", "header", "item") else " ") if same_block else "\n\n")
            text_parts.append(s)
        chunks.append(
            Chunk(
                id=f"{doc.id}#{pos}",
                doc_id=doc.id,
                text="".join(text_parts),
                position=pos,
                title=doc.title,
                source=doc.source,
                content_hash=doc_hash,
                meta=doc.meta,
            )
        )
    return chunks


def chunk_documents(docs: Sequence[Document], cfg: ChunkConfig, count_tokens: TokenCounter) -> list[Chunk]:
    return [c for d in docs for c in chunk_document(d, cfg, count_tokens)]
