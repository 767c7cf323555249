import pytest

from ragtune.config import RagConfig
from ragtune.errors import ConfigError, InputError
from ragtune.index import Index
from ragtune.rag import Pipeline
from ragtune.testing import ScriptedGenerator


@pytest.fixture
def index(tmp_path, corpus_dir, embedder, small_chunking):
    Index.create(tmp_path / "ix", embedder=embedder, chunking=small_chunking).ingest([corpus_dir])
    return Index.open(tmp_path / "ix")


def _cite_source_with(word):
    """A scripted model that cites whichever numbered source mentions `word`."""

    def respond(messages):
        user = messages[-1]["content"]
        for block in user.split("<source id=")[1:]:
            if word in block:
                number = block.split('"')[1]
                return f"{word} [{number}]"
        return "I don't know based on the sources."

    return respond


def test_answer_cites_the_retrieved_chunk(index):
    gen = ScriptedGenerator(_cite_source_with("1889"))
    ans = Pipeline(index, gen, RagConfig(k=3)).answer("When was the Eiffel Tower built?")
    assert ans.text == "1889" and not ans.abstained
    assert [c.doc_id for c in ans.citations] == ["corpus/paris.txt"]
    assert {c.chunk_id for c in ans.citations} <= {h.chunk.id for h in ans.hits}
    assert ans.timings.total_s >= ans.timings.generate_s > 0 and ans.tokens_in > 0


def test_abstains_when_sources_lack_answer(index):
    gen = ScriptedGenerator(_cite_source_with("Zanzibar"))
    ans = Pipeline(index, gen, RagConfig(k=3)).answer("What is the capital of Tanzania?")
    assert ans.abstained and ans.citations == []


def test_batch_matches_single_and_bad_questions_are_refused(index):
    pipe = Pipeline(index, ScriptedGenerator(_cite_source_with("Rome")), RagConfig(k=3))
    qs = ["Where is the Colosseum?", "Which city has the Colosseum?"]
    batch = pipe.answer_batch(qs)
    assert [a.text for a in batch] == [pipe.answer(q).text for q in qs]
    for bad, why in (("   ", "empty"), ("x" * 5000, "limit")):
        for call in (pipe.answer, lambda q: list(pipe.stream(q)), lambda q: pipe.answer_batch(["ok?", q])):
            with pytest.raises(InputError, match=why):
                call(bad)


def test_stream_yields_pieces_then_the_same_answer_as_answer(index):
    pipe = Pipeline(index, ScriptedGenerator(_cite_source_with("1889")), RagConfig(k=3))
    *pieces, final = pipe.stream("When was the Eiffel Tower built?")
    assert "".join(pieces).strip() == final.raw and len(pieces) >= 2
    assert final.text == pipe.answer("When was the Eiffel Tower built?").text == "1889"
    assert [c.doc_id for c in final.citations] == ["corpus/paris.txt"] and final.hits


def test_closed_book_is_index_none(index):
    gen = ScriptedGenerator(lambda m: "Paris [1]")
    ans = Pipeline(None, gen).answer("What is the capital of France?")
    assert ans.text == "Paris" and ans.hits == [] and ans.citations == [] and ans.sources == []
    assert "<source" not in gen.seen[-1][-1]["content"]  # the model saw no retrieved text
    *_, streamed = Pipeline(None, gen).stream("What is the capital of France?")
    assert streamed.text == "Paris" and streamed.hits == []


def test_pipeline_uses_the_settings_recorded_in_the_index(index):
    index.set_retrieval(k=1, mode="bm25")
    reopened = Index.open(index.url)
    pipe = Pipeline(reopened, ScriptedGenerator(lambda m: "x"))
    assert (pipe.config.k, pipe.config.mode) == (1, "bm25")
    assert len(pipe.answer("Where is the Colosseum?").hits) == 1
    assert Pipeline(reopened, ScriptedGenerator(lambda m: "x"), RagConfig(k=2)).config.k == 2  # an explicit config wins
    with pytest.raises(ConfigError, match="unknown retrieval settings"):
        index.set_retrieval(colour="red")
    with pytest.raises(ConfigError, match="mode"):
        index.set_retrieval(mode="telepathy")
