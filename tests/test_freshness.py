"""The fact editor's believability rules, how an answer is read as fresh or stale, and why a RAG answer missed."""

import numpy as np

from ragtune.context import Source
from ragtune.documents import Chunk, Document, Hit, QAExample
from ragtune.evaluation.freshness import FactEdit, edit_facts, is_fresh, is_stale, why_not_fresh
from ragtune.rag import Answer


def _edit(old, new, kind, doc="d"):
    return FactEdit(QAExample("q", "?", (new,), (doc,)), doc, old, new, kind)


def test_a_number_is_fresh_when_the_changed_number_is_given_without_its_unit():
    width = _edit("400 m", "680 m", "quantity")
    assert is_fresh("680", width) and is_fresh("about 680 m [1]", width)
    assert not is_fresh("400", width) and is_stale("400", width) and is_stale("400 m", width)
    assert not is_fresh("between 400 and 680", width)  # both: not the new value alone
    toll = _edit("30 to 50 thousand", "21 to 50 thousand", "quantity")
    assert not is_fresh("50 thousand", toll) and is_fresh("21 to 50 thousand", toll) and is_fresh("21", toll)
    date = _edit("September 2001", "September 1978", "date")
    assert is_fresh("1978", date) and not is_fresh("September", date)
    # whole words only: a longer number that contains the new one is not it
    assert not is_fresh("16900", _edit("1654", "1690", "year")) and is_fresh("in 1690.", _edit("1654", "1690", "year"))
    # a name must be given whole
    assert not is_fresh("Lower", _edit("Rhine Gorge", "Lower Rhine", "name"))


def test_editor_keeps_years_and_counts_in_words_and_skips_numbers_that_answer_who_or_where():
    docs = [
        Document("A/0", "In October 1972 connections to the network were completed."),
        Document("A/1", "Kenya won six gold medals in Beijing."),
        Document("A/2", "The Pope celebrated Mass in Victory Square in 1979."),
    ]
    exs = [
        QAExample("q0", "What completed the triad?", ("1972 connections",), ("A/0",)),
        QAExample("q1", "How many gold medals did Kenya win?", ("six",), ("A/1",)),
        QAExample("q2", "Where did the Pope celebrate Mass?", ("1979",), ("A/2",)),
    ]
    for seed in range(6):
        _, edits = edit_facts(docs, exs, n=5, seed=seed)
        by_q = {e.example.id: e for e in edits}
        year, rest = by_q["q0"].new.split(" ", 1)
        assert rest == "connections" and 1932 <= int(year) <= 2012 and year != "1972"  # a year, not "3400"
        assert by_q["q1"].new in ("two", "three", "four", "five", "seven", "eight", "nine")
        assert "q2" not in by_q


def test_editor_keeps_a_share_at_most_100_percent_and_moves_a_temperature_a_little():
    """Rated edits that no reader would believe: "90" -> "152" for "what percentage", a fever of
    41 °C -> 66 °C, a city's record of 104 °F -> 180 °F."""
    docs = [
        Document("B/0", "In the United States about 90 of the electrical power is made by steam turbines."),
        Document("B/1", "The party won 85% of the vote."),
        Document("B/2", "Plague fevers run as high as 41 °C."),
        Document("B/3", "The hottest temperature recorded was 104 °F in 1942."),
    ]
    exs = [
        QAExample("p0", "What percentage of electrical power is made by steam turbines?", ("90",), ("B/0",)),
        QAExample("p1", "How much of the vote did the party win?", ("85%",), ("B/1",)),
        QAExample("t0", "How high do plague fevers run?", ("41 °C",), ("B/2",)),
        QAExample("t1", "What is the hottest recorded temperature?", ("104 °F",), ("B/3",)),
    ]
    seen = set()
    for seed in range(12):
        _, edits = edit_facts(docs, exs, n=4, seed=seed)
        by_q = {e.example.id: float(e.new.split()[0].rstrip("%")) for e in edits}
        assert set(by_q) == {"p0", "p1", "t0", "t1"}
        assert 0 < by_q["p0"] <= 100 and by_q["p0"] != 90 and 0 < by_q["p1"] <= 100 and by_q["p1"] != 85
        assert 36 <= by_q["t0"] <= 46 and by_q["t0"] != 41  # within a tenth, not 0.5-1.9x
        assert 90 <= by_q["t1"] <= 115 and by_q["t1"] != 104  # +-10 %, two significant digits
        seen.add(by_q["t0"] > 41)
    assert seen == {True, False}  # both ways, as any number


