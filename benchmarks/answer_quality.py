"""Answer quality on 200 SQuAD v1.1 dev questions with the bundled generator (SmolLM2-135M).

Three readers, same questions, same decoding (greedy, 32 new tokens):
  closed-book  the model alone (the named baseline);
  rag          ragtune's pipeline over an index of the whole dev set (2,067 paragraphs);
  gold         the model reading its gold paragraph (an upper bound for this reader).
Prints EM / F1 (SQuAD rules) and the ratio RAG F1 / closed-book F1.

    python benchmarks/answer_quality.py [--n 200] [--index /tmp/ragtune-bench/squad-dev-index]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import squad_dev, squad_index  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--index", default="/tmp/ragtune-bench/squad-dev-index")
    ap.add_argument("--json", help="write per-question records here")
    ap.add_argument(
        "--modes", nargs="+", default=["generate", "extract"], choices=["generate", "extract"],
        help="rag answer modes to run: the model writes its answer, or picks the most likely span of the sources",
    )  # fmt: skip
    args = ap.parse_args()

    from ragtune import Pipeline, RagConfig, make_embedder, make_generator
    from ragtune.context import Source
    from ragtune.evaluation.metrics import exact_match, f1_score
    from ragtune.prompts import rag_messages
    from ragtune.rag import make_answer

    docs, examples = squad_dev()
    sample = random.Random(args.seed).sample(examples, args.n)
    config = RagConfig(max_new_tokens=32)
    index = squad_index(args.index, make_embedder(), docs)
    generator = make_generator(config.generator)
    questions = [e.question for e in sample]

    runs = {}
    t0 = time.perf_counter()
    runs["closed-book"] = Pipeline(None, generator, config).answer_batch(questions)
    t1 = time.perf_counter()
    secs = {"closed-book": t1 - t0}
    for mode in args.modes:
        t = time.perf_counter()
        runs[f"rag-{mode}"] = Pipeline(index, generator, replace(config, answer_mode=mode), gate=False).answer_batch(
            questions
        )
        secs[f"rag-{mode}"] = time.perf_counter() - t
    t2 = time.perf_counter()
    gold_sources = [[Source(1, e.doc_ids[0] + "#0", e.doc_ids[0], e.title, e.context, 1.0)] for e in sample]
    raws = generator.generate(
        [rag_messages(e.question, s) for e, s in zip(sample, gold_sources)], config.max_new_tokens
    )
    runs["gold-passage"] = [make_answer(e.question, r, s) for e, r, s in zip(sample, raws, gold_sources)]
    t3 = time.perf_counter()
    secs["gold-passage"] = t3 - t2

    print(
        f"{args.n} SQuAD dev questions (seed {args.seed}), generator {config.generator}"
        f", greedy, {config.max_new_tokens} new tokens"
    )
    print(f"{'reader':<16}{'EM':>7}{'F1':>7}{'abstain':>9}{'cited':>7}{'s/q':>7}")
    scores = {}
    for name, answers in runs.items():
        em = 100 * sum(exact_match(a.text, e.answers) for a, e in zip(answers, sample)) / args.n
        f1 = 100 * sum(f1_score(a.text, e.answers) for a, e in zip(answers, sample)) / args.n
        abst = 100 * sum(a.abstained for a in answers) / args.n
        cited = 100 * sum(bool(a.citations) for a in answers) / args.n
        scores[name] = {"em": em, "f1": f1, "abstain_pct": abst, "cited_pct": cited, "s_per_q": secs[name] / args.n}
        print(f"{name:<16}{em:>7.1f}{f1:>7.1f}{abst:>8.1f}%{cited:>6.0f}%{secs[name] / args.n:>7.2f}")
    first = runs[f"rag-{args.modes[0]}"]
    gold_hit = sum(any(h.chunk.doc_id in e.doc_ids for h in a.hits) for a, e in zip(first, sample)) / args.n
    print(f"rag: gold paragraph among the {config.k} retrieved for {100 * gold_hit:.1f}% of questions")
    for mode in args.modes:
        ratio = scores[f"rag-{mode}"]["f1"] / max(scores["closed-book"]["f1"], 1e-9)
        print(f"ratio rag-{mode} F1 / closed-book F1 (baseline: the model without retrieval, same run) = {ratio:.2f}")
    if len(args.modes) == 2:
        ratio = scores["rag-extract"]["f1"] / max(scores["rag-generate"]["f1"], 1e-9)
        print(f"ratio rag-extract F1 / rag-generate F1 (baseline: the model writing its answer, same run) = "
              f"{ratio:.2f}")  # fmt: skip
    if args.json:
        recs = [
            {"id": e.id, "question": e.question, "gold": list(e.answers), **{name: runs[name][i].text for name in runs}}
            for i, e in enumerate(sample)
        ]
        Path(args.json).write_text(json.dumps({"scores": scores, "records": recs}, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
