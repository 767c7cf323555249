"""Does `rag` abstain when the index does not hold the answer, and only then?

SQuAD dev (the 12 articles never in the QG adapter's training): a quarter of their paragraphs
is kept out of the index; unanswerable questions are those of kept-out paragraphs whose answer
is nowhere in the indexed text, answerable ones those of indexed paragraphs. PubMedQA PQA-L:
half of the abstracts indexed; unanswerable questions are those of the other half.

The gate is calibrated as a user without labels would: `ragtune tune`'s path — synthetic
questions from the index, each asked again with its own document kept out of retrieval.
Baseline, same run: the same pipeline without the gate (the model's own "I don't know").
Targets: abstains on >= 80% of unanswerable questions, <= 10% of answerable ones.

    python benchmarks/abstention.py [--corpus squad pubmedqa] [--n 100] [--calibrate 60] [--records DIR]

The bundled default gate (what an index uses before `ragtune tune`; fitted by
scripts/fit_default_gate.py on SQuAD dev articles none of these questions come from) is applied to
the same answers. Besides the library's gate, a few variants fitted on the same calibration answers are shown
(weights fitted on right answers only; without the question-side evidence). `--records` keeps
every calibration and test answer's evidence, F1 and texts, to compare other fits offline.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, bucket, exclusion_split, held_out_squad  # noqa: E402

PUBMED = ROOT.parent / "shared" / "datasets" / "pubmedqa_pqal" / "ori_pqal.json"


def squad_split(rng: random.Random, n: int):
    indexed, answerable, unanswerable = exclusion_split(*held_out_squad())
    return indexed, rng.sample(answerable, min(n, len(answerable))), rng.sample(unanswerable, min(n, len(unanswerable)))


def pubmed_split(rng: random.Random, n: int):
    from ragtune.documents import Document, QAExample

    data = json.loads(PUBMED.read_text())
    docs = [Document(pmid, " ".join(r["CONTEXTS"]), "") for pmid, r in data.items()]  # no title: it is the question
    examples = [QAExample(pmid, r["QUESTION"], (r["final_decision"],), (pmid,)) for pmid, r in data.items()]
    indexed = [d for d in docs if bucket(d.id) < 0.5]
    keep = {d.id for d in indexed}
    answerable = [e for e in examples if e.doc_ids[0] in keep]
    unanswerable = [e for e in examples if e.doc_ids[0] not in keep]
    return indexed, rng.sample(answerable, min(n, len(answerable))), rng.sample(unanswerable, min(n, len(unanswerable)))


def rates(answers, examples) -> dict:
    from ragtune.evaluation.metrics import exact_match, f1_score

    n = max(len(answers), 1)
    return {
        "abstain": sum(a.abstained for a in answers) / n,
        "f1": 100 * sum(f1_score(a.text, e.answers) for a, e in zip(answers, examples) if not a.abstained) / n,
        "em": 100 * sum(exact_match(a.text, e.answers) for a, e in zip(answers, examples) if not a.abstained) / n,
    }


def run(name: str, args, generator) -> dict:
    from ragtune import ChunkConfig, Index, Pipeline
    from ragtune.gate import calibration_answers, default_gate, fit_answers
    from ragtune.rag import apply_gate
    from ragtune.tuning import synthetic_examples

    rng = random.Random(args.seed)
    indexed, answerable, unanswerable = (squad_split if name == "squad" else pubmed_split)(rng, args.n)
    index = Index.create(f"{args.root}/{name}", chunking=ChunkConfig())
    index.ingest(indexed, sync=True)
    print(f"\n== {name}: {len(indexed)} documents indexed; {len(answerable)} answerable, "
          f"{len(unanswerable)} unanswerable test questions", flush=True)  # fmt: skip

    t0 = time.perf_counter()
    if args.calibrate_on == "synthetic":
        calib = synthetic_examples(index, args.calibrate, args.seed)
    else:  # real questions of indexed documents that are not test questions
        test_ids = {e.id for e in answerable}
        pool = [e for e in (squad_split if name == "squad" else pubmed_split)(random.Random(args.seed + 1), 10**6)[1]
                if e.id not in test_ids]  # fmt: skip
        calib = pool[: args.calibrate]
    pipe = Pipeline(index, generator, gate=False, score_answers=True)
    answered, refused = calibration_answers(index, generator, [e.question for e in calib],
                                            answerable_doc_ids=[e.doc_ids[0] for e in calib])  # fmt: skip
    gate = fit_answers(answered, refused)
    variants = {
        "gate fitted on right answers only": fit_answers(answered, refused, answers=[e.answers for e in calib]),
        "gate without question-side evidence": fit_answers(
            [_no_question_side(a) for a in answered], [_no_question_side(a) for a in refused]
        ),
    }
    cal = gate.calibration
    print(f"  gate calibrated on {len(calib)} {args.calibrate_on} questions in {time.perf_counter() - t0:.0f}s: "
          f"threshold {gate.threshold:.3f}, features {gate.features}; on calibration: abstains "
          f"{100 * cal['abstention']:.0f}% / false {100 * cal['false_abstention']:.0f}%", flush=True)  # fmt: skip

    t0 = time.perf_counter()
    ans = pipe.answer_batch([e.question for e in answerable])
    una = pipe.answer_batch([e.question for e in unanswerable])
    secs = (time.perf_counter() - t0) / (len(ans) + len(una))
    # The gate reads the evidence already computed: apply it without answering again.
    g_ans, g_una = [apply_gate(a, gate) for a in ans], [apply_gate(a, gate) for a in una]
    rows = {
        "no gate (the model's own abstention)": (rates(ans, answerable), rates(una, unanswerable)),
        "calibrated gate": (rates(g_ans, answerable), rates(g_una, unanswerable)),
    }
    # What an index gets before `ragtune tune`: the bundled default gate (fitted on other SQuAD articles).
    fallback = default_gate(generator.name, index.manifest.embedder)
    if fallback is not None:
        rows["default gate (not calibrated on this index)"] = (
            rates([apply_gate(a, fallback) for a in ans], answerable),
            rates([apply_gate(a, fallback) for a in una], unanswerable),
        )
    for label, g in variants.items():
        if label.startswith("gate without"):
            v_ans, v_una = ([apply_gate(_no_question_side(a), g) for a in x] for x in (ans, una))
        else:
            v_ans, v_una = [apply_gate(a, g) for a in ans], [apply_gate(a, g) for a in una]
        rows[label] = (rates(v_ans, answerable), rates(v_una, unanswerable))
    if args.records:
        Path(args.records).mkdir(parents=True, exist_ok=True)
        Path(args.records, f"{name}.json").write_text(json.dumps({
            "calib_ans": [_record(a, e.answers) for a, e in zip(answered, calib)],
            "calib_un": [_record(a, e.answers) for a, e in zip(refused, calib)],
            "test_ans": [_record(a, e.answers) for a, e in zip(ans, answerable)],
            "test_un": [_record(a, e.answers) for a, e in zip(una, unanswerable)],
        }))  # fmt: skip
    print(f"  {'':<40}{'abstain unanswerable':>21}{'false abstention':>18}{'F1 answerable':>15}")
    for label, (a, u) in rows.items():
        print(f"  {label:<40}{100 * u['abstain']:>20.1f}%{100 * a['abstain']:>17.1f}%{a['f1']:>15.1f}")
    for label in [r for r in rows if "default" in r]:
        a, u = rows[label]
        met = u["abstain"] >= 0.8 and a["abstain"] <= 0.1
        print(f"  {label}: target >= 80% and <= 10%: {'met' if met else 'NOT met'}")
    a, u = rows["calibrated gate"]
    print(f"  target: >= 80% and <= 10%: {'met' if u['abstain'] >= 0.8 and a['abstain'] <= 0.1 else 'NOT met'}; "
          f"{secs:.2f} s per answer ({'extract' if pipe.extracts else 'generate'})")  # fmt: skip
    for x in [x for x in g_una if x.abstained][:2] + [x for x in g_ans if x.abstained][:1]:
        print(f"    e.g. {x.question[:70]!r}: {x.abstain_reason}")
    return {
        "calibration": {"questions": len(calib), "on": args.calibrate_on,
                        **{k: v for k, v in cal.items() if k != "curve"}},  # fmt: skip
        "gate": {k: v for k, v in gate.to_dict().items() if k != "calibration"},
        "rows": {k: {"answerable": a, "unanswerable": u} for k, (a, u) in rows.items()},
        "seconds_per_answer": secs,
    }


def _no_question_side(answer):
    """The answer with the question-side evidence blanked (constant, so a fit leaves it out)."""
    from dataclasses import replace

    if answer.evidence is None:
        return answer
    return replace(answer, evidence=replace(answer.evidence, question_cover=0.0, names_cover=0.0))


def _record(answer, gold) -> dict:
    from dataclasses import asdict

    from ragtune.evaluation.metrics import f1_score

    return {
        "q": answer.question, "text": answer.text, "abstained": answer.abstained, "gold": list(gold),
        "f1": None if answer.abstained else f1_score(answer.text, gold),
        "evidence": asdict(answer.evidence) if answer.evidence else None,
        "sources": [s.text for s in answer.sources], "cited": [c.number for c in answer.citations],
        "hits": [h.chunk.text for h in answer.hits],
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", nargs="+", default=["squad", "pubmedqa"], choices=["squad", "pubmedqa"])
    ap.add_argument("--root", default="/tmp/ragtune-bench/abstention")
    ap.add_argument("--n", type=int, default=100, help="answerable and unanswerable test questions each")
    ap.add_argument("--calibrate", type=int, default=60,
                    help="calibration questions (each also asked without its doc); 60 as `ragtune tune`")  # fmt: skip
    ap.add_argument("--calibrate-on", choices=["synthetic", "real"], default="synthetic")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--records", help="folder: every calibration and test answer's evidence, per corpus")
    args = ap.parse_args()

    from ragtune import make_generator

    generator = make_generator()
    out = {name: run(name, args, generator) for name in args.corpus}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