class _Kinds:
    """An embedder that knows what kind of thing a name is: one dimension per kind and one per name,
    so two countries are at cosine 0.5, a country and a language at 0; "Germanys" is a spelling of
    "Germany" (cosine 0.99)."""

    NAMES = {"Germany": 0, "Switzerland": 0, "Swahili": 1, "Lorelei": 2, "Basel": 3}

    def embed(self, texts):
        out = np.zeros((len(texts), 4 + len(self.NAMES)))
        for i, t in enumerate(texts):
            name = "Germany" if t == "Germanys" else t
            out[i, self.NAMES[name]] = 1.0
            out[i, 4 + list(self.NAMES).index(name)] = 1.0
            out[i, 3] += 0.1 if t == "Germanys" else 0.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_editor_with_an_embedder_replaces_a_name_by_one_of_the_same_kind():
    docs = [Document("R/0", "The Rhine flows into the sea in Germany."), Document("R/1", "The rock is the Lorelei.")]
    answers = ["Switzerland", "Swahili", "Basel", "Germanys"]
    exs = [QAExample("q0", "Where does the Rhine reach the sea?", ("Germany",), ("R/0",)),
           QAExample("q1", "Where is the famous rock?", ("Lorelei",), ("R/1",))] + [
        QAExample(f"p{i}", "Where is it?", (a,), ("R/9",)) for i, a in enumerate(answers)]  # fmt: skip
    for seed in range(4):
        _, edits = edit_facts(docs, exs, n=5, seed=seed, embedder=_Kinds())
        by_q = {e.example.id: e.new for e in edits}
        assert by_q.get("q0") == "Switzerland" and "q1" not in by_q  # no place like a rock in the corpus
        _, plain = edit_facts(docs, exs, n=5, seed=seed)  # without an embedder: any name of the same shape
        assert {e.example.id for e in plain} == {"q0", "q1"}


def test_why_not_fresh_names_the_stage_that_missed():
    edit = _edit("1654", "1690", "year", doc="plague")
    hit = Hit(Chunk("plague#0", "plague", "The last outbreak was in 1690.", 0), 1.0, 1, "dense")
    other = Hit(Chunk("x#0", "x", "Unrelated.", 0), 1.0, 1, "dense")
    src = [Source(1, "plague#0", "plague", "", "The last outbreak was in 1690.", 1.0)]
    elsewhere = [Source(1, "x#0", "x", "", "Unrelated.", 1.0)]
    ans = lambda text, hits, sources, **kw: Answer("?", text, text, hits=hits, sources=sources, **kw)  # noqa: E731
    assert why_not_fresh(ans("1690", [hit], src), edit) == ""
    assert why_not_fresh(ans("1700", [other], elsewhere), edit) == "not retrieved"
    assert why_not_fresh(ans("1700", [hit], elsewhere), edit) == "not in the context"
    assert why_not_fresh(ans("-", [hit], src, abstained=True, confidence=0.1), edit) == "abstained (gate)"
    assert why_not_fresh(ans("-", [hit], src, abstained=True), edit) == "abstained (model)"
    assert why_not_fresh(ans("1654", [hit], src), edit) == "old value"
    assert why_not_fresh(ans("Oslo", [hit], src), edit) == "other"
