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
_NUMBER_WORDS = "one two three four five six seven eight nine ten eleven twelve".split()
# Kinds whose value is a number: an answer gives the new value when it holds the numbers the edit
# changed ("680" for "680 m", "1978" for "27 September 1978"), see `is_fresh`.
NUMERIC_KINDS = ("year", "number", "quantity", "date")
# A replacement name must be about as close to the old one as two names of one kind are (MiniLM
# cosine: "Germany"-"Switzerland" 0.71, "Irena Bajerska"-"Maria Skłodowska-Curie" 0.56, but
# "Kenya"-"Swahili" 0.31, "Lorelei"-"Basel" 0.2), and not a spelling of it ("oxide"-"oxides" 0.93).
SIMILAR = (0.4, 0.9)


def value_kind(answer: str) -> str:
    a = answer.strip()
    if _YEAR.match(a):
        return "year"
    if _NUMBER.match(a) or a.lower() in _NUMBER_WORDS:
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


WIDE = (0.5, 0.9, 1.2, 1.9)  # a count, a length, money: another value of the same magnitude
NARROW = (0.9, 0.97, 1.03, 1.1)  # a temperature: a fever of 41 °C becomes 43 °C, not 66 °C


def _scaled(num: str, rng: random.Random, spread: tuple = WIDE, cap: float | None = None) -> str:
    """Another number of the same magnitude and precision (`spread`: down by its first pair's factors
    or up by its second's; small counts +-1..3), and not above `cap` (a share of at most 100 %)."""
    commas = "," in num
    value = float(num.replace(",", ""))
    decimals = len(num.split(".")[1]) if "." in num else 0
    if decimals == 0 and value < 12:
        new = max(1.0, value + rng.choice([-1, 1]) * rng.randint(1, 3))
        new = value + rng.randint(1, 3) if new == value else new
    else:
        down = rng.random() < 0.5 or (cap is not None and value * spread[2] > cap)
        new = value * (rng.uniform(spread[0], spread[1]) if down else rng.uniform(spread[2], spread[3]))
    if decimals:
        return f"{new:.{decimals}f}"
    digits = len(str(int(value)))
    step = 10 ** max(digits - 2, 0)  # keep two significant digits: 3,400,000 -> 5,100,000
    out = int(round(new / step) * step)
    out = out if out != int(value) else out + step
    return f"{out:,}" if commas else str(out)


def _bounds(num: str, rest: str, question: str) -> tuple[tuple, float | None]:
    """How far a number may move (`_scaled`'s spread and cap): a percentage of at most 100 stays at
    most 100 (the rated edits had "90" -> "152" for "what percentage"), a temperature moves a little
    (41 °C -> 66 °C for a fever, 104 °F -> 180 °F for a city's record)."""
    percent = bool(re.match(r"\s?%|\s+per\s?cent", rest, re.I)) or (
        not rest.strip() and bool(re.search(r"\bper\s?cent", question, re.I))
    )
    cap = 100.0 if percent and float(num.replace(",", "")) <= 100 else None
    temperature = bool(re.match(r"\s*(°|degrees?\b|K\b)", rest)) or bool(re.search(r"\btemperature", question, re.I))
    return (NARROW if temperature else WIDE), cap


