"""Fine-tuning the embedder for one corpus: fine-tuning in the service of RAG.

(question, source passage) pairs — synthetic questions from `ragtune synth` by default — train
the sentence embedder with sentence-transformers' own trainer and MultipleNegativesRankingLoss:
every other passage in the batch is a negative, and each pair brings one hard negative, the
passage BM25 ranks highest for the question among other documents (the GPL / LlamaIndex
`finetune_embedding` recipe). The index is then re-embedded with the new model, into a new
index (default) or in place, its manifest naming the new embedder.

    report = finetune_embedder(Index.open("idx"), examples, "emb-out", reindex_to="idx-tuned")
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..documents import QAExample
from ..errors import ConfigError, InputError

MIN_PAIRS = 16


@dataclass(frozen=True)
class EmbedderTrainConfig:
    """How the embedder is trained (sentence-transformers' trainer, CPU or GPU)."""

    epochs: int = 1
    batch_size: int = 16  # in-batch negatives: bigger batches give more of them
    lr: float = 2e-5
    warmup: float = 0.1  # share of the steps spent warming up
    hard_negatives: bool = True  # one BM25-mined passage from another document per pair
    val_share: float = 0.15  # pairs held out to measure recall before and after
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r}: must be at least 1")
        if not 0 < self.lr < 1:
            raise ConfigError(f"lr={self.lr!r}: must be in (0, 1)")
        if not 0 <= self.val_share < 0.5:
            raise ConfigError(f"val_share={self.val_share!r}: must be in [0, 0.5)")


@dataclass
class EmbedderReport:
    out: str
    pairs: int
    train: int
    val: int
    seconds: float
    before: dict[str, float] = field(default_factory=dict)  # dense recall@1/5 on the held-out pairs
    after: dict[str, float] = field(default_factory=dict)
    index: str = ""  # the re-embedded index
    config: dict = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"{self.pairs} (question, passage) pairs: {self.train} trained on, {self.val} held out; "
               f"{self.seconds:.0f}s; model -> {self.out}"]  # fmt: skip
        if self.before:
            out.append(
                f"held-out dense recall@1 {self.before['recall@1']:.3f} -> {self.after['recall@1']:.3f}, "
                f"recall@5 {self.before['recall@5']:.3f} -> {self.after['recall@5']:.3f}"
            )
        if self.index:
            out.append(f"re-embedded index: {self.index}")
        return out


def chunks_by_doc(index) -> dict[str, list]:
    """Every chunk of the index, grouped by document in position order."""
    by_doc: dict[str, list] = {}
    for c in index.chunks():
        by_doc.setdefault(c.doc_id, []).append(c)
    return by_doc


def training_pairs(
    index, examples: Sequence[QAExample], hard_negatives: bool = True, by_doc: dict[str, list] | None = None
) -> list[dict]:
    """{anchor, positive[, negative], doc_id} per question: the positive is the chunk of the
    question's document holding its answer (else its first chunk); the negative the best BM25
    hit from another document."""
    from ..ingest import embed_text

    by_doc = by_doc if by_doc is not None else chunks_by_doc(index)
    rows = []
    usable = [e for e in examples if e.doc_ids and e.doc_ids[0] in by_doc]
    negatives = index.search([e.question for e in usable], k=10, mode="bm25") if hard_negatives and usable else []
    for i, e in enumerate(usable):
        chunks = by_doc[e.doc_ids[0]]
        pos = next((c for c in chunks if any(a and a in c.text for a in e.answers)), chunks[0])
        row = {"anchor": e.question, "positive": embed_text(pos.title, pos.text), "doc_id": e.doc_ids[0]}
        if hard_negatives:
            neg = next((h.chunk for h in negatives[i] if h.chunk.doc_id != e.doc_ids[0]), None)
            if neg is None:
                continue
            row["negative"] = embed_text(neg.title, neg.text)
        rows.append(row)
    return rows


def _dense_recall(index, rows: Sequence[dict]) -> dict[str, float]:
    from ..evaluation.metrics import retrieval_scores

    hits = index.search([r["anchor"] for r in rows], k=5, mode="dense")
    s = retrieval_scores(hits, [[r["doc_id"]] for r in rows], ks=(1, 5))
    return {f"recall@{k}": v for k, v in s.recall_at.items()}


