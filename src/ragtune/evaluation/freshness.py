"""Freshness ("dynamic vs static"): edit facts in the corpus, then see who answers with the new value.

An edit replaces a question's gold answer in its passage with another value of the same kind
(a year with another year, a number with another number, a name with another name from the
corpus), so the edited passage stays plausible and only retrieval of the new text can know it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..documents import Document, QAExample
from .metrics import normalize_answer

_YEAR = re.compile(r"^(1[0-9]{3}|20[0-9]{2})$")
_NUMBER = re.compile(r"^[0-9][0-9,.]*$")


def value_kind(answer: str) -> str:
    a = answer.strip()
    if _YEAR.match(a):
        return "year"
    if _NUMBER.match(a):
        return "number"
    words = a.split()
    if words and all(w[:1].isupper() for w in words if w.isalpha()) and any(w[:1].isupper() for w in words):
        return "name"
    return "other"


@dataclass(frozen=True)
class FactEdit:
    example: QAExample  # the question, its gold answers now the new value
    doc_id: str
    old: str
    new: str
    kind: str


def _new_value(old: str, kind: str, pool: Sequence[str], text: str, rng: random.Random) -> str | None:
    if kind == "year":
        for _ in range(20):
            cand = str(int(old) + rng.choice([-1, 1]) * rng.randint(3, 40))
            if cand not in text:
                return cand
        return None
    if kind == "number":
        digits = old.replace(",", "")
        try:
            value = float(digits)
        except ValueError:
            return None
        cand = value * rng.choice([2, 3, 5]) + rng.randint(1, 9)
        out = str(int(cand)) if value.is_integer() else f"{cand:.1f}"
        return out if out not in text else None
    options = [
        p for p in pool if value_kind(p) == kind and normalize_answer(p) != normalize_answer(old) and p not in text
    ]
    return rng.choice(options) if options else None


def edit_facts(
    docs: Sequence[Document], examples: Sequence[QAExample], n: int, seed: int = 0
) -> tuple[list[Document], list[FactEdit]]:
    """Pick up to `n` examples (one per document) whose answer appears verbatim in their
    gold passage, and replace it there (every occurrence) with a new value of the same kind.
    Returns the edited documents and the edits (questions whose gold is the new value)."""
    rng = random.Random(seed)
    by_id = {d.id: d for d in docs}
    pool = sorted({a for e in examples for a in e.answers if 0 < len(a) <= 40})
    candidates = [e for e in examples if e.doc_ids and e.doc_ids[0] in by_id and e.answers]
    rng.shuffle(candidates)
    edited: dict[str, Document] = {}
    edits: list[FactEdit] = []
    for ex in candidates:
        if len(edits) >= n:
            break
        doc_id = ex.doc_ids[0]
        if doc_id in edited:
            continue
        old = min(ex.answers, key=len)
        text = by_id[doc_id].text
        if len(old) < 2 or old not in text:
            continue
        kind = value_kind(old)
        new = _new_value(old, kind, pool, text, rng)
        if not new:
            continue
        edited[doc_id] = replace(by_id[doc_id], text=text.replace(old, new))
        edits.append(FactEdit(replace(ex, answers=(new,), context=edited[doc_id].text), doc_id, old, new, kind))
    return list(edited.values()), edits


def is_fresh(answer: str, edit: FactEdit) -> bool:
    """The answer gives the new value (and not only the old one)."""
    a = normalize_answer(answer)
    return bool(normalize_answer(edit.new)) and normalize_answer(edit.new) in a


def is_stale(answer: str, edit: FactEdit) -> bool:
    a = normalize_answer(answer)
    return normalize_answer(edit.old) in a and not is_fresh(answer, edit)
