"""Freshness ("dynamic vs static"): edit facts in the corpus, then see who answers with the new value.

An edit replaces a question's gold answer in its passage with a believable value of the same
type (a year with another year, a quantity with one of the same magnitude and unit, a person
with another person the corpus names), so the edited passage stays plausible and only retrieval
of the new text can know it.
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
# A quantity: optional currency, a number (or an ordinal), then a unit or the rest of a phrase:
# "$5 million", "4.8 days", "16th century", "25%", "40 metres deep".
_QUANTITY = re.compile(
    r"^(?P<pre>(?:about |around |over |nearly |some |[$£€]\s?)?)(?P<num>\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)"
    r"(?P<ord>st|nd|rd|th)?(?P<rest>(?:\s?%|\s+\S.*)?)$",
    re.I,
)
_DATE_YEAR = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})\b")
_MONTHS = "january february march april may june july august september october november december".split()
_TYPE_WORDS = re.compile(
    r"^\s*(?:in\s+)?(what|which|whose)\s+(?:kind\s+of\s+|type\s+of\s+|other\s+|former\s+)*([a-z]+)", re.I
)
_WH = re.compile(r"\b(who|whom|where|when|what|which|how many|how much|why|how)\b", re.I)


def value_kind(answer: str) -> str:
    a = answer.strip()
    if _YEAR.match(a):
        return "year"
    if _NUMBER.match(a):
        return "number"
    if _QUANTITY.match(a):
        return "quantity"
    if _DATE_YEAR.search(a) and any(m in a.lower() for m in _MONTHS):
        return "date"
    words = a.split()
    if words and all(w[:1].isupper() for w in words if w.isalpha()) and any(w[:1].isupper() for w in words):
        return "name"
    return "other"


def answer_type(question: str) -> str:
    """What the question asks for, coarsely: "what religion", "which city", "who", "where", ...
    A replacement value must answer a question of the same type, so a person stays a person."""
    m = _TYPE_WORDS.search(question)
    if m and m.group(2).lower() not in ("is", "was", "are", "were", "did", "does", "do", "has", "had", "the", "a"):
        return f"{m.group(1).lower()} {m.group(2).lower()}"
    m = _WH.search(question)
    return m.group(1).lower() if m else ""


@dataclass(frozen=True)
class FactEdit:
    example: QAExample  # the question, its gold answers now the new value
    doc_id: str
    old: str
    new: str
    kind: str


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _scaled(num: str, rng: random.Random) -> str:
    """Another number of the same magnitude and precision (0.5-0.9x or 1.2-1.9x; small counts +-1..3)."""
    commas = "," in num
    value = float(num.replace(",", ""))
    decimals = len(num.split(".")[1]) if "." in num else 0
    if decimals == 0 and value < 12:
        new = max(1.0, value + rng.choice([-1, 1]) * rng.randint(1, 3))
        new = value + rng.randint(1, 3) if new == value else new
    else:
        new = value * (rng.uniform(0.5, 0.9) if rng.random() < 0.5 else rng.uniform(1.2, 1.9))
    if decimals:
        return f"{new:.{decimals}f}"
    digits = len(str(int(value)))
    step = 10 ** max(digits - 2, 0)  # keep two significant digits: 3,400,000 -> 5,100,000
    out = int(round(new / step) * step)
    out = out if out != int(value) else out + step
    return f"{out:,}" if commas else str(out)


def _new_value(
    old: str, kind: str, pool: Sequence[tuple[str, str]], qtype: str, text: str, rng: random.Random
) -> str | None:
    if kind == "year":
        for _ in range(20):
            cand = str(int(old) + rng.choice([-1, 1]) * rng.randint(3, 40))
            if cand not in text and int(cand) <= 2025:
                return cand
        return None
    if kind == "date":  # "March 3, 1990": another year, the rest kept
        year = _DATE_YEAR.search(old).group(1)
        new_year = _new_value(year, "year", pool, qtype, text, rng)
        return old.replace(year, new_year) if new_year else None
    if kind in ("number", "quantity"):
        m = _QUANTITY.match(old) if kind == "quantity" else None
        pre, num, ordn, rest = (m["pre"], m["num"], m["ord"] or "", m["rest"]) if m else ("", old, "", "")
        if not re.fullmatch(r"\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?", num):
            return None
        for _ in range(10):
            if ordn:
                n = int(num) + rng.choice([-1, 1]) * rng.randint(1, 4)
                cand = f"{pre}{_ordinal(max(n, 1))}{rest}"
            elif _YEAR.match(num) and not rest:
                return _new_value(num, "year", pool, qtype, text, rng)
            else:
                cand = f"{pre}{_scaled(num, rng)}{rest}"
            if cand != old and cand not in text:
                return cand
        return None
    # A name or a phrase: another answer from the same article or folder, to a question of the
    # same type, with as many words — "Catholicism" becomes another religion the text talks about,
    # not a person or a network. A vague type ("what", "who" for a phrase) finds nothing believable.
    typed = " " in qtype or qtype in ("how many", "how much")
    if not qtype or qtype in ("what", "which", "how", "why") or (kind == "other" and not typed):
        return None
    options = [
        a for a, t in pool
        if t == qtype and value_kind(a) == kind and normalize_answer(a) != normalize_answer(old) and a not in text
        and len(a.split()) == len(old.split()) and _shape(a) == _shape(old)
    ]  # fmt: skip
    return rng.choice(options) if options else None


def _shape(value: str) -> tuple:
    """Coarse form of a name: "of"/"the" inside, a comma, an initial — "Albert C. Outler" and
    "Catholic Church" have different shapes."""
    words = value.split()
    return (
        any(w.lower() in ("of", "the", "and", "de", "von") for w in words),
        "," in value,
        any(re.fullmatch(r"[A-Z]\.", w) for w in words),
        any(ch.isdigit() for ch in value),
    )


def _group(doc_id: str) -> str:
    """Documents whose facts can stand in for each other: a SQuAD article, a folder."""
    return doc_id.rsplit("/", 1)[0] if "/" in doc_id else ""


def edit_facts(
    docs: Sequence[Document], examples: Sequence[QAExample], n: int, seed: int = 0
) -> tuple[list[Document], list[FactEdit]]:
    """Pick up to `n` examples (one per document) whose answer appears verbatim in their
    gold passage, and replace it there (every occurrence) with a believable new value of the
    same type: a year for a year, a number of the same magnitude and unit, an ordinal for an
    ordinal, and otherwise another answer of the corpus to a question asking for the same thing
    (who / where / what religion / which city ...). A fact with no believable substitute is left
    alone. Returns the edited documents and the edits (questions whose gold is the new value)."""
    rng = random.Random(seed)
    by_id = {d.id: d for d in docs}
    pools: dict[str, list[tuple[str, str]]] = {}
    for e in examples:
        group = _group(e.doc_ids[0]) if e.doc_ids else ""
        pools.setdefault(group, []).extend((a, answer_type(e.question)) for a in e.answers if 0 < len(a) <= 40)
    pools = {g: sorted(set(v)) for g, v in pools.items()}
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
        new = _new_value(old, kind, pools.get(_group(doc_id), []), answer_type(ex.question), text, rng)
        if not new:
            continue
        edited[doc_id] = replace(by_id[doc_id], text=text.replace(old, new))
        edits.append(FactEdit(replace(ex, answers=(new,), context=edited[doc_id].text), doc_id, old, new, kind))
    return list(edited.values()), edits


def edited_sentence(edit: FactEdit) -> str:
    """The sentence of the edited passage that carries the new value."""
    from ..chunking import split_sentences

    return next((s for s in split_sentences(edit.example.context) if edit.new in s), "")


def is_fresh(answer: str, edit: FactEdit) -> bool:
    """The answer gives the new value (and not only the old one)."""
    a = normalize_answer(answer)
    return bool(normalize_answer(edit.new)) and normalize_answer(edit.new) in a


def is_stale(answer: str, edit: FactEdit) -> bool:
    a = normalize_answer(answer)
    return normalize_answer(edit.old) in a and not is_fresh(answer, edit)
