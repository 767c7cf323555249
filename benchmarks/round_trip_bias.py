"""Does the round-trip filter bias a synthetic test toward `rag`? Each strategy's F1 by the round-trip
reader's rank of the gold answer, on the synthetic test and on the real questions of the same documents.

The round-trip reader is the untrained model `rag` reads with. A question is kept when it ranks the
target among its `SynthConfig.round_trip_top` most likely spans, so a synthetic test holds only ranks
up to that. Real questions have no such filter: this script ranks their gold answers with the same
reader (the answer's sentence and its neighbours, as the question writer read them) and shows where
a trained `rag+ft` gains over `rag` — if the gain lies beyond the filter's top, a synthetic test
cannot see it.

Reads the output folder of benchmarks/evaluate_folder.py (its run/ and real/ comparisons):

    python benchmarks/round_trip_bias.py /tmp/ragtune-bench/evaluate30 [--out ranks.json]
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import statistics
import sys
from pathlib import Path

BUCKETS = ((1, 1), (2, 3), (4, 6), (7, 12), (13, 999))


def bucket(rank: int) -> str:
    return next(f"{lo}-{hi}" if hi != lo else f"{lo}" for lo, hi in BUCKETS if lo <= rank <= hi)


def f1_table(records: Path) -> dict[str, dict[str, float]]:
    """question id -> strategy -> F1, answerable questions only."""
    table: dict[str, dict[str, float]] = collections.defaultdict(dict)
    with records.open() as f:
        for r in csv.DictReader(f):
            if r["kind"] == "answerable":
                table[r["question_id"]][r["strategy"]] = float(r["f1"])
    return table


def show(name: str, table: dict, ranks: dict[str, int]) -> None:
    strategies = sorted({s for row in table.values() for s in row})
    groups: dict[str, list[str]] = collections.defaultdict(list)
    for q, k in ranks.items():
        if q in table:
            groups[bucket(k)].append(q)
    print(f"\n{name}: F1 by the reader's rank of the gold answer")
    print("| rank | n | " + " | ".join(strategies) + " | rag+ft - rag |")
    print("|---|---:|" + "---:|" * (len(strategies) + 1))
    for lo, _hi in BUCKETS:
        qs = groups.get(bucket(lo), [])
        if not qs:
            continue
        mean = {s: 100 * statistics.mean(table[q].get(s, 0.0) for q in qs) for s in strategies}
        gain = mean.get("rag+ft", 0.0) - mean.get("rag", 0.0)
        print(f"| {bucket(lo)} | {len(qs)} | " + " | ".join(f"{mean[s]:.1f}" for s in strategies) + f" | {gain:+.1f} |")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", help="an output folder of benchmarks/evaluate_folder.py")
    ap.add_argument("--out", help="write the real questions' ranks here (JSON)")
    args = ap.parse_args()

    from ragtune.chunking import split_sentences
    from ragtune.evaluation.metrics import f1_score
    from ragtune.synth.generate import SynthConfig, ranked_spans, synth_models
    from ragtune.synth.qg import qg_passage

    root = Path(args.folder)
    cfg = SynthConfig()
    _, reader, _ = synth_models(cfg)

    def rank(passage: str, question: str, answer: str) -> int:  # as the round trip ranks (999: not at all)
        spans = ranked_spans(reader, passage, question, answer, cfg.reader_spans)
        return next((k + 1 for k, s in enumerate(spans) if f1_score(s, [answer]) >= cfg.min_round_trip_f1), 999)

    real_table = f1_table(root / "real" / "records.csv")
    real_ranks: dict[str, int] = {}
    for line in (root / "real-questions.jsonl").open():
        r = json.loads(line)
        if r["id"] not in real_table:
            continue
        sentences = split_sentences((root / r["doc_id"]).read_text())
        best = 999
        for answer in r["answers"]:
            i = next((j for j, s in enumerate(sentences) if answer in s), None)
            if i is not None:
                best = min(best, rank(qg_passage(sentences, i, 1), r["question"], answer))
        real_ranks[r["id"]] = best
    n = len(real_ranks)
    within = {k: sum(v <= k for v in real_ranks.values()) / max(n, 1) for k in (1, 3, 6, 12)}
    print(f"real questions: {n}; the reader ranks the gold answer within "
          + ", ".join(f"{k}: {100 * v:.0f}%" for k, v in within.items()))  # fmt: skip
    show("real questions", real_table, real_ranks)

    synth = {}
    for line in (root / "run" / "questions" / "synthetic.jsonl").open():
        r = json.loads(line)
        synth[r["id"]] = r["scores"]["round_trip_rank"]
    synth_table = f1_table(root / "run" / "records.csv")
    show("synthetic test (round_trip_rank as recorded)", synth_table, {q: k for q, k in synth.items() if k > 0})
    if args.out:
        Path(args.out).write_text(json.dumps(real_ranks, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
