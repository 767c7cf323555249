"""Answer candidates in a sentence: numbers and dates, named entities (capitalised spans),
short key phrases (YAKE, an unsupervised keyword extractor) and noun phrases (`noun_chunks`: a
word-class lexicon, no tagger), each an exact span of the text."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

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


def sentence_candidates(sentence: str, max_candidates: int = 4, keywords: list[str] | None = None) -> list[Candidate]:
    """Candidates in one sentence, best first: dates, numbers, entities, then key phrases."""
    found: dict[str, Candidate] = {}

    def add(text: str, kind: str) -> None:
        text = _clean(text)
        if text and text not in found and _ok(text, sentence) and text in sentence:
            if any(text in c.text or c.text in text for c in found.values()):
                return  # overlapping spans: keep the first (higher-priority) one
            found[text] = Candidate(text, kind, sentence.index(text))

    for m in _DATE.finditer(sentence):
        add(m.group(0), "date")
    for m in _NUMBER.finditer(sentence):
        add(m.group(0), "number")
    for m in _ENTITY.finditer(sentence):
        # The sentence's first word is capitalised anyway: it is an entity only as part of a longer span.
        if m.start() == 0 and " " not in m.group(0):
            continue
        add(m.group(0), "entity")
    for kw in keywords or []:
        if kw in sentence:
            add(kw, "phrase")
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


def target_candidates(sentence: str, max_candidates: int = 6, keywords: list[str] | None = None) -> list[Candidate]:
    """Answer targets for synthetic questions in one sentence, best first: its dates, numbers and
    entities (`sentence_candidates`), then its noun phrases (`noun_chunks`) that end on a word of one
    of the passage's key phrases (`keywords`), none overlapping another. The key phrases themselves
    are not targets: YAKE's n-grams cross phrase boundaries ("perceived as complicated",
    "dominated marine applications") where the reader, which answers with noun phrases, rarely
    lands. On the sentences of 400 SQuAD dev paragraphs of the held-out articles, 16.0% of these
    targets are a real question's gold answer and they hold 36.6% of the gold answers, where the
    key phrases in place of the noun phrases gave 13.8% and 32.9%."""
    key_words = {w.lower() for k in keywords or [] for w in k.split()}
    phrases = [p for p in noun_chunks(sentence) if p.split()[-1].lower() in key_words]
    return sentence_candidates(sentence, max_candidates, phrases)  # in the place of the key phrases


def looks_like_prose(text: str) -> bool:
    """Enough letters and words to be worth asking about (not a table of numbers, not binary-ish)."""
    if not text.strip():
        return False
    letters = sum(ch.isalpha() for ch in text)
    ascii_letters = sum(ch.isascii() and ch.isalpha() for ch in text)
    return letters / max(len(text), 1) > 0.55 and len(text.split()) >= 6 and ascii_letters / max(letters, 1) > 0.8
