"""Embedder fine-tuning on the bundled MiniLM (22M parameters: a few seconds on a CPU)."""

import numpy as np
import pytest

from ragtune.documents import Document, QAExample
from ragtune.errors import InputError
from ragtune.finetune.embedder import EmbedderTrainConfig, finetune_embedder, training_pairs
from ragtune.index import Index

TOWNS = (
    "Arlen Brisk Corvo Dunel Eskar Fenno Gales Harrow Istel Jorn Kell Lisk "
    "Morrow Nesk Orlo Pell Quarn Rusk Sorrel Tarn Ulm Vesk Worl Yarrow"
).split()


@pytest.fixture
def towns_index(tmp_path):
    docs = [
        Document(t.lower(), f"{t} is a market town on the river {TOWNS[(i + 3) % 24]}water. Its mill was built in "
                 f"{1700 + 7 * i} and its bridge has {i + 2} arches.", t)
        for i, t in enumerate(TOWNS)
    ]  # fmt: skip
    index = Index.create(tmp_path / "ix")
    index.ingest(docs)
    return index


def _examples():
    return [QAExample(t, f"When was the mill in {t} built?", (str(1700 + 7 * i),), (t.lower(),))
            for i, t in enumerate(TOWNS)]  # fmt: skip


def test_pairs_have_the_answer_passage_and_a_negative_from_another_document(towns_index):
    rows = training_pairs(towns_index, _examples())
    assert len(rows) == 24
    for r in rows:
        assert r["doc_id"] in r["positive"].lower() and r["doc_id"] not in r["negative"].split("\n")[0].lower()


def test_finetune_embedder_saves_a_model_and_reembeds_a_new_index(towns_index, tmp_path):
    cfg = EmbedderTrainConfig(epochs=1, batch_size=8, val_share=0.2)
    report = finetune_embedder(towns_index, _examples(), tmp_path / "emb", cfg, reindex_to=tmp_path / "ix2")
    assert (tmp_path / "emb" / "model.safetensors").is_file() and report.train + report.val == 24 and report.val >= 4
    new = Index.open(tmp_path / "ix2")
    assert new.manifest.embedder == str((tmp_path / "emb").resolve()) and new.info().chunks == towns_index.info().chunks
    old_vecs = towns_index.embedder.embed(["When was the mill in Kell built?"])
    new_vecs = new.embedder.embed(["When was the mill in Kell built?"])
    assert not np.allclose(old_vecs, new_vecs)  # the weights changed
    assert new.search("When was the mill in Kell built?", k=3)[0].chunk.doc_id == "kell"
    assert set(report.after) == {"recall@1", "recall@5"} and Index.open(towns_index.url).info().chunks == 24
    with pytest.raises(InputError, match="not empty"):
        finetune_embedder(towns_index, _examples(), tmp_path / "emb", cfg)
    with pytest.raises(InputError, match="at least 16"):
        finetune_embedder(towns_index, _examples()[:5], tmp_path / "emb3", cfg)
