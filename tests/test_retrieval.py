from ragtune.config import RagConfig
from ragtune.documents import Chunk, Hit
from ragtune.index import Index
from ragtune.retrieval import reciprocal_rank_fusion


def _hits(ids, via):
    return [Hit(Chunk(i, i.split("#")[0], i, 0), 1.0, r, via) for r, i in enumerate(ids, start=1)]


def test_rrf_rewards_agreement_and_is_deterministic():
    dense = _hits(["a#0", "b#0", "c#0"], "dense")
    bm25 = _hits(["b#0", "d#0", "c#0"], "bm25")
    fused = reciprocal_rank_fusion([dense, bm25], k=4, rrf_k=60)
    # b: 1/62 + 1/61; c: 2/63 (in both lists, low); a: 1/61; d: 1/62.
    assert [h.chunk.id for h in fused] == ["b#0", "c#0", "a#0", "d#0"]
    assert [h.rank for h in fused] == [1, 2, 3, 4] and all(h.via == "hybrid" for h in fused)
    assert abs(fused[0].score - (1 / 62 + 1 / 61)) < 1e-12
    assert [h.chunk.id for h in reciprocal_rank_fusion([dense, bm25], k=2)] == ["b#0", "c#0"]


def test_modes_filters_and_k(tmp_path, corpus_dir, embedder, small_chunking):
    (corpus_dir / "docs.jsonl").write_text(
        '{"id": "j1", "text": "Lisbon is the capital of Portugal.", "meta": {"lang": "en"}}\n'
        '{"id": "j2", "text": "Lisboa e a capital de Portugal.", "meta": {"lang": "pt"}}\n'
    )
    Index.create(tmp_path / "ix", embedder=embedder, chunking=small_chunking).ingest([corpus_dir])
    retr = Index.open(tmp_path / "ix", embedder).retriever(RagConfig(k=2))
    for mode in ("dense", "bm25", "hybrid"):
        hits = retr.search("capital of Portugal", mode=mode)
        assert len(hits) <= 2 and hits[0].chunk.doc_id in ("j1", "j2")
        assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
        pt = retr.search("capital of Portugal", mode=mode, filters={"lang": "pt"})
        assert [h.chunk.doc_id for h in pt] == ["j2"]
        only = retr.search("capital", mode=mode, filters={"doc_id": "corpus/rome.txt"})
        assert {h.chunk.doc_id for h in only} == {"corpus/rome.txt"}
    # A question with quotes and operators does not break BM25.
    assert retr.search('What\'s "the" capital? (France) AND OR', mode="bm25")
    batch = retr.search_batch(["Eiffel Tower", "Colosseum"], k=1, mode="hybrid")
    assert [b[0].chunk.doc_id for b in batch] == ["corpus/paris.txt", "corpus/rome.txt"]
