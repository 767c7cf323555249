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


def _read_key(sheet: str | Path) -> dict:
    """The key written beside a filled sheet (both must exist)."""
    sheet, kp = Path(sheet), key_path(sheet)
    if not sheet.is_file() or not kp.is_file():
        raise InputError(f"ratings need {sheet} and its key {kp}")
    return json.loads(kp.read_text())


def _yes_no(raw: str | None, what: str, where: str) -> float | None:
    """1.0 / 0.0 for a y / n cell, None when empty; anything else is an InputError."""
    yn = (raw or "").strip().lower()
    if not yn:
        return None
    if yn[0] not in "yn":
        raise InputError(f"{where}: {what} {yn!r} must be y or n")
    return float(yn[0] == "y")


def read_ratings(sheet: str | Path) -> dict[str, dict]:
    """Filled sheet + its key -> {strategy: {mean, n}}; rows without a score are left out."""
    sheet, key = Path(sheet), _read_key(sheet)
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


# -- vetting synthetic questions -----------------------------------------------------------------

QUESTION_COLUMNS = ["item", "passage", "question", "answer", "good question (1-5)", "answer right (y/n)", "comment"]


def _read_jsonl(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"questions file {str(p)!r} does not exist")
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_question_sheet(questions: str | Path, sheet: str | Path, real: str | Path | None = None, n: int = 50,
                         seed: int = 0) -> tuple[Path, Path]:  # fmt: skip
    """A blind sheet for vetting questions: up to `n` synthetic questions (and, with `real`, as
    many real ones of the same documents, mixed in) in random order, each with its passage and
    answer. The key (`<sheet>.key.json`) says which row is which; keep it from the raters."""
    rng = random.Random(seed)
    rows = [("synthetic", r) for r in _read_jsonl(questions)]
    rng.shuffle(rows)
    rows = rows[:n]
    if real:
        reals = [("real", r) for r in _read_jsonl(real)]
        rng.shuffle(reals)
        rows += reals[: len(rows)]
    rng.shuffle(rows)
    sheet = Path(sheet)
    key = {}
    with sheet.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(QUESTION_COLUMNS)
        for i, (source, r) in enumerate(rows):
            item = f"q{i:04d}"
            key[item] = {"source": source, "id": r.get("id", "")}
            answer = r.get("answer") or " | ".join(r.get("answers") or [])
            w.writerow([item, r.get("context", ""), r["question"], answer, "", "", ""])
    kp = key_path(sheet)
    kp.write_text(json.dumps(key, indent=1))
    return sheet, kp


def read_question_ratings(sheet: str | Path) -> dict[str, dict]:
    """Filled question sheet + key -> {source: {mean, n, answer_right}} (synthetic vs real)."""
    sheet, key = Path(sheet), _read_key(sheet)
    scores: dict[str, list[float]] = {}
    right: dict[str, list[float]] = {}
    with sheet.open(newline="", encoding="utf-8") as fh:
        for lineno, row in enumerate(csv.DictReader(fh), start=2):
            source = key.get(row.get("item", ""), {}).get("source")
            if source is None:
                raise InputError(f"{sheet}:{lineno}: item {row.get('item')!r} is not in the key")
            raw = (row.get("good question (1-5)") or "").strip()
            if raw:
                try:
                    score = float(raw)
                except ValueError:
                    raise InputError(f"{sheet}:{lineno}: score {raw!r} is not a number") from None
                if not 1 <= score <= 5:
                    raise InputError(f"{sheet}:{lineno}: score {score} is outside 1-5")
                scores.setdefault(source, []).append(score)
            yn = _yes_no(row.get("answer right (y/n)"), "answer right", f"{sheet}:{lineno}")
            if yn is not None:
                right.setdefault(source, []).append(yn)
    out = {}
    for source in sorted(set(scores) | set(right)):
        s, r = scores.get(source, []), right.get(source, [])
        out[source] = {
            "mean": sum(s) / len(s) if s else None,
            "n": len(s),
            "answer_right": sum(r) / len(r) if r else None,
        }
    return out


# -- are the fact edits believable? ---------------------------------------------------------------

EDIT_COLUMNS = ["item", "sentence", "believable (y/n)", "comment"]


def write_edit_sheet(res: Results, sheet: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """A blind sheet for the freshness test's edits: each edited sentence is shown either as
    edited or as it was (a coin flip per item), so a rater judges "does this read as true?"
    without knowing which; the key (`<sheet>.key.json`) says which rows were edited."""
    edits = [e for e in res.freshness.get("edits", []) if e.get("sentence")]
    if not edits:
        raise InputError("these results have no edited facts with their sentences (run compare with fresh_edits)")
    rng = random.Random(seed)
    key = {}
    sheet = Path(sheet)
    with sheet.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(EDIT_COLUMNS)
        for i, e in enumerate(edits):
            edited = rng.random() < 0.5
            item = f"e{i:04d}"
            key[item] = {"edited": edited, "old": e["old"], "new": e["new"], "kind": e["kind"]}
            text = e["sentence"] if edited else e["sentence"].replace(e["new"], e["old"])
            w.writerow([item, text, "", ""])
    kp = key_path(sheet)
    kp.write_text(json.dumps(key, indent=1))
    return sheet, kp


def read_edit_ratings(sheet: str | Path) -> dict[str, dict]:
    """Filled edit sheet + key -> {"edited" | "original": {believable, n}}: how often an edited
    sentence passes for true, against the same raters' rate for untouched ones."""
    sheet, key = Path(sheet), _read_key(sheet)
    votes: dict[str, list[float]] = {}
    with sheet.open(newline="", encoding="utf-8") as fh:
        for lineno, row in enumerate(csv.DictReader(fh), start=2):
            info = key.get(row.get("item", ""))
            if info is None:
                raise InputError(f"{sheet}:{lineno}: item {row.get('item')!r} is not in the key")
            yn = _yes_no(row.get("believable (y/n)"), "believable", f"{sheet}:{lineno}")
            if yn is not None:
                votes.setdefault("edited" if info["edited"] else "original", []).append(yn)
    return {k: {"believable": sum(v) / len(v), "n": len(v)} for k, v in sorted(votes.items())}
