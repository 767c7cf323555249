"""Token-aware chunking that cuts at paragraph and sentence boundaries."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from .config import ChunkConfig
from .documents import Chunk, Document

TokenCounter = Callable[[Sequence[str]], list[int]]

# A sentence ends at . ! ? (optionally followed by a closing quote or bracket) before
# whitespace and an upper-case letter, digit or opening quote. Common abbreviations stay put.
_SENT_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[\"'(\[]?[A-Z0-9])")
_ABBREV = re.compile(r"\b(?:Mr|Mrs|Ms|Dr|Prof|Sr|Jr|St|vs|etc|e\.g|i\.e|U\.S|No|Fig|Vol|Inc|Ltd|Co|Gen|Col|Lt|Mt)\.$")


def split_sentences(text: str) -> list[str]:
    """Split a paragraph into sentences (regex rules; good enough for prose, never loses text)."""
    text = " ".join(text.split())
    if not text:
        return []
    out: list[str] = []
    start = 0
    for m in _SENT_END.finditer(text):
        piece = text[start : m.start()]
        if _ABBREV.search(text[: m.start()].rstrip("\"')]")) or len(piece.split()) < 2:
            continue
        out.append(text[start : m.end()].strip())
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


def split_paragraphs(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def whitespace_tokens(texts: Sequence[str]) -> list[int]:
    """A token counter for tests and fakes: one token per whitespace-separated word."""
    return [len(t.split()) for t in texts]


def _split_long(sentence: str, n_tokens: int, limit: int) -> list[str]:
    """Cut a sentence longer than the limit into word windows of about `limit` tokens."""
    words = sentence.split()
    per = max(1, int(len(words) * limit / max(n_tokens, 1)))
    return [" ".join(words[i : i + per]) for i in range(0, len(words), per)]


_HEADING = re.compile(r"^#{1,6}\s+\S")
_TABLE_SEP = re.compile(r"^\|?\s*:?-{3,}")


def _units(text: str) -> list[tuple[int, str, str, str]]:
    """(paragraph index, piece, kind, section) with kind text | heading | row and section the
    heading the piece sits under. Prose is cut into sentences; a Markdown table into rows."""
    units: list[tuple[int, str, str, str]] = []
    section = ""
    for p_i, para in enumerate(split_paragraphs(text)):
        lines = para.splitlines()
        if len(lines) == 1 and _HEADING.match(para):
            section = para
            units.append((p_i, para, "heading", section))
        elif len(lines) >= 2 and all(line.lstrip().startswith("|") for line in lines):
            units.extend((p_i, line.strip(), "row", section) for line in lines)
        else:
            units.extend((p_i, sent, "text", section) for sent in split_sentences(para))
    return units


def chunk_document(doc: Document, cfg: ChunkConfig, count_tokens: TokenCounter) -> list[Chunk]:
    """Pack sentences into chunks of at most `cfg.chunk_tokens`, repeating up to
    `cfg.overlap_tokens` of trailing sentences at the start of the next chunk of the same
    paragraph, and preferring to start a new chunk where a paragraph starts. Markdown structure
    is kept: a heading starts a new chunk (once the current one is a quarter full) and every
    chunk under it repeats it; a table is cut only between rows, each piece under the header row."""
    units = _units(doc.text)
    if not units:
        return []
    sizes = count_tokens([u[1] for u in units])
    limit = cfg.chunk_tokens
    # (paragraph, piece, tokens, kind, section)
    expanded: list[tuple[int, str, int, str, str]] = []
    for (p_i, s, kind, sec), n in zip(units, sizes):
        if n <= limit or kind == "heading":
            expanded.append((p_i, s, n, kind, sec))
        else:
            parts = _split_long(s, n, limit)
            expanded.extend((p_i, part, c, kind, sec) for part, c in zip(parts, count_tokens(parts)))
    section_n = dict(
        zip([u[1] for u in units if u[2] == "heading"], [n for u, n in zip(units, sizes) if u[2] == "heading"])
    )

    def opening(u: tuple) -> tuple[list, int]:
        """What a fresh chunk starting at unit `u` carries first: its section heading, and a
        table's header rows when `u` continues a table."""
        head: list[tuple] = []
        if u[3] != "heading" and u[4]:
            head.append((-1, u[4], section_n.get(u[4], 0), "context", u[4]))
        if u[3] == "row":
            rows = [x for x in expanded if x[0] == u[0] and x[3] == "row"]
            if len(rows) >= 2 and _TABLE_SEP.match(rows[1][1]) and u not in rows[:2]:
                head += [(r[0], r[1], r[2], "header", r[4]) for r in rows[:2]]
        return head, sum(h[2] for h in head)

    groups: list[list[tuple]] = []
    cur: list[tuple] = []
    cur_n = 0
    for i, u in enumerate(expanded):
        p_i, s, n, kind, sec = u
        if cur and kind == "heading" and cur_n >= limit // 4:
            groups.append(cur)
            cur, cur_n = [], 0
        new_para = bool(cur) and p_i != cur[-1][0]
        if new_para and cur_n >= limit // 2:
            # Start the paragraph in a fresh chunk unless the rest of it fits here.
            para_rest = sum(x[2] for x in expanded[i:] if x[0] == p_i)
            if cur_n + para_rest > limit:
                groups.append(cur)
                cur, cur_n = [], 0
        if cur and cur_n + n > limit:
            groups.append(cur)
            carry: list[tuple] = []
            carry_n = 0
            for x in reversed(cur if kind == "text" else []):
                if x[0] != p_i or x[3] != "text" or carry_n + x[2] > cfg.overlap_tokens or len(carry) + 1 >= len(cur):
                    break
                carry.insert(0, x)
                carry_n += x[2]
            head, head_n = opening(u)
            if head_n + carry_n + n > limit:
                carry, carry_n = [], 0
            if head_n + n > limit:  # a heading or header too big to repeat: leave it out
                head, head_n = [], 0
            cur, cur_n = head + carry, head_n + carry_n
        if not cur:
            cur, cur_n = opening(u)
            if cur_n + n > limit:
                cur, cur_n = [], 0
        cur.append(u)
        cur_n += n
    if cur:
        groups.append(cur)

    chunks = []
    for pos, group in enumerate(groups):
        text_parts: list[str] = []
        for j, (p_i, s, _, kind, _sec) in enumerate(group):
            if j:
                prev = group[j - 1]
                same_table = kind in ("row", "header") and prev[3] in ("row", "header") and prev[0] == p_i
                text_parts.append("\n" if same_table else "\n\n" if p_i != prev[0] or kind == "heading" else " ")
            text_parts.append(s)
        chunks.append(
            Chunk(
                id=f"{doc.id}#{pos}",
                doc_id=doc.id,
                text="".join(text_parts),
                position=pos,
                title=doc.title,
                source=doc.source,
                content_hash=doc.content_hash,
                meta=doc.meta,
            )
        )
    return chunks


def chunk_documents(docs: Sequence[Document], cfg: ChunkConfig, count_tokens: TokenCounter) -> list[Chunk]:
    return [c for d in docs for c in chunk_document(d, cfg, count_tokens)]
