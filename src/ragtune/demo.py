"""The demo on the bundled SQuAD subset: ingest, measure retrieval, answer with citations."""

from __future__ import annotations

import random
import time
from importlib import resources
from pathlib import Path

from .config import ChunkConfig, RagConfig
from .documents import load_squad
from .embedders import SentenceTransformerEmbedder
from .evaluation.metrics import exact_match, f1_score, retrieval_scores
from .generators import TransformersGenerator
from .ingest import ingest_documents
from .rag import answer_batch
from .retrieval import Retriever
from .stores import LanceStore


def demo_data_path() -> Path:
    return Path(str(resources.files("ragtune") / "data" / "squad_demo.json"))


def run_demo(out: Path, quick: bool = False, console=None) -> int:
    say = console.print if console is not None else print
    out.mkdir(parents=True, exist_ok=True)
    docs, examples = load_squad(demo_data_path())
    say(f"[bold]ragtune demo[/bold]: {len(docs)} SQuAD paragraphs, {len(examples)} questions (CC BY-SA 4.0)")

    embedder = SentenceTransformerEmbedder()
    chunking = ChunkConfig()
    t0 = time.perf_counter()
    store = LanceStore.create_or_open(out / "index", embedder.name, embedder.dim, {"chunk_tokens": chunking.chunk_tokens, "overlap_tokens": chunking.overlap_tokens})
    report = ingest_documents(docs, store, embedder, chunking, sync=True)
    c = report.counts()
    say(f"ingest: {c['added']} added, {c['updated']} updated, {c['unchanged']} unchanged, {report.chunks_written} chunks in {time.perf_counter() - t0:.1f}s -> {out / 'index'}")

    rng = random.Random(0)
    eval_set = rng.sample(examples, 150 if quick else len(examples))
    config = RagConfig()
    retriever = Retriever(store, embedder, config)
    say(f"\nretrieval on {len(eval_set)} questions (gold = the question's paragraph):")
    say(f"  {'mode':<8}{'R@1':>7}{'R@5':>7}{'R@10':>7}{'MRR@10':>8}")
    for mode in ("bm25", "dense", "hybrid"):
        results = retriever.search_batch([e.question for e in eval_set], k=10, mode=mode)
        s = retrieval_scores(results, [e.doc_ids for e in eval_set])
        say(f"  {mode:<8}{s.recall_at[1]:>7.3f}{s.recall_at[5]:>7.3f}{s.recall_at[10]:>7.3f}{s.mrr_at_10:>8.3f}")

    n_ask = 3 if quick else 6
    asked = eval_set[:n_ask]
    say(f"\nanswering {n_ask} questions with {config.generator} (hybrid retrieval, cited sources):")
    generator = TransformersGenerator(config.generator)
    answers = answer_batch([e.question for e in asked], retriever, generator, config)
    for ex, ans in zip(asked, answers):
        gold_hit = any(h.chunk.doc_id in ex.doc_ids for h in ans.hits)
        say(f"\n[bold]Q:[/bold] {ex.question}\n[bold]A:[/bold] {ans.text}{'  (abstained)' if ans.abstained else ''}")
        say(f"   gold: {ex.answers[0]!r}  EM {exact_match(ans.text, ex.answers):.0f}  F1 {f1_score(ans.text, ex.answers):.2f}  gold paragraph retrieved: {gold_hit}")
        for cit in ans.citations:
            say(f"   [{cit.number}] {cit.chunk_id}{'' if cit.by_model else ' (attributed)'}: {cit.snippet[:110]}…")
        say(f"   {ans.timings.total_s:.1f}s, {ans.tokens_in} tokens in / {ans.tokens_out} out")
    say(f"\nindex kept at {out / 'index'}; try: ragtune ask \"Who ruled the duchy of Normandy?\" --index {out / 'index'}")
    return 0
