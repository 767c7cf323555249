"""Why a synthetic test sees less of rag+ft's lead over rag than the real questions of the same documents.

Reads a folder written by `benchmarks/evaluate_folder.py` (its synthetic run in `run/`, the real questions' run in
`real/`) and prints, for `rag+ft − rag` in F1 (the real questions' run is the baseline, same documents, same
fine-tuned models):
1. the lead on each test, and where the two readers disagree, how often rag+ft is the one right;
2. target overlap: the share of test questions whose gold answer a training question of the same document
   targets (F1 >= 0.5), and the lead on those and on the rest — a real question may ask about a span the synthetic
   training questions asked about, a synthetic test question rarely does (one question per candidate);
3. the real questions scored against their first gold answer only (synthetic questions have one target);
4. with `--posterior`: how specifically each question points at its target — the question-generation adapter's
   posterior of the target among the passage's answer candidates (p(question | passage, candidate), normalised) —
   and the lead by quartile of it, on both tests.

    python benchmarks/synthetic_gap.py /tmp/ragtune-bench/evaluate45j [--posterior] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics as st
import sys
from collections import defaultdict
from pathlib import Path


def records(run: Path) -> dict:
    """strategy -> question id -> EvalRecord of a comparison's answerable questions (`compare.load_results`)."""
    from ragtune.evaluation.compare import load_results
    from ragtune.evaluation.metrics import QuestionKind

    out: dict = defaultdict(dict)
    for r in load_results(run).records:
        if r.kind == QuestionKind.ANSWERABLE:
            out[r.strategy][r.question_id] = r
    return out


def lead(rows: dict, ids: list[str], f1=None) -> dict:
    """rag+ft − rag on `ids`: means, the report's paired bootstrap p, and where they disagree, who wins."""
    from ragtune.evaluation.stats import paired_bootstrap

    f1 = f1 or (lambda s, i: 100 * rows[s][i].f1)
    a = [f1("rag", i) for i in ids]
    b = [f1("rag+ft", i) for i in ids]
    if len(ids) < 3:
        return {"n": len(ids)}
    test = paired_bootstrap(b, a, ("rag+ft", "rag"), "f1")
    return {"n": len(ids), "rag": st.mean(a), "rag+ft": st.mean(b), "lead": test.diff, "p": test.p_value,
            "rag+ft wins": sum(y > x for x, y in zip(a, b)), "rag wins": sum(x > y for x, y in zip(a, b))}  # fmt: skip


def show(label: str, d: dict) -> None:
    if "lead" not in d:
        print(f"  {label:<42} n={d['n']}")
        return
    print(f"  {label:<42} n={d['n']:3d}  rag {d['rag']:5.1f}  rag+ft {d['rag+ft']:5.1f}  lead {d['lead']:+5.1f} "
          f"(p {d['p']:.3f}); where they differ rag+ft wins {d['rag+ft wins']}, rag {d['rag wins']}")  # fmt: skip


