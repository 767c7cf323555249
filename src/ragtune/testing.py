"""Fakes for tests (ours and users'): a hashing embedder, a scripted generator, and the
contract every store backend must keep (subclass `StoreContract`, give it a `store_url`
fixture, as Haystack's `DocumentStoreBaseTests` is reused by each document store)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from .prompts import Messages


class HashingEmbedder:
    """Deterministic bag-of-words hashing embedder for tests: no model, instant, lexical."""

    def __init__(self, dim: int = 64):
        self.name = f"hashing-{dim}"
        self.dim = dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                h = int.from_bytes(hashlib.md5(word.encode()).digest()[:4], "little")
                out[i, h % self.dim] += 1.0 if (h >> 31) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) for t in texts]


class ScriptedGenerator:
    """A fake for tests: answers from a function of the rendered prompt, records what it saw."""

    def __init__(self, respond: Callable[[Messages], str], name: str = "scripted"):
        self.name = name
        self.respond = respond
        self.seen: list[Messages] = []

    def render(self, prompt: Messages) -> str:
        return "\n".join(f"<{m['role']}>\n{m['content']}" for m in prompt)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    def generate(self, prompts: Sequence[Messages], max_new_tokens: int = 48) -> list[str]:
        self.seen.extend(prompts)
        return [" ".join(self.respond(p).split()[:max_new_tokens]) for p in prompts]

    def stream(self, prompt: Messages, max_new_tokens: int = 48) -> Iterator[str]:
        words = self.generate([prompt], max_new_tokens)[0].split()
        for i, w in enumerate(words):
            yield w if i == 0 else " " + w


# -- the store contract ------------------------------------------------------------------------

DOCS = {
    "paris": ["Paris is the capital of France.", "The Eiffel Tower stands in Paris by the Seine."],
    "rome": ["Rome is the capital of Italy.", "The Colosseum is an amphitheatre in Rome."],
    "o'brien's notes": ["Notes about quokkas, marsupials of Rottnest island."],
}


def make_chunks(doc_id: str, texts: Sequence[str], title: str = "", meta: dict | None = None, version: str = "1"):
    """Chunks of one document as ingest would build them (ids `<doc>#<n>`, a shared content hash)."""
    from .documents import Chunk

    h = hashlib.sha256(f"{doc_id}|{version}|{'|'.join(texts)}".encode()).hexdigest()[:32]
    return [
        Chunk(
            id=f"{doc_id}#{i}",
            doc_id=doc_id,
            text=t,
            position=i,
            title=title or doc_id.title(),
            source=f"{doc_id}.txt",
            content_hash=h,
            meta=dict(meta or {}),
        )
        for i, t in enumerate(texts)
    ]


class StoreContract:
    """Tests every store backend must pass. Subclass it and provide a `store_url` fixture that
    returns a fresh, empty location for each test (a directory, `pg:DIR`, a URL)."""

    embedder = HashingEmbedder(dim=32)

    # helpers ------------------------------------------------------------------------------
    def new_store(self, url: str):
        import time

        from .stores import IndexManifest, backend_for

        manifest = IndexManifest(
            1, self.embedder.name, self.embedder.dim, {"chunk_tokens": 40, "overlap_tokens": 0}, time.time()
        )
        return backend_for(url).create(url, manifest)

    def put(self, store, doc_id: str, texts: Sequence[str], **kw) -> list:
        chunks = make_chunks(doc_id, texts, **kw)
        store.upsert([doc_id], chunks, self.embedder.embed([c.text for c in chunks]))
        return chunks

    def filled(self, url: str):
        store = self.new_store(url)
        for doc_id, texts in DOCS.items():
            self.put(store, doc_id, texts, meta={"lang": "en", "n": len(texts)})
        store.refresh_text_index()
        return store

    # the contract ---------------------------------------------------------------------------
    def test_create_open_and_manifest_round_trip(self, store_url):
        from dataclasses import replace

        import pytest

        from .errors import IndexNotFoundError
        from .stores import backend_for

        backend = backend_for(store_url)
        assert not backend.exists(store_url)
        with pytest.raises(IndexNotFoundError):
            backend.open(store_url)
        store = self.filled(store_url)
        store.save_manifest(replace(store.manifest, build_wall_s=1.5, retrieval={"k": 7}))
        store.close()
        assert backend.exists(store_url)
        again = backend.open(store_url)
        assert again.manifest.embedder == self.embedder.name and again.manifest.dim == 32
        assert again.manifest.build_wall_s == 1.5 and again.manifest.retrieval == {"k": 7}
        assert again.count_chunks() == 5
        assert again.document_hashes() == {d: make_chunks(d, t)[0].content_hash for d, t in DOCS.items()}

    def test_documents_and_get_chunks(self, store_url):
        store = self.filled(store_url)
        docs = store.documents()
        assert [d.id for d in docs] == sorted(DOCS)
        assert {d.id: d.chunks for d in docs} == {d: len(t) for d, t in DOCS.items()}
        assert docs[0].source.endswith(".txt") and docs[0].content_hash
        got = store.get_chunks(["rome#1", "missing#0", "paris#0"])
        assert [c.id for c in got] == ["rome#1", "paris#0"]
        assert got[0].text == DOCS["rome"][1] and got[0].meta == {"lang": "en", "n": 2} and got[0].position == 1

    def test_upsert_replaces_every_chunk_of_a_document(self, store_url):
        store = self.filled(store_url)
        self.put(store, "paris", ["Paris hosts the Louvre museum."], version="2")
        assert store.count_chunks() == 4  # the second, stale Paris chunk is gone
        assert [c.text for c in store.get_chunks(["paris#0", "paris#1"])] == ["Paris hosts the Louvre museum."]
        assert (
            store.document_hashes()["paris"]
            == make_chunks("paris", ["Paris hosts the Louvre museum."], version="2")[0].content_hash
        )
        assert len(store.get_chunks(["rome#0", "rome#1"])) == 2  # other documents untouched

    def test_upsert_of_several_documents_and_a_document_with_no_chunks(self, store_url):
        store = self.filled(store_url)
        a, b = make_chunks("a", ["alpha text"]), make_chunks("b", ["beta text", "more beta"])
        # "rome" is named but has no chunks: it disappears in the same commit.
        store.upsert(["a", "b", "rome"], a + b, self.embedder.embed([c.text for c in a + b]))
        assert sorted(store.document_hashes()) == sorted(["a", "b", "paris", "o'brien's notes"])
        assert store.count_chunks() == 6

    def test_bad_upsert_raises_and_writes_nothing(self, store_url):
        import pytest

        store = self.filled(store_url)
        before = (store.version(), store.count_chunks(), store.document_hashes())
        chunks = make_chunks("paris", ["new text", "more new text"], version="2")
        with pytest.raises(ValueError):
            store.upsert(["paris"], chunks, self.embedder.embed(["only one vector"]))
        with pytest.raises(ValueError):
            store.upsert(["paris"], chunks, np.zeros((2, 5), dtype=np.float32))  # wrong dimension
        assert (store.version(), store.count_chunks(), store.document_hashes()) == before

    def test_delete(self, store_url):
        store = self.filled(store_url)
        v = store.version()
        assert store.delete(["rome", "never-stored"]) == 2
        assert store.version() > v
        assert store.delete([]) == 0
        store.refresh_text_index()
        assert "rome" not in store.document_hashes()
        assert all(h.chunk.doc_id != "rome" for h in store.search_text("Colosseum Rome Italy", 5))
        assert all(
            h.chunk.doc_id != "rome" for h in store.search_dense(self.embedder.embed(["Rome capital Italy"])[0], 5)
        )

    def test_dense_search(self, store_url):
        store = self.filled(store_url)
        q = self.embedder.embed(["The Colosseum is an amphitheatre in Rome."])[0]
        hits = store.search_dense(q, 3)
        assert [h.rank for h in hits] == [1, 2, 3]
        assert hits[0].chunk.id == "rome#1" and abs(hits[0].score - 1.0) < 1e-4  # score is cosine similarity
        assert hits[0].score >= hits[1].score >= hits[2].score and hits[0].via == "dense"
        assert len(store.search_dense(q, 50)) == 5

    def test_text_search(self, store_url):
        store = self.filled(store_url)
        hits = store.search_text("quokkas", 3)
        assert hits and hits[0].chunk.doc_id == "o'brien's notes" and hits[0].rank == 1 and hits[0].score > 0
        assert store.search_text("Which amphitheatre is in Rome?", 2)[0].chunk.id == "rome#1"
        assert store.search_text("   ", 3) == []
        assert store.search_text("zyzzyva", 3) == []

    def test_text_search_is_consistent_after_updates(self, store_url):
        store = self.filled(store_url)
        self.put(store, "rome", ["Rome has the Pantheon, a temple."], version="2")
        for refreshed in (False, True):
            assert all(h.chunk.doc_id != "rome" for h in store.search_text("Colosseum amphitheatre", 5)), refreshed
            assert store.search_text("Pantheon temple", 5)[0].chunk.id == "rome#0", refreshed
            store.refresh_text_index()

    def test_filters(self, store_url):
        store = self.filled(store_url)
        self.put(store, "berlin", ["Berlin is the capital of Germany."], meta={"lang": "de"}, title="Berlin")
        q = self.embedder.embed(["capital"])[0]
        assert {h.chunk.doc_id for h in store.search_dense(q, 10, {"doc_id": "rome"})} == {"rome"}
        assert {h.chunk.doc_id for h in store.search_text("capital", 10, {"title": "Berlin"})} == {"berlin"}
        assert {h.chunk.doc_id for h in store.search_dense(q, 10, {"lang": "de"})} == {"berlin"}
        assert {h.chunk.doc_id for h in store.search_text("capital", 10, {"meta.lang": "en"})} <= {"paris", "rome"}
        assert {h.chunk.doc_id for h in store.search_dense(q, 10, {"source": "paris.txt"})} == {"paris"}
        assert (
            store.search_dense(q, 10, {"doc_id": "o'brien's notes"})[0].chunk.doc_id == "o'brien's notes"
        )  # quotes are data
        assert store.search_dense(q, 10, {"lang": "fr"}) == []
        assert len(store.search_dense(q, 1, {"lang": "en"})) == 1  # k counts hits after filtering

    def test_access_groups_filter_inside_the_query(self, store_url):
        store = self.filled(store_url)  # public documents
        secret = {"fin": ["Quarterly capital reserves of the bank, finance only."],
                  "hr": ["Salaries and capital bonuses, HR only."],
                  "both": ["Capital plan shared by finance and HR."]}  # fmt: skip
        for doc_id, groups in (("fin", ["finance"]), ("hr", ["hr"]), ("both", ["hr", "finance"])):
            self.put(store, doc_id, secret[doc_id], meta={"groups": groups})
        store.refresh_text_index()
        q = self.embedder.embed(["capital"])[0]
        public = {"paris", "rome", "o'brien's notes"}
        for allowed, expect in ((["finance"], {"fin", "both"}), (["hr"], {"hr", "both"}), ([], set()),
                                (["finance", "hr"], {"fin", "hr", "both"}), (["nobody"], set())):  # fmt: skip
            f = {"groups": allowed}
            assert {h.chunk.doc_id for h in store.search_dense(q, 50, f)} == public | expect, allowed
            text = {h.chunk.doc_id for h in store.search_text("capital", 50, f)}
            assert text - public == expect and text & public, allowed
            assert {d.id for d in store.documents(groups=allowed)} == public | expect, allowed
        # Filtering happens before ranking: k is filled from visible chunks only.
        hits = store.search_dense(self.embedder.embed([secret["fin"][0]])[0], 2, {"groups": ["hr"]})
        assert len(hits) == 2 and "fin" not in {h.chunk.doc_id for h in hits}
        assert len(store.search_text("finance", 1, {"groups": ["hr"]})) == 1  # "both" mentions finance
        assert {h.chunk.doc_id for h in store.search_dense(q, 50)} == public | set(secret)  # no filter: all
        assert {h.chunk.doc_id for h in store.search_dense(q, 50, {"groups": ["finance"], "doc_id": "hr"})} == set()
        assert {d.id: d.groups for d in store.documents()}["both"] == ("finance", "hr")

    def test_iter_chunks_in_order_with_vectors(self, store_url):
        store = self.filled(store_url)
        batches = list(store.iter_chunks(batch_size=2, vectors=True))
        chunks = [c for b, _ in batches for c in b]
        assert [(c.doc_id, c.position) for c in chunks] == sorted(
            (d, i) for d, t in DOCS.items() for i in range(len(t))
        )
        vectors = np.concatenate([v for _, v in batches])
        assert vectors.shape == (5, 32)
        assert np.allclose(vectors, self.embedder.embed([c.text for c in chunks]), atol=1e-6)
        assert all(v is None for _, v in store.iter_chunks(batch_size=10))

    def test_empty_store_searches(self, store_url):
        store = self.new_store(store_url)
        assert store.search_dense(self.embedder.embed(["x"])[0], 3) == []
        assert store.search_text("x", 3) == []
        assert store.documents() == [] and store.count_chunks() == 0 and list(store.iter_chunks()) == []
