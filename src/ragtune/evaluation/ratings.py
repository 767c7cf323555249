"""Human evaluation: a blind rating sheet out, the scores back in."""

from __future__ import annotations

import csv
import json
import random
import string
from pathlib import Path

from ..errors import InputError
from .compare import Results


def key_path(sheet: str | Path) -> Path:
    p = Path(sheet)
    return p.with_name(p.stem + ".key.json")


def write_rate_sheet(res: Results, sheet: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """One row per (question, answer); strategies shuffled and named A, B, C... per question.
    The key that unblinds them goes to `<sheet>.key.json` — keep it away from the raters."""
    rng = random.Random(seed)
    by_q: dict[str, dict] = {}
    for r in res.records:
        if r.kind in ("answerable", "unanswerable"):
            by_q.setdefault(f"{r.kind}:{r.question_id}", {})[r.strategy] = r
    key: dict[str, dict[str, str]] = {}
    sheet = Path(sheet)
    with sheet.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["item", "question", "reference answer", "label", "answer", "score (1-5)", "comment"])
        for n, (_qid, recs) in enumerate(sorted(by_q.items())):
            item = f"q{n:04d}"
            strategies = sorted(recs)
            rng.shuffle(strategies)
            key[item] = {}
            for label, s in zip(string.ascii_uppercase, strategies):
                r = recs[s]
                key[item][label] = s
                gold = (
                    " | ".join(r.gold)
                    if r.kind == "answerable"
                    else "(the documents do not answer this; abstaining is right)"
                )
                w.writerow([item, r.question, gold, label, r.answer, "", ""])
    kp = key_path(sheet)
    kp.write_text(json.dumps(key, indent=1))
    return sheet, kp


def read_ratings(sheet: str | Path) -> dict[str, dict]:
    """Filled sheet + its key -> {strategy: {mean, n}}; rows without a score are left out."""
    sheet = Path(sheet)
    kp = key_path(sheet)
    if not sheet.is_file() or not kp.is_file():
        raise InputError(f"ratings need {sheet} and its key {kp}")
    key = json.loads(kp.read_text())
    scores: dict[str, list[float]] = {}
    with sheet.open(newline="", encoding="utf-8") as fh:
        for lineno, row in enumerate(csv.DictReader(fh), start=2):
            raw = (row.get("score (1-5)") or "").strip()
            if not raw:
                continue
            try:
                score = float(raw)
            except ValueError:
                raise InputError(f"{sheet}:{lineno}: score {raw!r} is not a number") from None
            if not 1 <= score <= 5:
                raise InputError(f"{sheet}:{lineno}: score {score} is outside 1-5")
            strategy = key.get(row["item"], {}).get(row["label"])
            if strategy is None:
                raise InputError(f"{sheet}:{lineno}: item {row['item']!r} label {row['label']!r} is not in the key")
            scores.setdefault(strategy, []).append(score)
    return {s: {"mean": sum(v) / len(v), "n": len(v)} for s, v in sorted(scores.items())}