def finetune_embedder(
    index,
    examples: Sequence[QAExample],
    out: str | Path,
    cfg: EmbedderTrainConfig = EmbedderTrainConfig(),
    reindex_to: str | Path | None = None,
    in_place: bool = False,
) -> EmbedderReport:
    """Train the index's embedder on `examples` (with gold doc ids), save it to `out`, and
    re-embed the index into `reindex_to` (or in place). Recall is measured on held-out pairs
    against the old index and the re-embedded one."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers import SentenceTransformerTrainingArguments as Args

    from ..embedders import SentenceTransformerEmbedder
    from ..models import resolve_embedder

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} exists and is not empty; refusing to overwrite a model")
    if reindex_to is not None and in_place:
        raise ConfigError("give either a new index (reindex_to) or in_place, not both")
    by_doc = chunks_by_doc(index)  # read once: for the pairs and for re-embedding
    rows = training_pairs(index, examples, cfg.hard_negatives, by_doc)
    if len(rows) < MIN_PAIRS:
        raise InputError(f"fine-tuning the embedder needs at least {MIN_PAIRS} (question, passage) pairs; got "
                         f"{len(rows)} (questions need the doc_id of an indexed document)")  # fmt: skip
    rng = random.Random(cfg.seed)
    docs = sorted({r["doc_id"] for r in rows})
    rng.shuffle(docs)
    val_docs = set(docs[: int(len(docs) * cfg.val_share)])  # by document: no held-out passage is trained on
    train = [r for r in rows if r["doc_id"] not in val_docs]
    val = [r for r in rows if r["doc_id"] in val_docs]
    before = _dense_recall(index, val) if val else {}

    t0 = time.perf_counter()
    model = SentenceTransformer(str(resolve_embedder(index.manifest.embedder)), local_files_only=True)
    columns = ["anchor", "positive"] + (["negative"] if cfg.hard_negatives else [])
    dataset = Dataset.from_dict({c: [r[c] for r in train] for c in columns})
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    args = Args(output_dir=str(out / "checkpoints"), num_train_epochs=cfg.epochs,
                per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.lr, warmup_steps=cfg.warmup,
                batch_sampler="no_duplicates", save_strategy="no", report_to="none", seed=cfg.seed,
                disable_tqdm=True, logging_steps=max(1, len(train) // cfg.batch_size // 5),
                dataloader_pin_memory=_has_gpu())  # fmt: skip
    SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset,
                               loss=MultipleNegativesRankingLoss(model)).train()  # fmt: skip
    model.save(str(out))
    seconds = time.perf_counter() - t0
    new = SentenceTransformerEmbedder(str(out.resolve()))
    report = EmbedderReport(str(out), len(rows), len(train), len(val), seconds, before, config=asdict(cfg))
    target = reembed(index, new, reindex_to, in_place, by_doc)
    if target is not None:
        report.index = target.url
        report.after = _dense_recall(target, val) if val else {}
    return report


def reembed(
    index, embedder, to: str | Path | None = None, in_place: bool = False, by_doc: dict[str, list] | None = None
):
    """The index's chunks embedded again with `embedder`: into a new index at `to`, or in place
    (64 documents per transaction; the manifest then names the new embedder)."""
    from ..ingest import embed_text
    from ..stores import backend_for

    if to is None and not in_place:
        return None
    manifest = replace(index.manifest, embedder=embedder.name, dim=embedder.dim, gate={})  # old gates read old scores
    if in_place:
        if embedder.dim != index.manifest.dim:
            raise ConfigError(f"in place needs the same dimension ({index.manifest.dim}); the new model has "
                              f"{embedder.dim}: re-embed into a new index")  # fmt: skip
        store = index.store
    else:
        backend = backend_for(str(to))
        if backend.exists(str(to)):
            raise InputError(f"an index already exists at {str(to)!r}; refusing to overwrite it")
        store = backend.create(str(to), manifest)
    # Read everything first: upsert replaces all of a document's chunks.
    by_doc = by_doc if by_doc is not None else chunks_by_doc(index)
    doc_ids = list(by_doc)
    for start in range(0, len(doc_ids), 64):
        batch = doc_ids[start : start + 64]
        chunks = [c for d in batch for c in by_doc[d]]
        store.upsert(batch, chunks, embedder.embed([embed_text(c.title, c.text) for c in chunks]))
    store.refresh_text_index()
    store.save_manifest(manifest)
    from ..index import Index

    return Index(store, embedder)


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()
