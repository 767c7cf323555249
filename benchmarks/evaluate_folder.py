"""`ragtune evaluate --quick` on a folder of ~100 documents, then the decision-agreement and
training-value checks against the real questions of the same documents.

The folder: SQuAD v1.1 dev paragraphs of the articles kept out of the question-generation
adapter's training (EVAL_ARTICLES), one .txt file each. Measured:
- wall time of `evaluate --quick` with the time of each phase (target <= 15 minutes here);
- decision agreement: the same four strategies (same adapters) compared on the synthetic test
  questions and on the real questions of the indexed documents: per-strategy F1 on both, the
  ranking by F1, and the recommendation — they must agree; and each pair's verdict (better, worse, or
  within noise by the paired bootstrap) on both, since the ranking orders ties by noise;
  (the paired bootstrap tests of the real-question run say which differences are real); and the same at equal
  size: the real questions cut to the synthetic test's number, so the two differ in where their questions
  come from, not in how many there are.

    python benchmarks/evaluate_folder.py [--docs 100] [--out /tmp/ragtune-bench/evaluate] [--fresh] [--seed S]
        [--budget-min 30] [--real-test 444]

--real-test 444 answers every real question of the 100 documents' indexed ones (the paired interval of
rag+ft - rag is about +-3 F1 on 444, +-4 on 200: the training-value figures since 2026-12-06 use all of them).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import squad_dev  # noqa: E402


def pick(res) -> str:
    from ragtune.evaluation.report import recommendation

    m = re.search(r"Recommendation for this data: (.+?)</b>", " ".join(recommendation(res)))
    return m.group(1) if m else "?"


def f1s(res) -> dict[str, float]:
    return {n: round(a["f1"]["mean"], 2) for n, a in res.aggregates.items()}


def verdicts(res) -> dict[tuple[str, str], tuple[str, float, float]]:
    """(a, b) -> ('>' | '<' | '~', F1 difference, p): a better, worse, or tied with b within noise."""
    out = {}
    for p in res.paired:
        if p["metric"] == "f1":
            v = "~" if p["p_value"] >= 0.05 else ">" if p["diff"] > 0 else "<"
            out[(p["a"], p["b"])] = (v, p["diff"], p["p_value"])
    return out


def first(res, exp, n: int):
    """`res` as if only its first `n` answerable questions had been asked (the unanswerable and edited ones kept):
    the real questions at the synthetic test's size, so that the two tests differ in where the questions come
    from and not in how many there are."""
    from copy import copy

    from ragtune.evaluation.compare import aggregate, paired_tests
    from ragtune.evaluation.metrics import QuestionKind

    ids = dict.fromkeys(r.question_id for r in res.records if r.kind == QuestionKind.ANSWERABLE)
    keep = set(list(ids)[:n])
    out = copy(res)
    out.records = [r for r in res.records if r.kind != QuestionKind.ANSWERABLE or r.question_id in keep]
    names = list(res.aggregates)
    out.aggregates = {s: {**res.aggregates[s], **aggregate([r for r in out.records if r.strategy == s], exp)}
                      for s in names}  # fmt: skip
    out.paired = paired_tests(out.records, names, exp)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=100)
    ap.add_argument("--budget-min", type=float, default=15.0)
    ap.add_argument("--out", default="/tmp/ragtune-bench/evaluate")
    ap.add_argument("--fresh", action="store_true", help="delete the output folder first (no reuse)")
    ap.add_argument("--real-test", type=int, default=80, help="real questions in the agreement test")
    ap.add_argument("--seed", type=int, default=0, help="evaluate's seed: which questions are written and split")
    args = ap.parse_args()

    from ragtune.evaluation.compare import ExperimentConfig, run_experiment
    from ragtune.evaluation.costs import Prices
    from ragtune.evaluation.evaluate import EvaluateConfig, run_evaluate
    from ragtune.evaluation.strategies import Strategy
    from ragtune.synth.qg import EVAL_ARTICLES

    out = Path(args.out)
    if args.fresh:
        shutil.rmtree(out, ignore_errors=True)
    docs, examples = squad_dev()
    titles = {t.replace("_", " ") for t in EVAL_ARTICLES}
    chosen = [d for d in docs if d.title in titles]
    random.Random(0).shuffle(chosen)
    chosen = chosen[: args.docs]
    folder = out / "docs"
    folder.mkdir(parents=True, exist_ok=True)
    for d in chosen:
        (folder / f"{d.id.replace('/', '__')}.txt").write_text(d.text)
    said = []

    def say(m: str) -> None:
        said.append(m)
        print(m, flush=True)

    t0 = time.perf_counter()
    res = run_evaluate([folder], out / "run", EvaluateConfig(budget_min=args.budget_min, seed=args.seed), say=say)
    wall = time.perf_counter() - t0
    run = "--quick" if args.budget_min == 15 else f"--budget-min {args.budget_min:g}"
    print(f"\nevaluate {run} on {len(chosen)} documents: {wall / 60:.1f} min (budget {args.budget_min:g}"
          + ("; target <= 15)" if args.budget_min == 15 else ")"))  # fmt: skip
    for k, v in res.phases.items():
        print(f"  {k:<22} {v:7.1f} s")

    # Decision agreement: the same strategies and adapters on the real questions of the indexed documents.
    from ragtune import Index

    indexed = {d.id for d in Index.open(out / "run" / "index").documents()}
    by_file = {f"docs/{d.id.replace('/', '__')}.txt": d.id for d in chosen}
    real = [e for e in examples if any(by_file.get(i) == e.doc_ids[0] for i in indexed)]
    random.Random(1).shuffle(real)
    inv = {v: k for k, v in by_file.items()}
    real_path = out / "real-questions.jsonl"
    real_path.write_text("".join(json.dumps({"id": e.id, "question": e.question, "answers": list(e.answers),
                                             "doc_id": inv[e.doc_ids[0]]}) + "\n" for e in real))  # fmt: skip
    # The same unanswerable questions and as many fact edits as the synthetic run: the recommendation
    # weighs freshness, so both runs must measure it.
    changes = {"questions": str(real_path), "max_questions": args.real_test}
    exp = ExperimentConfig(**{**res.config, "strategies": tuple(Strategy(**s) for s in res.strategies), **changes})
    exp = replace(exp, prices=Prices(**res.config["prices"]))
    real_res = run_experiment(exp, out / "real")
    syn_f1, real_f1 = f1s(res), f1s(real_res)
    rank = lambda d: sorted(d, key=lambda n: -d[n])  # noqa: E731
    print("\n| strategy | F1 synthetic test | F1 real questions |\n|---|---:|---:|")
    for n in syn_f1:
        print(f"| {n} | {syn_f1[n]:.1f} | {real_f1[n]:.1f} |")
    print(f"ranking by F1: synthetic {rank(syn_f1)}; real {rank(real_f1)}; agree: {rank(syn_f1) == rank(real_f1)}")
    picks = [pick(res), pick(real_res)]
    print(f"recommendation: synthetic {picks[0]!r}; real {picks[1]!r}; agree: {picks[0] == picks[1]}")
    figures = {"docs": len(chosen), "wall_s": wall, "phases": res.phases, "f1_synthetic": syn_f1, "f1_real": real_f1,
               "rank_agree": rank(syn_f1) == rank(real_f1), "recommendation": picks,
               "questions": res.questions.get("synthetic", {}).get("kept")}  # fmt: skip
    # Each pair's verdict on each test: better, worse or within noise (paired bootstrap, p < 0.05). The
    # ranking above orders ties by noise; the verdicts say which of its orders either test can stand behind.
    syn_v, real_v = verdicts(res), verdicts(real_res)
    for pair, (v, d, pv) in real_v.items():
        sv, sd, sp = syn_v[pair]
        print(f"  F1 {pair[0]} - {pair[1]}: synthetic {sv} {sd:+.1f} (p={sp:.3f}); real {v} {d:+.1f} (p={pv:.3f})"
              f"{'' if sv == v else '  <- differ'}")  # fmt: skip
    same = sum(syn_v[k][0] == real_v[k][0] for k in real_v)
    print(f"pairwise verdicts agree: {same} of {len(real_v)}")
    figures["verdicts_agree"] = [same, len(real_v)]
    figures["verdicts"] = {f"{a} - {b}": [syn_v[(a, b)], real_v[(a, b)]] for a, b in real_v}
    figures["recommendation_agree"] = picks[0] == picks[1]
    # The same at equal size: the real questions cut to the synthetic test's number (a 444-question test tells
    # apart differences that no 200-question test can, whatever its questions).
    n_syn = next(iter(res.aggregates.values()))["n_answerable"]
    if len(real) > n_syn:
        cut = first(real_res, exp, n_syn)
        cut_f1, cut_v = f1s(cut), verdicts(cut)
        same_n = sum(syn_v[k][0] == cut_v[k][0] for k in cut_v)
        print(f"\nat equal size ({n_syn} real questions): F1 {cut_f1}; ranking agrees: {rank(syn_f1) == rank(cut_f1)}; "
              f"recommendation {pick(cut)!r}, agrees: {pick(res) == pick(cut)}; pairwise verdicts agree: {same_n} of "
              f"{len(cut_v)}")  # fmt: skip
        for pair, (v, d, pv) in cut_v.items():
            print(f"  F1 {pair[0]} - {pair[1]}: real first {n_syn} {v} {d:+.1f} (p={pv:.3f})")
        figures["equal_size"] = {"n": n_syn, "f1_real": cut_f1, "rank_agree": rank(syn_f1) == rank(cut_f1),
                                 "recommendation": pick(cut), "recommendation_agree": pick(res) == pick(cut),
                                 "verdicts_agree": [same_n, len(cut_v)]}  # fmt: skip
    (out / "figures.json").write_text(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