def _new_value(
    old: str,
    kind: str,
    pool: Sequence[tuple[str, str]],
    qtype: str,
    text: str,
    rng: random.Random,
    embedder=None,
    question: str = "",
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
    if kind == "number" and old.lower() in _NUMBER_WORDS:  # "six" -> "four": a count in words stays one
        n = _NUMBER_WORDS.index(old.lower()) + 1
        options = [w for w in _NUMBER_WORDS[max(n - 4, 0) : n + 3] if w != old.lower() and w not in text.lower()]
        word = rng.choice(options) if options else None
        return word.capitalize() if word and old[:1].isupper() else word
    if kind in ("number", "quantity"):
        m = _QUANTITY.match(old) if kind == "quantity" else None
        pre, num, ordn, rest = (m["pre"], m["num"], m["ord"] or "", m["rest"]) if m else ("", old, "", "")
        if not re.fullmatch(r"\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?", num):
            return None
        for _ in range(10):
            if ordn:
                n = int(num) + rng.choice([-1, 1]) * rng.randint(1, 4)
                cand = f"{pre}{_ordinal(max(n, 1))}{rest}"
            elif _YEAR.match(num) and not pre:  # "1972 connections": a year, whatever follows it
                year = _new_value(num, "year", pool, qtype, text, rng)
                return f"{year}{rest}" if year else None
            else:
                cand = f"{pre}{_scaled(num, rng, *_bounds(num, rest, question))}{rest}"
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
    if options and embedder is not None:  # a name of the same kind: the most similar one that is not a variant
        vecs = embedder.embed([old, *options])
        sims = [float(v @ vecs[0]) for v in vecs[1:]]
        close = [(sim, a) for sim, a in zip(sims, options) if SIMILAR[0] <= sim < SIMILAR[1]]
        return max(close)[1] if close else None
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
    docs: Sequence[Document], examples: Sequence[QAExample], n: int, seed: int = 0, embedder=None
) -> tuple[list[Document], list[FactEdit]]:
    """Pick up to `n` examples (one per document) whose answer appears verbatim in their
    gold passage, and replace it there (every occurrence) with a believable new value of the
    same type: a year for a year, a number of the same magnitude and unit, an ordinal for an
    ordinal, and otherwise another answer of the corpus to a question asking for the same thing
    (who / where / what religion / which city ...). A fact with no believable substitute is left
    alone, and so is a number given as the answer to "who" or "where" (the question does not ask
    for what would be edited). With an `embedder`, a name is replaced only by one of the same kind
    (the most similar one within `SIMILAR`: a country for a country, not a language); without one,
    by a random name of the same shape. Returns the edited documents and the edits (questions
    whose gold is the new value)."""
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
        kind, qtype = value_kind(old), answer_type(ex.question)
        if kind in NUMERIC_KINDS and qtype in ("who", "whom", "where"):
            continue
        new = _new_value(old, kind, pools.get(_group(doc_id), []), qtype, text, rng, embedder, ex.question)
        if not new:
            continue
        edited[doc_id] = replace(by_id[doc_id], text=text.replace(old, new))
        edits.append(FactEdit(replace(ex, answers=(new,), context=edited[doc_id].text), doc_id, old, new, kind))
    return list(edited.values()), edits


def edited_sentence(edit: FactEdit) -> str:
    """The sentence of the edited passage that carries the new value."""
    from ..chunking import split_sentences

    return next((s for s in split_sentences(edit.example.context) if edit.new in s), "")


def _holds(answer: list[str], value: list[str]) -> bool:
    """`value`'s words appear in `answer`, in order and together (so "1690" is not in "16900")."""
    n = len(value)
    return n > 0 and any(answer[i : i + n] == value for i in range(len(answer) - n + 1))


def _changed(edit: FactEdit) -> tuple[list[str], list[str]]:
    """The numbers the edit wrote and the ones it removed ("400 m" -> "680 m": ["680"], ["400"])."""
    new, old = normalize_answer(edit.new).split(), normalize_answer(edit.old).split()
    digits = lambda words, other: [w for w in words if w not in other and any(c.isdigit() for c in w)]  # noqa: E731
    return digits(new, old), digits(old, new)


def is_fresh(answer: str, edit: FactEdit) -> bool:
    """The answer gives the new value (and not only the old one): it holds the new value, or, for
    a number, date or quantity, the numbers the edit changed and none it removed ("680" answers
    "680 m"; "50 thousand" does not answer "21 to 50 thousand", edited from "30 to 50 thousand")."""
    a = normalize_answer(answer).split()
    if _holds(a, normalize_answer(edit.new).split()):
        return True
    if edit.kind not in NUMERIC_KINDS:
        return False
    wrote, removed = _changed(edit)
    return bool(wrote) and all(w in a for w in wrote) and not any(w in a for w in removed)


def is_stale(answer: str, edit: FactEdit) -> bool:
    """The answer gives the old value (as `is_fresh` reads the new one) and not the new one."""
    a = normalize_answer(answer).split()
    if is_fresh(answer, edit):
        return False
    if _holds(a, normalize_answer(edit.old).split()):
        return True
    removed = _changed(edit)[1] if edit.kind in NUMERIC_KINDS else []
    return bool(removed) and all(w in a for w in removed)


MISS_CAUSES = ("not retrieved", "not in the context", "abstained (gate)", "abstained (model)", "old value", "other")


def why_not_fresh(answer, edit: FactEdit) -> str:
    """Why a RAG answer (`rag.Answer`) misses the new value, in the order a reader would check:
    the edited passage not retrieved, its new value not among the selected sentences, an
    abstention (by the gate, which sets a confidence, or by the model), the old value, something
    else. "" when the answer is fresh."""
    if is_fresh(answer.text, edit):
        return ""
    if not any(h.chunk.doc_id == edit.doc_id for h in answer.hits):
        return "not retrieved"
    if not any(s.doc_id == edit.doc_id and edit.new in s.text for s in answer.sources):
        return "not in the context"
    if answer.abstained:
        return "abstained (gate)" if answer.confidence is not None else "abstained (model)"
    return "old value" if is_stale(answer.text, edit) else "other"
