"""The rate sheet for the fact editor: would a reader believe each edited sentence?

Writes the edits that `benchmarks/counterfactual.py` makes (SQuAD dev, the 12 held-out articles,
the same seed and embedder) as a CSV with an empty `plausible` column for a person to fill in (y/n);
given a filled sheet (`--rated FILE`), prints the share judged plausible, overall and per kind, and
the ones judged not. A rated sheet is kept in `docs/freshness/edit-ratings.csv`.

    python benchmarks/edit_sheet.py --out edits.csv [--n 120] [--seed 0]
    python benchmarks/edit_sheet.py --rated docs/freshness/edit-ratings.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import held_out_squad  # noqa: E402

FIELDS = ["kind", "question", "old", "new", "sentence", "plausible"]


def write_sheet(out: Path, n: int, seed: int) -> None:
    from ragtune import make_embedder
    from ragtune.evaluation.freshness import edit_facts, edited_sentence

    docs, examples = held_out_squad()
    _, edits = edit_facts(docs, examples, n, seed, embedder=make_embedder())
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, FIELDS)
        w.writeheader()
        for e in edits:
            w.writerow(
                {"kind": e.kind, "question": e.example.question, "old": e.old, "new": e.new,
                 "sentence": edited_sentence(e), "plausible": ""}
            )  # fmt: skip
    print(f"{len(edits)} edits written to {out}: fill in the plausible column (y/n)")


def read_ratings(path: Path) -> int:
    rows = list(csv.DictReader(path.open()))
    rated = [r for r in rows if r["plausible"].strip().lower() in ("y", "n")]
    if not rated:
        sys.exit(f"{path}: no row has plausible = y or n")
    yes = [r for r in rated if r["plausible"].strip().lower() == "y"]
    print(f"plausible: {len(yes)} of {len(rated)} rated edits ({100 * len(yes) / len(rated):.1f} %)")
    kinds, kinds_yes = Counter(r["kind"] for r in rated), Counter(r["kind"] for r in yes)
    for k, total in kinds.most_common():
        print(f"  {k:<9} {kinds_yes[k]:>3} / {total:<3}")
    for r in rated:
        if r not in yes:
            print(f"  not believed: {r['old']!r} -> {r['new']!r} ({r['kind']}; {r['question']})")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("edits.csv"))
    ap.add_argument("--rated", type=Path)
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.rated:
        return read_ratings(args.rated)
    write_sheet(args.out, args.n, args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
