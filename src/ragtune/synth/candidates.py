"""Answer candidates in a sentence: numbers and dates, named entities (capitalised spans),
short key phrases (YAKE, an unsupervised keyword extractor) and noun phrases (`noun_chunks`: a
word-class lexicon, no tagger), each an exact span of the text."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_DATE = re.compile(
    rf"\b(?:(?:\d{{1,2}} )?(?:{MONTHS})(?: \d{{1,2}})?,? \d{{4}}|(?:{MONTHS}) \d{{1,2}}|(?:1[0-9]|20)\d{{2}}s?)\b"
)
_NUMBER = re.compile(
    r"(?<![\w.])(?:[$£€]\s?)?\d[\d,]*(?:\.\d+)?"
    r"(?:\s?(?:%|percent|per cent|million|billion|thousand|hundred|km|kilometres?|kilometers?|miles?|metres?|"
    r"meters?|feet|kg|tonnes?|tons?|years?|days?|hours?|minutes?|people|species))?(?![\w])"
)
# A capitalised word, optionally followed by more capitalised words joined by connectors ("of", "de", "the", "and").
_ENTITY = re.compile(
    r"\b[A-Z][\w'’\-]*[a-zA-Z0-9](?:\s+(?:(?:of|de|du|la|the|and|van|von|del|al)\s+)?[A-Z][\w'’\-]*[a-zA-Z0-9])*"
)
STOP = set(
    "a an the and or but of to in on at by for with from as is are was were be been being it its this that these those "
    "their his her they he she we you i which who whom whose what when where why how than then there here also not no "
    "into over under after before during about between such can could may might will would shall should do does did "
    "has have had more most some any each other many much very".split()
)


@dataclass(frozen=True)
class Candidate:
    text: str  # an exact span of the sentence
    kind: str  # date | number | entity | phrase
    start: int  # character offset in the sentence


def _clean(span: str) -> str:
    span = span.strip(" ,;:.()[]\"'“”‘’")
    words = span.split()
    while len(words) > 1 and words[0].lower() in STOP:  # "The Eiffel Tower" -> "Eiffel Tower"
        words = words[1:]
    return " ".join(words) if len(words) != len(span.split()) else span


def _ok(text: str, sentence: str) -> bool:
    words = text.split()
    if not words or len(words) > 6 or len(text) < 2:
        return False
    if words[0].lower() in STOP or words[-1].lower() in STOP:
        return False
    # The whole sentence is not an answer, nor is its first word alone (usually the subject pronoun).
    return len(text) < 0.8 * len(sentence)


def _spans(sentence: str, phrases: list[str]):
    """(span, kind) of a sentence, cleaned, in priority order: dates, numbers, entities, then `phrases`;
    each a span of the sentence that `_ok` accepts, repeats included."""
    found = [(m.group(0), "date") for m in _DATE.finditer(sentence)]
    found += [(m.group(0), "number") for m in _NUMBER.finditer(sentence)]
    # The sentence's first word is capitalised anyway: it is an entity only as part of a longer span.
    found += [(m.group(0), "entity") for m in _ENTITY.finditer(sentence) if m.start() or " " in m.group(0)]
    found += [(p, "phrase") for p in phrases if p in sentence]
    for text, kind in found:
        text = _clean(text)
        if text and _ok(text, sentence) and text in sentence:
            yield text, kind


def _overlaps(text: str, kept) -> bool:
    """Whether `text` is, or lies in or around, one of the `kept` candidates."""
    return any(text in c.text or c.text in text for c in kept)


def sentence_candidates(sentence: str, max_candidates: int = 4, keywords: list[str] | None = None) -> list[Candidate]:
    """Candidates in one sentence, best first: dates, numbers, entities, then key phrases."""
    found: dict[str, Candidate] = {}
    for text, kind in _spans(sentence, keywords or []):
        if _overlaps(text, found.values()):
            continue  # keep the first (higher-priority) one
        found[text] = Candidate(text, kind, sentence.index(text))
    return list(found.values())[:max_candidates]


def passage_keywords(text: str, top: int = 20) -> list[str]:
    """Key phrases of a passage (YAKE: statistical, no model), most relevant first."""
    import yake

    try:
        extractor = yake.KeywordExtractor(lan="en", n=3, top=top, dedupLim=0.7)
        return [kw for kw, _ in extractor.extract_keywords(text)]
    except (ValueError, ZeroDivisionError, IndexError):  # YAKE trips on text with no words
        return []


_TOKEN = re.compile(r"[A-Za-z][\w'’\-]*|\d[\w,.]*|[^\w\s]")


@lru_cache(maxsize=65536)
def word_classes(word: str) -> frozenset[str]:
    """The parts of speech an English word can take (lemminflect's lexicon: NOUN, VERB, ADJ, ADV,
    ...); empty for a word it does not know — a name, a term, a number."""
    from lemminflect import getAllLemmas

    return frozenset(getAllLemmas(word.lower()))


def _nominal(word: str) -> bool:  # can head a noun phrase: a noun, or a word the lexicon does not know
    classes = word_classes(word)
    return not classes or bool(classes & {"NOUN", "PROPN"})


# Function words the lexicon does not know, or knows as adjectives ("so", "every"): they end a noun phrase.
FUNCTION = STOP | set(
    "because although though per upon against among amongst toward towards despite until unless whereas nor onto "
    "beside unto every so such all both several few another own same only even just still our ours your yours my "
    "mine him them us me myself itself themselves himself herself ourselves whoever whatever whichever".split()
)


def _in_phrase(word: str) -> bool:  # can sit inside one: a noun or an adjective (or unknown), not a function word
    classes = word_classes(word)
    return word.lower() not in FUNCTION and (not classes or bool(classes & {"NOUN", "PROPN", "ADJ", "NUM"}))


def noun_chunks(sentence: str, max_words: int = 4) -> list[str]:
    """Noun phrases of a sentence found with a word-class lexicon instead of a tagger: the maximal
    runs of words that can be nouns or adjectives (no function word, verb, adverb or punctuation
    inside), cut back to end on a word that can be a noun; those of at most `max_words` words.
    Lower-case ones are what the other candidates miss: "temperature and light" is two of them
    ("temperature", "light"), "certain rivers", "curriculum". Of 1032 SQuAD dev questions (200
    paragraphs outside the held-out articles) the reader's candidates held the gold answer exactly
    for 51% without them, 68% with them (`benchmarks/span_candidates.py`)."""
    tokens = [(m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(sentence)]
    out, run = [], []
    for token in [*tokens, ("", 0, 0)]:
        word = token[0]
        if word[:1].isalpha() and _in_phrase(word):
            run.append(token)
            continue
        while run and not _nominal(run[-1][0]):
            run.pop()
        if run and len(run) <= max_words:
            out.append(sentence[run[0][1] : run[-1][2]])
        run = []
    return out


def candidate_pool(sentence: str) -> dict[str, str]:
    """Every answer candidate of a sentence (text -> kind), overlapping ones included: its dates,
    numbers and entities, then its noun phrases (`noun_chunks`) as "phrase"."""
    out: dict[str, str] = {}
    for text, kind in _spans(sentence, noun_chunks(sentence)):
        out.setdefault(text, kind)
    return out


@dataclass(frozen=True)
class PassageContext:
    """What a target's features need to know of its passage: the words of its key phrases (YAKE)
    with the rank of the first phrase holding each, and how often each word occurs in it."""

    key_rank: dict[str, int]
    word_counts: dict[str, int]

    @classmethod
    def of(cls, text: str, keywords: list[str] | None = None) -> PassageContext:
        key_rank: dict[str, int] = {}
        for rank, k in enumerate(keywords or []):
            for w in k.split():
                key_rank.setdefault(w.lower(), rank)
        return cls(key_rank, Counter(w.lower() for w in _WORD.findall(text)))


_WORD = re.compile(r"[A-Za-z][\w'’\-]*")
_PREPOSITIONS = set(
    "of in on at by for from with to as into than about during after before under over between through within "
    "without against among".split()
)
_DETERMINERS = set("the a an its their his her this that these those".split())
TARGET_KINDS = ("date", "number", "entity", "phrase")


def _verb_only(word: str) -> bool:  # a word the lexicon knows as a verb and never as a noun
    classes = word_classes(word)
    return "VERB" in classes and not classes & {"NOUN", "PROPN"}


def target_features(text: str, kind: str, sentence: str, sentence_index: int, ctx: PassageContext) -> list[float]:
    """The target scorer's features of candidate `text` (an exact span of `sentence`, the
    `sentence_index`-th of its passage), in `TARGET_FEATURES` order: its kind, length and case, the
    words around it (a preposition or determiner before it, punctuation or a verb after it: answers
    sit in argument slots), whether its last word is a word of the passage's key phrases, and how
    often that word recurs in the passage."""
    start = sentence.index(text)
    before = _TOKEN.findall(sentence[:start])
    after = _TOKEN.findall(sentence[start + len(text) :])
    prev = before[-1].lower() if before else ""
    nxt = after[0].lower() if after else ""
    words = text.split()
    head = words[-1].lower()
    head_classes = word_classes(head)
    return [
        *(float(kind == k) for k in TARGET_KINDS),
        float(len(words)),
        float(len(words) == 1),
        float(text[:1].isupper()),
        float(text.islower()),
        float(start == 0),
        start / max(len(sentence), 1),
        float(head in ctx.key_rank),
        1 / (1 + ctx.key_rank.get(head, 99)),
        math.log1p(ctx.word_counts.get(head, 0)),
        float(prev in _PREPOSITIONS),
        float(prev == "of"),
        float(prev in _DETERMINERS),
        float(prev.isalpha() and _verb_only(prev)),
        float(prev == ","),
        float(not prev),
        float(nxt in {",", ".", ";", ":", ")", "?", ""}),
        float(nxt == "of"),
        float(nxt.isalpha() and _verb_only(nxt)),
        float(nxt in {"and", "or"}),
        float(len(head_classes) > 1),
        float(not head_classes),
        float(any(ch.isdigit() for ch in text)),
        math.log(len(sentence.split()) + 1),
        float(sentence_index == 0),
    ]


TARGET_FEATURES = (
    *(f"kind_{k}" for k in TARGET_KINDS),
    "words", "one_word", "capitalised", "lower_case", "at_start", "position",
    "key_headed", "key_rank", "head_count",
    "after_preposition", "after_of", "after_determiner", "after_verb", "after_comma", "first_word",
    "before_punctuation", "before_of", "before_verb", "before_and",
    "head_ambiguous", "head_unknown", "has_digit", "sentence_words", "first_sentence",
)  # fmt: skip


@dataclass(frozen=True)
class TargetScorer:
    """A logistic regression on the features and their pairwise products (a quadratic form):
    score = w . x + x' Q x + b on the raw features x (the fit's standardisation folded in)."""

    linear: np.ndarray
    quadratic: np.ndarray  # symmetric (features x features)
    bias: float

    def scores(self, rows: np.ndarray) -> np.ndarray:
        return rows @ self.linear + np.einsum("ij,jk,ik->i", rows, self.quadratic, rows) + self.bias

    def to_json(self) -> dict:
        return {"features": list(TARGET_FEATURES), "linear": self.linear.tolist(),
                "quadratic": self.quadratic.tolist(), "bias": self.bias}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict) -> TargetScorer:
        if tuple(d["features"]) != TARGET_FEATURES:
            raise ValueError("target scorer: its features are not this version's (re-run scripts/fit_target_scorer.py)")
        return cls(np.array(d["linear"]), np.array(d["quadratic"]), float(d["bias"]))


# Below it a candidate is no target: on the held-out articles' sentences, the candidates the scorer gives
# under 0.04 are 24% of all and a gold answer for 3.1% (those above: 13.6%); they hold 6.7% of the gold answers
# ("up", "first", "year", "processes", "methods").
MIN_TARGET_PROBABILITY = 0.04


@lru_cache(maxsize=1)
def target_scorer() -> TargetScorer:
    """The bundled scorer (`data/target-scorer.json`, fitted by `scripts/fit_target_scorer.py`)."""
    from importlib import resources

    path = resources.files("ragtune").joinpath("data/target-scorer.json")
    return TargetScorer.from_json(json.loads(path.read_text(encoding="utf-8")))


def target_candidates(
    sentence: str, max_candidates: int = 6, keywords: list[str] | None = None, sentence_index: int = 1,
    ctx: PassageContext | None = None, scorer: TargetScorer | None = None,
    min_probability: float = MIN_TARGET_PROBABILITY,
) -> list[Candidate]:  # fmt: skip
    """Answer targets for synthetic questions in one sentence, likeliest first: of its candidates
    (`candidate_pool`: dates, numbers, entities, noun phrases), those a person writing questions
    would most likely have picked, by a scorer fitted on which of them SQuAD's question writers
    chose (`target_scorer`); none overlapping a likelier one. `keywords` are the passage's key
    phrases (`passage_keywords`), `ctx` the passage (default: the sentence alone). On the sentences of
    the held-out articles' SQuAD dev paragraphs that hold a gold answer, the first target is a gold
    answer for 35.8%, where the rule before it (dates, numbers, entities, then noun phrases ending on
    a key phrase's word) gave 26.6% (`scripts/fit_target_scorer.py`). Candidates the scorer gives
    less than `min_probability` are no targets."""
    pool = candidate_pool(sentence)
    if not pool:
        return []
    ctx = ctx or PassageContext.of(sentence, keywords)
    texts = list(pool)
    rows = np.array([target_features(t, pool[t], sentence, sentence_index, ctx) for t in texts])
    scores = (scorer or target_scorer()).scores(rows)
    out: list[Candidate] = []
    floor = math.log(min_probability / (1 - min_probability)) if min_probability > 0 else -math.inf
    for j in np.argsort(-scores, kind="stable"):
        if scores[j] < floor:
            break
        t = texts[j]
        if _overlaps(t, out):
            continue  # keep the likelier
        out.append(Candidate(t, pool[t], sentence.index(t)))
        if len(out) == max_candidates:
            break
    return out


def looks_like_prose(text: str) -> bool:
    """Enough letters and words to be worth asking about (not a table of numbers, not binary-ish)."""
    if not text.strip():
        return False
    letters = sum(ch.isalpha() for ch in text)
    ascii_letters = sum(ch.isascii() and ch.isalpha() for ch in text)
    return letters / max(len(text), 1) > 0.55 and len(text.split()) >= 6 and ascii_letters / max(letters, 1) > 0.8
