import pytest

from ragtune.config import RagConfig
from ragtune.errors import InputError
from ragtune.generators import ScriptedGenerator
from ragtune.ingest import ingest_paths
from ragtune.rag import answer, answer_batch
from ragtune.retrieval import Retriever
from ragtune.stores import LanceStore


@pytest.fixture
def retriever(tmp_path, corpus_dir, embedder, small_chunking):
    ingest_paths([corpus_dir], tmp_path / "ix", embedder, small_chunking)
    return Retriever(LanceStore.open(tmp_path / "ix"), embedder, RagConfig(k=3))


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


def test_answer_cites_the_retrieved_chunk(retriever):
    gen = ScriptedGenerator(_cite_source_with("1889"))
    ans = answer("When was the Eiffel Tower built?", retriever, gen)
    assert ans.text == "1889" and not ans.abstained
    assert [c.doc_id for c in ans.citations] == ["corpus/paris.txt"]
    assert {c.chunk_id for c in ans.citations} <= {h.chunk.id for h in ans.hits}
    assert ans.timings.total_s >= ans.timings.generate_s > 0 and ans.tokens_in > 0


def test_abstains_when_sources_lack_answer(retriever):
    gen = ScriptedGenerator(_cite_source_with("Zanzibar"))
    ans = answer("What is the capital of Tanzania?", retriever, gen)
    assert ans.abstained and ans.citations == []


def test_batch_matches_single_and_bad_questions_are_refused(retriever):
    gen = ScriptedGenerator(_cite_source_with("Rome"))
    qs = ["Where is the Colosseum?", "Which city has the Colosseum?"]
    batch = answer_batch(qs, retriever, gen)
    assert [a.text for a in batch] == [answer(q, retriever, gen).text for q in qs]
    with pytest.raises(InputError, match="empty"):
        answer("   ", retriever, gen)
    with pytest.raises(InputError, match="limit"):
        answer("x" * 5000, retriever, gen)
