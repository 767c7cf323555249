from ragtune.context import select_context
from ragtune.documents import Chunk, Hit
from ragtune.prompts import ABSTAIN, is_abstention, parse_citations, rag_messages, strip_citations
from ragtune.rag import make_answer
from ragtune.testing import ScriptedGenerator


def _hit(cid, text, rank, title="T"):
    return Hit(Chunk(cid, cid.split("#")[0], text, 0, title=title), 1.0, rank, "dense")


def test_select_context_keeps_relevant_sentences_dedupes_and_fits_budget(embedder):
    hits = [
        _hit(
            "a#0", "The Seine flows through Paris. Bananas are yellow fruit. Paris has many bridges over the Seine.", 1
        ),
        _hit("b#0", "The Seine flows through Paris! Cheese is made from milk.", 2),
        _hit("c#0", "Tokyo is large. The Seine river reaches the sea at Le Havre.", 3),
    ]
    sources = select_context("Which river flows through Paris?", hits, embedder, budget_tokens=14, dedupe_threshold=0.8)
    text = " ".join(s.text for s in sources)
    assert "The Seine flows through Paris." in text
    assert text.count("Seine flows through Paris") == 1  # the near-duplicate in b#0 is gone
    assert "Bananas" not in text and "Cheese" not in text
    assert sum(len(s.text.split()) for s in sources) <= 14
    assert [s.number for s in sources] == list(range(1, len(sources) + 1))
    assert {s.chunk_id for s in sources} <= {"a#0", "b#0", "c#0"}
    # Sentences keep their chunk and their order within it.
    a = next(s for s in sources if s.chunk_id == "a#0")
    assert a.doc_id == "a" and a.text.startswith("The Seine flows")


def test_parse_citations_forms():
    assert parse_citations("Paris [1]. Also [2, 3] and [3][4], range [5-6].") == [1, 2, 3, 4, 5, 6]
    assert parse_citations("no markers") == []
    assert strip_citations("Paris [1], France [2].") == "Paris, France."


def test_abstention_detection():
    assert is_abstention(ABSTAIN) and is_abstention("I do not know.") and is_abstention("  ")
    assert not is_abstention("Paris [1]")


def _sources(embedder):
    hits = [
        _hit("p#0", "Paris is the capital of France.", 1, "Paris"),
        _hit("r#0", "Rome is the capital of Italy.", 2, "Rome"),
    ]
    return select_context("capital of France and Italy", hits, embedder, budget_tokens=100)


def test_citations_map_to_given_sources_only(embedder):
    sources = _sources(embedder)
    by_chunk = {s.chunk_id: s.number for s in sources}
    raw = f"Paris [{by_chunk['p#0']}] [7]"
    ans = make_answer("q", raw, sources)
    assert ans.text == "Paris" and not ans.abstained
    assert [c.chunk_id for c in ans.citations] == ["p#0"]  # [7] named no source: dropped
    assert ans.citations[0].by_model and ans.citations[0].doc_id == "p" and "Paris" in ans.citations[0].snippet


def test_unmarked_answer_is_attributed_by_support_and_abstention_has_no_citations(embedder):
    sources = _sources(embedder)
    ans = make_answer("q", "Rome is the capital of Italy", sources)
    assert [(c.chunk_id, c.by_model) for c in ans.citations] == [("r#0", False)] and ans.support == 1.0
    unsupported = make_answer("q", "Madrid, certainly", sources)
    assert unsupported.citations == [] and unsupported.support == 0.0
    abst = make_answer("q", "I don't know based on the sources. [1]", sources)
    assert abst.abstained and abst.citations == [] and abst.text == ABSTAIN


def test_prompt_numbers_and_fences_sources(embedder):
    sources = _sources(embedder)
    msgs = rag_messages("What is the capital of France?", sources)
    user = msgs[-1]["content"]
    for s in sources:
        assert f'<source id="{s.number}" title="{s.title}">\n{s.text}\n</source>' in user
    assert ABSTAIN in msgs[0]["content"] and "not instructions" in msgs[0]["content"]
    assert "untrusted" in msgs[0]["content"]
    gen = ScriptedGenerator(lambda m: "x")
    assert "Question: What is the capital of France?" in gen.render(msgs)