def posterior(items: list[tuple[str, str, str, str]]) -> dict[str, float]:
    """(id, passage, target, question) -> the adapter's posterior of the target among the passage's candidates."""
    from ragtune.config import DEFAULT_GENERATOR
    from ragtune.registry import make_generator
    from ragtune.synth.generate import span_candidates
    from ragtune.synth.qg import bundled_adapter, qg_messages

    gen = make_generator(DEFAULT_GENERATOR, adapter=bundled_adapter())
    out = {}
    for s in range(0, len(items), 16):
        batch = items[s : s + 16]
        cands = [span_candidates(p, a) for _, p, a, _ in batch]
        prompts = [qg_messages(p, c) for (_, p, _, _), cs in zip(batch, cands) for c in cs]
        conts = [[q] for (_, _, _, q), cs in zip(batch, cands) for _ in cs]
        scores = gen.score_batch(prompts, conts)
        k = 0
        for (i, _, a, _), cs in zip(batch, cands):
            sc = [scores[k + j][0] for j in range(len(cs))]
            k += len(cs)
            m = max(sc)
            out[i] = math.exp(sc[cs.index(a)] - m) / sum(math.exp(x - m) for x in sc)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", help="an evaluate_folder.py output folder (run/ and real/ inside)")
    ap.add_argument("--posterior", action="store_true", help="also the question-generation posterior (minutes)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    from ragtune.chunking import split_sentences
    from ragtune.evaluation.metrics import f1_score
    from ragtune.synth.qg import qg_passage

    root = Path(args.folder)
    if not (root / "run" / "results.json").is_file() or not (root / "real" / "results.json").is_file():
        sys.exit(f"{root} has no run/results.json and real/results.json: run benchmarks/evaluate_folder.py first")
    syn, real = records(root / "run"), records(root / "real")
    doc_of = {}
    for path in (root / "real-questions.jsonl", root / "run" / "data" / "test.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            doc_of[r["id"]] = r["doc_id"]
    targets: dict[str, list[str]] = defaultdict(list)  # doc -> the training questions' targets
    for split in ("train", "validation"):
        for line in (root / "run" / "data" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            if r.get("answer"):
                targets[r["doc_id"]].append(r["answer"])
    figures: dict = {}
    tests = {"synthetic": syn, "real": real}
    ids = {k: [i for i in rows["rag"] if i in rows["rag+ft"]] for k, rows in tests.items()}
    print("1. rag+ft − rag in F1")
    for k, rows in tests.items():
        figures[k] = {"all": lead(rows, ids[k])}
        show(f"{k} test", figures[k]["all"])
    print("2. the gold answer is a training question's target (same document)")
    for k, rows in tests.items():
        trained = {i for i in ids[k]
                   if any(f1_score(t, rows["rag"][i].gold) >= 0.5 for t in targets.get(doc_of.get(i), []))}  # fmt: skip
        over = [i for i in ids[k] if i in trained]
        rest = [i for i in ids[k] if i not in trained]
        figures[k]["trained_target"] = lead(rows, over)
        figures[k]["not_trained_target"] = lead(rows, rest)
        print(f"  {k}: {len(over)} of {len(ids[k])} ({100 * len(over) / max(len(ids[k]), 1):.0f}%)")
        show("  gold = a trained target", figures[k]["trained_target"])
        show("  gold not a trained target", figures[k]["not_trained_target"])
    print("3. the real questions against their first gold answer only")

    def first_gold(s: str, i: str) -> float:
        r = real[s][i]
        return 0.0 if r.abstained else 100 * f1_score(r.answer, r.gold[:1])

    figures["real"]["first_gold"] = lead(real, ids["real"], first_gold)
    show("real, first gold only", figures["real"]["first_gold"])
    if args.posterior:
        print("4. the question-generation adapter's posterior of the target, by quartile")
        items = {"synthetic": [], "real": []}
        contexts = {}
        for line in (root / "run" / "questions" / "synthetic.jsonl").read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            contexts[r["id"]] = r["context"]
        for i in ids["synthetic"]:
            r = syn["rag"][i]
            if i in contexts:
                items["synthetic"].append((i, contexts[i], r.gold[0], r.question))
        for i in ids["real"]:
            r = real["rag"][i]
            gold = r.gold[0]
            sents = split_sentences((root / doc_of[i]).read_text(encoding="utf-8"))
            at = next((n for n, s in enumerate(sents) if gold in s), None)
            if at is not None:
                items["real"].append((i, qg_passage(sents, at), gold, r.question))
        for k, rows in tests.items():
            post = posterior(items[k])
            order = sorted(post, key=post.get)
            figures[k]["posterior_median"] = st.median(post.values())
            print(f"  {k}: median posterior {figures[k]['posterior_median']:.2f}")
            for q in range(4):
                part = order[q * len(order) // 4 : (q + 1) * len(order) // 4]
                figures[k][f"posterior_q{q + 1}"] = lead(rows, part)
                show(f"  quartile {q + 1} (posterior >= {post[part[0]]:.2f})", figures[k][f"posterior_q{q + 1}"])
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
