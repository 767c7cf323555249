"""Counterfactual robustness: when the document says something the model "knows" otherwise, does
`rag` answer with what the document says?

`--corpus squad` (default): SQuAD dev, the 12 articles never in the QG adapter's training. ragtune's
fact editor changes the gold fact of up to N questions in their paragraphs (a year for a year, a
quantity of the same magnitude and unit, a name of the same kind from the same article, chosen with
the index's embedder); the edited paragraphs are indexed with the rest, and `rag` answers the
questions (no gate: none is calibrated on this index). The same questions are also asked of an index
of the unedited paragraphs, which separates reading from robustness: a question the reader gets
wrong on the original text it will get wrong on the edited one too.

`--corpus demo`: the demo's own freshness test without fine-tuning — the bundled corpus indexed as
`ragtune demo` does, its questions prepared and split the same way, retrieval tuned and the gate
calibrated on the training split, then the first N edits of the first 40 test questions (the demo
edits 8; `--split all`: of every prepared question, for a larger sample) asked of an edited copy
with the tuned settings and the gate; the 40 test questions (and the edited ones) are also answered
as they are (F1 / EM).

Printed per answer mode: the share answered with the edited value among questions whose edited
passage is retrieved (target >= 90%), the stale share, abstentions, each miss's cause
(`freshness.why_not_fresh`), and the share answered with the edited value among the questions the
same mode answers correctly on the unedited text. Baseline, same run: the model writing its answer
(`answer_mode="generate"`) vs choosing a span (`"extract"`, the default for the base model).

    python benchmarks/counterfactual.py [--n 120] [--modes extract]
    python benchmarks/counterfactual.py --modes extract-likelihood extract   # the span ranker vs the likelihood alone
    git show b05ff77:src/ragtune/data/span-ranker.json > /tmp/ranker-b05ff77.json   # the ranker before PMI
    python benchmarks/counterfactual.py --modes extract-baseline extract --baseline-ranker /tmp/ranker-b05ff77.json
    python benchmarks/counterfactual.py --corpus demo --n 8 --modes auto
    python benchmarks/counterfactual.py --corpus demo --split all --n 60 --modes auto
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import held_out_squad  # noqa: E402

# extract-likelihood: the span reader choosing by the model's likelihood alone (before the span ranker);
# extract-baseline: choosing with the span ranker saved at --baseline-ranker (an earlier one, say)
MODES = ["generate", "extract", "extract-likelihood", "extract-baseline", "auto"]


def squad_setup(root: Path, n: int, seed: int):
    """(edited index, unedited index, edits, questions asked of the unedited index (every edited
    one among them), config, gate)."""
    from ragtune import ChunkConfig, Index, RagConfig
    from ragtune.evaluation.freshness import edit_facts

    docs, examples = held_out_squad()
    for p in ("edited", "original"):
        shutil.rmtree(root / p, ignore_errors=True)
    original = Index.create(root / "original", chunking=ChunkConfig())
    original.ingest(docs, sync=True)
    edited_docs, edits = edit_facts(docs, examples, n, seed, embedder=original.embedder)
    edited = Index.create(root / "edited", chunking=ChunkConfig())
    edited.ingest(list(({d.id: d for d in docs} | {d.id: d for d in edited_docs}).values()), sync=True)
    originals = {e.id: e for e in examples}
    return edited, original, edits, [originals[e.example.id] for e in edits], RagConfig(), False


def demo_setup(root: Path, n: int, seed: int, split: str = "test"):
    """The demo's index, split, tuning and gate (built once under `root`), and an edited copy."""
    from ragtune import ChunkConfig, Index
    from ragtune.config import DEFAULT_GENERATOR
    from ragtune.demo import HELD_OUT_ARTICLE, PLANS, demo_data_path
    from ragtune.documents import load_squad
    from ragtune.evaluation.compare import load_questions
    from ragtune.evaluation.evaluate import tune_phase
    from ragtune.evaluation.freshness import edit_facts
    from ragtune.finetune.data import PrepareConfig, prepare
    from ragtune.registry import make_generator

    plan = PLANS["default"]
    docs, examples = load_squad(demo_data_path())
    held = {d.id for d in docs if d.title == HELD_OUT_ARTICLE}
    if not (root / "data" / "test.jsonl").is_file():
        shutil.rmtree(root, ignore_errors=True)
        index = Index.create(root / "index", chunking=ChunkConfig())
        index.ingest([d for d in docs if d.id not in held], sync=True)
        rows = [{"id": e.id, "question": e.question, "answers": list(e.answers), "doc_id": e.doc_ids[0],
                 "context": e.context} for e in examples if e.doc_ids[0] not in held]  # fmt: skip
        (root / "questions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        prepare([root / "questions.jsonl"], root / "data", PrepareConfig(ratios=(0.8, 0.1, 0.1), seed=0))
        tune_phase(index, root / "data", make_generator(DEFAULT_GENERATOR), plan.gate_questions, print)
    index = Index.open(root / "index")
    test = load_questions(str(root / "data" / "test.jsonl"), plan.questions)
    pool = test  # the demo edits facts of its test questions; `all`: of every indexed question (rag has no training)
    if split == "all":
        pool = test + [
            e for f in ("validation", "train") for e in load_questions(str(root / "data" / f"{f}.jsonl"), 10**6)
        ]
    edited_docs, edits = edit_facts(docs, pool, n, seed, embedder=index.embedder)
    shutil.rmtree(root / "edited", ignore_errors=True)
    edited = index.copy_to(root / "edited")
    edited.ingest(edited_docs)
    asked = test + [e.example for e in edits if e.example.id not in {t.id for t in test}]
    originals = {e.id: e for e in pool}
    return edited, index, edits, [originals[e.id] for e in asked], index.rag_config(), None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", choices=["squad", "demo"], default="squad")
    ap.add_argument("--n", type=int, default=120, help="facts to edit (the demo edits 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--split", choices=["test", "all"], default="test", help="demo: whose facts to edit (the demo: test)"
    )
    ap.add_argument("--root", default="")
    ap.add_argument("--modes", nargs="+", default=["generate", "extract"], choices=MODES)
    ap.add_argument("--json", help="write the edits, answers and figures here")
    ap.add_argument("--baseline-ranker", help="a span ranker's .json for the mode extract-baseline")
    ap.add_argument("--reader-sentences", type=int, default=0, help="sentences the reader reads (0: the config's)")
    args = ap.parse_args()

    from ragtune import Pipeline, make_generator
    from ragtune.evaluation.freshness import MISS_CAUSES, is_fresh, is_stale, why_not_fresh
    from ragtune.evaluation.metrics import exact_match, f1_score

    root = Path(args.root or f"/tmp/ragtune-bench/counterfactual-{args.corpus}")
    if args.corpus == "squad":
        edited, original, edits, scored, config, gate = squad_setup(root, args.n, args.seed)
    else:
        edited, original, edits, scored, config, gate = demo_setup(root, args.n, args.seed, args.split)
    kinds = Counter(e.kind for e in edits)
    print(f"{args.corpus}: {len(edits)} facts edited ({dict(kinds)})")
    for e in edits[:12]:
        print(f"  {e.kind:<9}{e.old!r} -> {e.new!r}   ({e.example.question[:60]})")

    gen = make_generator()
    out: dict = {"edits": [{"question": e.example.question, "old": e.old, "new": e.new, "kind": e.kind} for e in edits]}
    for mode in args.modes:
        ranker = {"likelihood": "likelihood", "baseline": args.baseline_ranker}.get(mode.partition("-")[2])
        cfg = replace(config, answer_mode=mode.split("-")[0], span_ranker=ranker or config.span_ranker,
                      reader_sentences=args.reader_sentences or config.reader_sentences)
        t0 = time.perf_counter()
        answers = Pipeline(edited, gen, cfg, gate=gate).answer_batch([e.example.question for e in edits])
        before = Pipeline(original, gen, cfg, gate=gate).answer_batch([e.question for e in scored])
        seconds = time.perf_counter() - t0
        # Read right on the unedited text: the answer held the value the edit later changed.
        by_question = {q.question: a.text for q, a in zip(scored, before)}
        knew = {e.example.id for e in edits if is_stale(by_question[e.example.question], e)}
        seen = [(a, e) for a, e in zip(answers, edits) if any(h.chunk.doc_id == e.doc_id for h in a.hits)]
        causes = Counter(why_not_fresh(a, e) or "fresh" for a, e in zip(answers, edits))
        fresh = sum(is_fresh(a.text, e) for a, e in seen) / max(len(seen), 1)
        stale = sum(is_stale(a.text, e) for a, e in seen) / max(len(seen), 1)
        abst = sum(a.abstained for a, _ in seen) / max(len(seen), 1)
        read = [(a, e) for a, e in seen if e.example.id in knew]
        fresh_read = sum(is_fresh(a.text, e) for a, e in read) / max(len(read), 1)
        f1 = sum(f1_score(a.text, e.answers) for a, e in zip(before, scored)) / max(len(scored), 1)
        em = sum(exact_match(a.text, e.answers) for a, e in zip(before, scored)) / max(len(scored), 1)
        out[mode] = {"seconds": seconds, "retrieved": len(seen), "fresh": fresh, "stale": stale, "abstained": abst,
                     "causes": dict(causes), "read_on_original": len(read), "fresh_when_read": fresh_read,
                     "original_f1": f1, "original_em": em, "original_abstained": sum(a.abstained for a in before),
                     "answers": [{"question": e.example.question, "new": e.new, "answer": a.text,
                                  "cause": why_not_fresh(a, e)} for a, e in zip(answers, edits)]}  # fmt: skip
        print(f"\n{mode}: edited passage retrieved for {len(seen)}/{len(edits)}; new value {100 * fresh:.1f}%, "
              f"old value {100 * stale:.1f}%, abstained {100 * abst:.1f}%; answered in {seconds:.1f} s "
              f"({1000 * seconds / (len(edits) + len(scored)):.0f} ms a question)")  # fmt: skip
        print("  per edit: " + ", ".join(f"{k} {causes[k]}" for k in ("fresh", *MISS_CAUSES) if causes[k]))
        print(f"  of the {len(read)} retrieved questions answered right on the unedited text: "
              f"new value {100 * fresh_read:.1f}%")  # fmt: skip
        print(f"  the same questions on the unedited text ({len(scored)}): F1 {100 * f1:.1f}  EM {100 * em:.1f}  "
              f"abstained {out[mode]['original_abstained']}")  # fmt: skip
    if "extract" in out and "extract-baseline" in out:
        b = out["extract-baseline"]
        print(f"ratio extract / extract-baseline (--baseline-ranker), new value when retrieved = "
              f"{out['extract']['fresh'] / max(b['fresh'], 1e-9):.2f}; answer time "
              f"{out['extract']['seconds'] / b['seconds']:.2f}x")  # fmt: skip
    if "extract" in out and "extract-likelihood" in out:
        ratio = out["extract"]["fresh"] / max(out["extract-likelihood"]["fresh"], 1e-9)
        print(f"ratio extract / extract-likelihood, new value when retrieved (baseline: no span ranker) = {ratio:.2f}")
    if "extract" in out and "generate" in out:
        ratio = out["extract"]["fresh"] / max(out["generate"]["fresh"], 1e-9)
        print(
            f"\nratio extract / generate, new value when retrieved (baseline: the model writing, same run) = "
            f"{ratio:.2f}"
        )
    last = out[args.modes[-1]]["fresh"]
    print(f"target: >= 90% answered with the edited value: {'met' if last >= 0.9 else 'NOT met'} ({100 * last:.1f}%)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
