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


def chunk_document(doc: Document, cfg: ChunkConfig, count_tokens: TokenCounter) -> list[Chunk]:
    """Pack sentences into chunks of at most `cfg.chunk_tokens`, repeating up to
    `cfg.overlap_tokens` of trailing sentences at the start of the next chunk of the same
    paragraph, and preferring to start a new chunk where a paragraph starts."""
    units: list[tuple[int, str]] = []  # (paragraph index, sentence)
    for p_i, para in enumerate(split_paragraphs(doc.text)):
        units.extend((p_i, s) for s in split_sentences(para))
    if not units:
        return []
    sizes = count_tokens([s for _, s in units])
    limit = cfg.chunk_tokens
    expanded: list[tuple[int, str, int]] = []
    for (p_i, s), n in zip(units, sizes):
        if n <= limit:
            expanded.append((p_i, s, n))
        else:
            parts = _split_long(s, n, limit)
            expanded.extend((p_i, part, c) for part, c in zip(parts, count_tokens(parts)))

    groups: list[list[tuple[int, str, int]]] = []
    cur: list[tuple[int, str, int]] = []
    cur_n = 0
    for i, (p_i, s, n) in enumerate(expanded):
        new_para = bool(cur) and p_i != cur[-1][0]
        if new_para and cur_n >= limit // 2:
            # Start the paragraph in a fresh chunk unless the rest of it fits here.
            para_rest = sum(u[2] for u in expanded[i:] if u[0] == p_i)
            if cur_n + para_rest > limit:
                groups.append(cur)
                cur, cur_n = [], 0
        if cur and cur_n + n > limit:
            groups.append(cur)
            carry: list[tuple[int, str, int]] = []
            carry_n = 0
            for u in reversed(cur):
                if u[0] != p_i or carry_n + u[2] > cfg.overlap_tokens or len(carry) + 1 >= len(cur):
                    break
                carry.insert(0, u)
                carry_n += u[2]
            if carry_n + n > limit:
                carry, carry_n = [], 0
            cur, cur_n = carry, carry_n
        cur.append((p_i, s, n))
        cur_n += n
    if cur:
        groups.append(cur)

    chunks = []
    for pos, group in enumerate(groups):
        text_parts: list[str] = []
        for j, (p_i, s, _) in enumerate(group):
            if j and p_i != group[j - 1][0]:
                text_parts.append("\n\n")
            elif j:
                text_parts.append(" ")
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
