"""Synthetic question quality, on passages the question-generation adapter never saw.

1. `ragtune synth` on the SQuAD v1.1 dev articles kept out of the adapter's training
   (EVAL_ARTICLES) and on PubMedQA abstracts: how many each filter removed, and accepted
   questions per minute on this machine (target >= 20 with the bundled adapter).
2. Against the real questions of the same passages: how often a synthetic answer is a real gold
   answer span (exact / F1 >= 0.5), and BLEU-4 / ROUGE-L of the synthetic question against the real
   question with the same answer.
3. Conditioned question generation, the QG literature's set-up (small seq2seq models: BLEU-4
   about 16-20 on SQuAD): given the real answer's sentence (+1 neighbour) and the real answer,
   generate a question; BLEU-4 / ROUGE-L against the real question — bundled adapter vs the base
   model prompted the same way (the baseline, same run).

    python benchmarks/synth_quality.py [--n 100] [--conditioned 150] [--pubmed 40] [--writer-backend llama]
                                       [--adapter RUN/adapter]   # a candidate adapter against the bundled one
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, squad_dev  # noqa: E402

PUBMED = Path(ROOT.parent / "shared" / "datasets" / "pubmedqa_pqal" / "ori_pqal.json")


def bleu_rouge(preds: list[str], refs: list[str]) -> tuple[float, float]:
    import sacrebleu

    from ragtune.evaluation.metrics import rouge_l

    if not preds:
        return 0.0, 0.0
    bleu = sacrebleu.corpus_bleu(preds, [refs]).score
    return bleu, 100 * sum(rouge_l(p, [r]) for p, r in zip(preds, refs)) / len(preds)


def run_synth(docs, n: int, seed: int, label: str, backend: str = "transformers") -> tuple[list, object]:
    from ragtune.chunking import chunk_documents
    from ragtune.config import ChunkConfig
    from ragtune.registry import make_embedder
    from ragtune.synth.generate import SynthConfig, synthesize

    chunks = chunk_documents(docs, ChunkConfig(), make_embedder().count_tokens)
    qs, report = synthesize(chunks, SynthConfig(n=n, seed=seed, writer_backend=backend))
    print(f"\n## {label}: {len(docs)} documents, {len(chunks)} chunks; question writer on {backend}")
    print(report.to_markdown().split("## ")[0])
    return qs, report


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100, help="synthetic questions wanted on the SQuAD eval articles")
    ap.add_argument("--conditioned", type=int, default=150, help="real (passage, answer) pairs for conditioned QG")
    ap.add_argument(
        "--pubmed", type=int, default=40, help="synthetic questions wanted on PubMedQA abstracts (0 = skip)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--writer-backend", default="",
        help="also run the bundled question writer on this backend (llama, ort, ct2): part 1 and 3 again, with "
        "the ratio of accepted questions per minute to transformers (the baseline, same run)",
    )  # fmt: skip
    ap.add_argument(
        "--adapter", default="",
        help="also run this question-generation adapter (a run's adapter/ folder, e.g. a retrained one) in part 3, "
        "with the ratio of its BLEU-4 to the bundled adapter's (the baseline, same run)",
    )  # fmt: skip
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    from ragtune.chunking import split_sentences
    from ragtune.config import DEFAULT_GENERATOR
    from ragtune.documents import Document
    from ragtune.evaluation.metrics import f1_score, normalize_answer
    from ragtune.registry import make_generator
    from ragtune.synth.generate import clean_question
    from ragtune.synth.qg import EVAL_ARTICLES, bundled_adapter, qg_messages, qg_passage

    docs, examples = squad_dev()
    titles = {t.replace(" ", "_") for t in EVAL_ARTICLES} | set(EVAL_ARTICLES)
    eval_docs = [d for d in docs if d.title in titles or d.title.replace(" ", "_") in titles]
    eval_ids = {d.id for d in eval_docs}
    eval_qs = [e for e in examples if e.doc_ids[0] in eval_ids]
    figures: dict = {
        "eval_articles": sorted(EVAL_ARTICLES),
        "paragraphs": len(eval_docs),
        "real_questions": len(eval_qs),
    }

    # 1 + 2: ragtune synth on the held-out articles, compared with their real questions.
    by_doc: dict[str, list] = {}
    for e in eval_qs:
        by_doc.setdefault(e.doc_ids[0], []).append(e)
    backends = ["transformers"] + ([args.writer_backend] if args.writer_backend else [])
    for backend in backends:
        label = "SQuAD dev, articles held out of the adapter's training"
        qs, report = run_synth(eval_docs, args.n, args.seed, label, backend)
        key = "squad" if backend == "transformers" else f"squad@{backend}"
        figures[key] = {"kept": report.kept, "per_minute": report.per_minute, "seconds": report.seconds,
                        "attempts": report.attempts, "removed": {s.name: s.removed for s in report.steps}}  # fmt: skip
        exact = matched = 0
        pairs_pred, pairs_ref = [], []
        for q in qs:
            reals = by_doc.get(q.doc_id, [])
            best = max(((f1_score(q.answer, e.answers), e) for e in reals), key=lambda x: x[0], default=(0.0, None))
            exact += any(normalize_answer(q.answer) == normalize_answer(a) for e in reals for a in e.answers)
            if best[0] >= 0.5:
                matched += 1
                pairs_pred.append(q.question)
                pairs_ref.append(best[1].question)
        bleu, rl = bleu_rouge(pairs_pred, pairs_ref)
        n = max(len(qs), 1)
        figures[key].update(
            {"answer_is_a_gold_span": exact / n, "answer_overlaps_gold_f1_05": matched / n, "pairs": len(pairs_pred),
             "bleu4_vs_real_same_answer": bleu, "rougeL_vs_real_same_answer": rl}
        )  # fmt: skip
        print(f"answer is a real gold span: {100 * exact / n:.0f}%; overlaps one (F1 >= 0.5): {100 * matched / n:.0f}%")
        print(
            f"question vs the real question with the same answer ({len(pairs_pred)} pairs): "
            f"BLEU-4 {bleu:.1f}, ROUGE-L {rl:.1f}"
        )
    if args.writer_backend:
        fast, base = figures[f"squad@{args.writer_backend}"], figures["squad"]
        print(
            f"\naccepted per minute, question writer on {args.writer_backend} / on transformers (the baseline, same "
            f"run): {fast['per_minute']:.1f} / {base['per_minute']:.1f} = "
            f"{fast['per_minute'] / base['per_minute']:.2f}x"
        )

    # 3: conditioned QG, adapter vs base, on real (passage, answer) pairs.
    rng = random.Random(args.seed)
    sample = rng.sample(eval_qs, min(args.conditioned, len(eval_qs)))
    prompts, refs = [], []
    for e in sample:
        sents = split_sentences(e.context)
        i = next((k for k, s in enumerate(sents) if e.answers[0] in s), None)
        if i is None:
            continue
        prompts.append(qg_messages(qg_passage(sents, i, 1), e.answers[0]))
        refs.append(e.question)
    rows = {}
    writers = [("base (prompted)", DEFAULT_GENERATOR, None), ("bundled adapter", DEFAULT_GENERATOR, bundled_adapter())]
    if args.writer_backend:
        fast = f"{DEFAULT_GENERATOR}@{args.writer_backend}"
        writers.append((f"adapter @{args.writer_backend}", fast, bundled_adapter()))
    if args.adapter:
        writers.append(("candidate adapter", DEFAULT_GENERATOR, Path(args.adapter)))
    for name, model, adapter in writers:
        gen = make_generator(model, adapter=adapter)
        t0 = time.perf_counter()
        raws = gen.generate(prompts, 32)
        secs = time.perf_counter() - t0
        preds = [clean_question(r) or r for r in raws]
        bleu, rl = bleu_rouge(preds, refs)
        rows[name] = {"bleu4": bleu, "rougeL": rl, "questions_per_s": len(prompts) / secs,
                      "samples": [{"real": r, "generated": p} for r, p in list(zip(refs, preds))[:8]]}  # fmt: skip
    figures["conditioned"] = {"n": len(prompts), **rows}
    print(f"\n## Conditioned QG on {len(prompts)} real (passage, answer) pairs of the held-out articles")
    print(f"{'model':<18}{'BLEU-4':>8}{'ROUGE-L':>9}{'q/s':>7}")
    for name, r in rows.items():
        print(f"{name:<18}{r['bleu4']:>8.1f}{r['rougeL']:>9.1f}{r['questions_per_s']:>7.2f}")
    base_b = rows["base (prompted)"]["bleu4"]
    print(
        f"ratio adapter / base BLEU-4 (baseline: the base model, same prompts, same run) = "
        f"{rows['bundled adapter']['bleu4'] / max(base_b, 1e-9):.2f}"
    )
    if args.adapter:
        print(
            f"ratio candidate / bundled adapter BLEU-4 (baseline: the bundled adapter, same prompts, same run) = "
            f"{rows['candidate adapter']['bleu4'] / max(rows['bundled adapter']['bleu4'], 1e-9):.2f}"
        )
    for s in rows["bundled adapter"]["samples"][:5]:
        print(f"  real: {s['real']}\n  gen:  {s['generated']}")

    # PubMedQA abstracts: another domain, acceptance and throughput.
    if args.pubmed and PUBMED.is_file():
        data = json.loads(PUBMED.read_text())
        pm_docs = [Document(pmid, " ".join(r["CONTEXTS"]), r["QUESTION"][:80]) for pmid, r in list(data.items())[:200]]
        _, pm = run_synth(pm_docs, args.pubmed, args.seed, "PubMedQA PQA-L abstracts")
        figures["pubmedqa"] = {"kept": pm.kept, "per_minute": pm.per_minute, "attempts": pm.attempts,
                               "removed": {s.name: s.removed for s in pm.steps}}  # fmt: skip
    print(
        f"\naccepted per minute: SQuAD {figures['squad']['per_minute']:.1f}"
        + (f", PubMedQA {figures['pubmedqa']['per_minute']:.1f}" if "pubmedqa" in figures else "")
        + " (target >= 20)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
