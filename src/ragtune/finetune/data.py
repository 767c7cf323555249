"""Prepare training data: read, clean (each step counted, with examples), split, report.

prepare(["qa.jsonl"], out_dir)  ->  train.jsonl, validation.jsonl, test.jsonl, report.json, report.md
"""

from __future__ import annotations

import json
import random
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..documents import decode_text, load_paths, load_squad, normalise_text, read_bytes
from ..errors import ConfigError, DocumentError, RagtuneError

SPLITS = ("train", "validation", "test")
CONFLICT_POLICIES = ("majority", "drop", "first")


@dataclass(frozen=True)
class Example:
    """One training example. `kind` is qa (question -> answer) or text (corpus chunk)."""

    id: str
    kind: str
    question: str = ""
    answer: str = ""
    answers: tuple[str, ...] = ()
    context: str = ""
    doc_id: str = ""
    text: str = ""
    source: str = ""  # file:line it came from

    def key_text(self) -> str:
        return self.question if self.kind == "qa" else self.text


@dataclass(frozen=True)
class PrepareConfig:
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train / validation / test
    seed: int = 0
    near_dup_threshold: float = 0.9  # MinHash Jaccard estimate above which two examples are near-duplicates
    conflict_policy: str = "majority"  # majority: keep the most common answer (drop ties) | drop | first
    max_tokens: int = 1024  # longer examples are length outliers (the model's training context)
    min_answer_chars: int = 1
    skip_bad: bool = False  # skip malformed lines (reported) instead of failing

    def __post_init__(self) -> None:
        if (
            len(self.ratios) != 3
            or any(r < 0 for r in self.ratios)
            or abs(sum(self.ratios) - 1) > 1e-6
            or self.ratios[0] <= 0
        ):
            raise ConfigError(f"ratios={self.ratios!r}: need three non-negative shares summing to 1, train > 0")
        if self.conflict_policy not in CONFLICT_POLICIES:
            raise ConfigError(f"conflict_policy={self.conflict_policy!r}: must be one of {CONFLICT_POLICIES}")
        if not 0 < self.near_dup_threshold <= 1:
            raise ConfigError(f"near_dup_threshold={self.near_dup_threshold!r}: must be in (0, 1]")


@dataclass
class StepReport:
    name: str
    removed: int = 0
    examples: list[str] = field(default_factory=list)  # a few of what the step caught

    def catch(self, what: str) -> None:
        self.removed += 1
        if len(self.examples) < 5:
            self.examples.append(what[:300])


@dataclass
class DataReport:
    inputs: list[str]
    read: int = 0
    steps: list[StepReport] = field(default_factory=list)
    kept: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    def to_markdown(self) -> str:
        lines = ["# Data report", "", f"Inputs: {', '.join(self.inputs)}", f"Examples read: {self.read}", ""]
        lines += ["| step | removed |", "| --- | ---: |"] + [f"| {s.name} | {s.removed} |" for s in self.steps]
        lines += ["", f"Kept: {self.kept}; " + ", ".join(f"{k} {v}" for k, v in self.splits.items()), ""]
        for s in self.steps:
            if s.examples:
                lines += [f"## {s.name}: examples caught", ""] + [f"- {e}" for e in s.examples] + [""]
        return "\n".join(lines)


# -- reading ----------------------------------------------------------------------------------


def _scalar(rec: dict, key: str) -> str:
    """A field that must be text: a string or a number (null and missing are ""); else ValueError."""
    value = rec.get(key)
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        raise ValueError(f"{key!r} must be a string, got {'an object' if isinstance(value, dict) else 'a list'}")
    return value if isinstance(value, str) else str(value)  # a number: 1884 -> "1884"


def _answers_of(rec: dict) -> tuple[str, ...]:
    if isinstance(rec.get("answers"), list):
        out = []
        for i, a in enumerate(rec["answers"]):
            out.append(_scalar(a, "text") if isinstance(a, dict) else _scalar({f"answers[{i}]": a}, f"answers[{i}]"))
        return tuple(out)
    if "answers" in rec and rec["answers"] is not None:
        raise ValueError("'answers' must be a list")
    for key in ("answer", "output"):
        if key in rec:
            return (_scalar(rec, key),)
    return ()


def _lines(path: Path) -> list[str]:
    """The lines of a text file in whatever encoding it is (NUL bytes dropped), split at \n only:
    a JSON string may hold U+2028, which str.splitlines() would break a line at."""
    text, _ = decode_text(path, read_bytes(path))
    return text.split("\n")


def read_jsonl(path: Path, skip_bad: bool, bad: StepReport) -> list[Example]:
    """QA lines (`question`, `answer`|`answers`, optional `context`, `id`, `doc_id`) or
    instruction lines (`instruction`, `input`, `output`)."""
    out = []
    for lineno, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            try:
                rec = json.loads(line)
            except RecursionError:
                raise ValueError("nested too deeply") from None
            if not isinstance(rec, dict):
                raise ValueError("a line must be a JSON object")
            if "instruction" in rec:
                question = _scalar(rec, "instruction") + (("\n\n" + _scalar(rec, "input")) if rec.get("input") else "")
            elif "question" in rec:
                question = _scalar(rec, "question")
            else:
                raise ValueError("needs 'question' (QA) or 'instruction' (instruction format)")
            answers = _answers_of(rec)
            if not answers:
                raise ValueError("needs 'answer', 'answers' or 'output'")
            example = Example(
                id=_scalar(rec, "id") or f"{path.stem}:{lineno}",
                kind="qa",
                question=question,
                answer=answers[0],
                answers=answers,
                context=_scalar(rec, "context"),
                doc_id=_scalar(rec, "doc_id"),
                source=where,
            )
        except ValueError as exc:  # json.JSONDecodeError too; and a 5000-digit number
            if not skip_bad:
                raise DocumentError(f"{where}: {exc} (use --skip-bad to skip such lines)") from exc
            bad.catch(f"{where}: {exc}")
            continue
        out.append(example)
    return out


def read_inputs(
    inputs: Sequence[str | Path], skip_bad: bool, bad: StepReport, chunk_text: Callable | None = None
) -> list[Example]:
    examples: list[Example] = []
    for raw in inputs:
        p = Path(raw)
        if _is_index(str(raw)):
            examples += _read_index(str(raw))
        elif p.is_file() and p.suffix == ".jsonl":
            examples += read_jsonl(p, skip_bad, bad)
        elif p.is_file() and p.suffix == ".json":
            _, qas = load_squad(p)
            examples += [
                Example(
                    q.id,
                    "qa",
                    q.question,
                    q.answers[0] if q.answers else "",
                    q.answers,
                    q.context,
                    q.doc_ids[0] if q.doc_ids else "",
                    source=str(p),
                )
                for q in qas
            ]
        elif p.exists():
            res = load_paths([p])
            for s in res.skipped:
                bad.catch(f"{s.path}: {s.reason}")
            docs = res.documents
            texts = chunk_text(docs) if chunk_text else [(d.id, d.text) for d in docs]
            examples += [
                Example(f"{did}:{i}", "text", text=t, doc_id=did, source=did) for i, (did, t) in enumerate(texts)
            ]
        else:
            raise DocumentError(f"{raw}: no such file or directory")
    return examples


def _is_index(url: str) -> bool:
    from ..stores import backend_for

    remote = url.startswith(("pg:", "postgresql:", "postgres:")) or "://" in url  # a server or an object store
    return (remote or Path(url).is_dir()) and backend_for(url).exists(url)


def _read_index(url: str) -> list[Example]:
    from ..index import Index

    return [Example(c.id, "text", text=c.text, doc_id=c.doc_id, source=url) for c in Index.open(url).chunks()]


# -- cleaning ---------------------------------------------------------------------------------


def _norm(s: str) -> str:
    """NFKC, no zero-width characters, spaces collapsed; paragraph breaks survive. Idempotent."""
    # Zero-width characters go before NFKC: removed after it, they could leave a pair NFKC composes.
    s = unicodedata.normalize("NFKC", re.sub(r"[\u200b-\u200f\ufeff]", "", s))
    paras = (" ".join(p.split()) for p in re.split(r"\n\s*\n", s))
    return "\n\n".join(p for p in paras if p)


def _key(s: str) -> str:
    return re.sub(r"[^\w\s]", "", _norm(s).lower()).strip()


def question_key(question: str) -> str:
    """A short hash of a question, normalised (`_key`): what a fine-tuning run records of the questions it
    trained on (`run.TRAINED_ON`), so that no gate is calibrated on them later."""
    import hashlib

    return hashlib.sha1(_key(question).encode()).hexdigest()[:16]


def _shingles(s: str, n: int = 3) -> set[str]:
    words = _key(s).split()
    return {" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))} if words else set()


def _minhash(s: str, num_perm: int = 64):
    from datasketch import MinHash

    m = MinHash(num_perm=num_perm, seed=1)
    m.update_batch([x.encode("utf-8") for x in _shingles(s)])
    return m


def near_duplicate_groups(texts: Sequence[str], threshold: float) -> list[int]:
    """Group id per text: texts whose MinHash Jaccard estimate passes `threshold` share a group."""
    from datasketch import MinHashLSH

    if threshold >= 0.99:  # LSH cannot band that tightly: only identical shingle sets group
        first: dict[frozenset, int] = {}
        return [first.setdefault(frozenset(_shingles(t)), i) for i, t in enumerate(texts)]
    lsh = MinHashLSH(threshold=threshold, num_perm=64)
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    hashes = [_minhash(t) for t in texts]
    for i, m in enumerate(hashes):
        for j in lsh.query(m):
            if hashes[j].jaccard(m) >= threshold:
                parent[find(i)] = find(j)
        lsh.insert(i, m)
    return [find(i) for i in range(len(texts))]


def clean(
    examples: list[Example], cfg: PrepareConfig, count_tokens: Callable[[Sequence[str]], list[int]], report: DataReport
) -> list[Example]:
    """Normalise, then drop: empty fields, exact duplicates, near-duplicates, conflicting
    labels (by policy), and length outliers. Each step is counted with examples."""
    step = StepReport("unicode/whitespace normalised (changed, not removed)")
    normed = []
    for e in examples:
        n = Example(
            e.id,
            e.kind,
            _norm(e.question),
            _norm(e.answer),
            tuple(_norm(a) for a in e.answers),
            normalise_text(e.context),
            e.doc_id,
            normalise_text(e.text),
            e.source,
        )
        if (n.question, n.answer, n.text) != (e.question, e.answer, e.text) and len(step.examples) < 5:
            step.examples.append(f"{e.source}: {e.key_text()[:80]!r} -> {n.key_text()[:80]!r}")
        normed.append(n)
    report.steps.append(step)

    step = StepReport("empty or missing fields")
    kept = []
    for e in normed:
        empty = (not e.text) if e.kind == "text" else (not e.question or len(e.answer) < cfg.min_answer_chars)
        if empty:
            step.catch(f"{e.source}: question={e.question[:60]!r} answer={e.answer[:60]!r}")
        else:
            kept.append(e)
    report.steps.append(step)

    # Conflicts before exact duplicates, so that repeated labels count as votes.
    step = StepReport("conflicting labels (same question, different answers)")
    by_q: dict[tuple, list[Example]] = defaultdict(list)
    for e in kept:
        by_q[(e.kind, _key(e.key_text()), e.context)].append(e)
    out = []
    for group in by_q.values():
        answers = Counter(_key(e.answer) for e in group)
        if group[0].kind != "qa" or len(answers) == 1:
            out.extend(group)
            continue
        ranked = answers.most_common()
        if cfg.conflict_policy == "first":
            winner = _key(group[0].answer)
        elif cfg.conflict_policy == "majority" and ranked[0][1] > ranked[1][1]:
            winner = ranked[0][0]
        else:
            winner = None  # drop, or a tie under majority
        survivors = [e for e in group if _key(e.answer) == winner]
        out.extend(survivors)
        step.removed += len(group) - len(survivors)
        if len(step.examples) < 5:
            step.examples.append(
                f"{group[0].question[:80]!r}: answers {[e.answer for e in group][:4]} -> "
                f"{survivors[0].answer if survivors else 'all dropped'!r} (policy {cfg.conflict_policy})"
            )
    kept = out
    report.steps.append(step)

    step = StepReport("exact duplicates")
    seen, out = set(), []
    for e in kept:
        k = (e.kind, _key(e.key_text()), _key(e.answer), e.context)
        if k in seen:
            step.catch(f"{e.source}: {e.key_text()[:100]!r}")
        else:
            seen.add(k)
            out.append(e)
    kept = out
    report.steps.append(step)

    step = StepReport(f"near-duplicates (MinHash Jaccard >= {cfg.near_dup_threshold})")
    texts = [e.key_text() + " || " + e.answer for e in kept]
    groups = near_duplicate_groups(texts, cfg.near_dup_threshold)
    first_of: dict[int, int] = {}
    out = []
    for i, (e, g) in enumerate(zip(kept, groups)):
        if g in first_of:
            step.catch(f"{e.source}: {e.key_text()[:90]!r} ~ {kept[first_of[g]].key_text()[:90]!r}")
        else:
            first_of[g] = i
            out.append(e)
    kept = out
    report.steps.append(step)

    step = StepReport(f"length outliers (> {cfg.max_tokens} tokens)")
    sizes = count_tokens([" ".join([e.context, e.question, e.answer, e.text]) for e in kept])
    out = []
    for e, n in zip(kept, sizes):
        if n > cfg.max_tokens:
            step.catch(f"{e.source}: {n} tokens")
        else:
            out.append(e)
    report.steps.append(step)
    return out


def twin_groups(examples: Sequence[Example], cfg: PrepareConfig) -> list[int]:
    """Group id per example: near-identical questions share a group, and so do questions with the same
    answer in the same document (one fact asked two ways)."""
    groups = near_duplicate_groups([e.key_text() for e in examples], min(cfg.near_dup_threshold, 0.7))
    parent = list(range(max(groups, default=-1) + 1))

    def root(g: int) -> int:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    first_of: dict[tuple[str, str], int] = {}
    for e, g in zip(examples, groups):
        if e.kind == "qa" and e.doc_id and _key(e.answer):
            other = first_of.setdefault((e.doc_id, _key(e.answer)), g)
            parent[root(g)] = root(other)
    return [root(g) for g in groups]


def split(examples: list[Example], cfg: PrepareConfig, untested: Collection[str] = ()) -> dict[str, list[Example]]:
    """Deterministic split by ratio and seed. A group of twins (`twin_groups`) never straddles two
    splits, so no test question has a twin in training. The examples whose ids are in `untested`,
    and their twins, never go to the test split: its share (of all examples) is then filled from the
    others, as far as they go."""
    groups = twin_groups(examples, cfg)
    members: dict[int, list[Example]] = defaultdict(list)
    for e, g in zip(examples, groups):
        members[g].append(e)
    order = sorted(members, key=lambda g: min(x.id for x in members[g]))
    random.Random(cfg.seed).shuffle(order)
    n = len(examples)
    out: dict[str, list[Example]] = {s: [] for s in SPLITS}
    held = set(untested)
    if not held:
        bounds = (cfg.ratios[0] * n, (cfg.ratios[0] + cfg.ratios[1]) * n)
        placed = 0
        for g in order:
            name = "train" if placed < bounds[0] else "validation" if placed < bounds[1] else "test"
            out[name].extend(members[g])
            placed += len(members[g])
        return out
    want = {"test": cfg.ratios[2] * n, "validation": cfg.ratios[1] * n}
    for g in order:
        testable = not any(x.id in held for x in members[g])
        name = next((s for s in ("test", "validation") if len(out[s]) < want[s] and (testable or s != "test")), "train")
        out[name].extend(members[g])
    return out


def write_jsonl(path: Path, examples: Sequence[Example]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for e in examples:
            fh.write(json.dumps(asdict(e), ensure_ascii=False) + "\n")


def read_split(path: Path) -> list[Example]:
    if not path.is_file():
        raise RagtuneError(f"{path} is missing: run `ragtune prepare` first")
    return [
        Example(**{**json.loads(l), "answers": tuple(json.loads(l)["answers"])})
        for l in path.read_text(encoding="utf-8").splitlines()
        if l.strip()
    ]


def _rough_tokens(texts: Sequence[str]) -> list[int]:
    return [len(t.split()) * 4 // 3 for t in texts]


def add_training_only(out: str | Path, inputs: Sequence[str | Path], cfg: PrepareConfig = PrepareConfig()) -> int:
    """Append the examples of `inputs` to the train.jsonl of `out` (a prepared folder), cleaned as
    `prepare` cleans, except each that has a twin (`twin_groups`) in its validation or test split:
    examples that may be trained on and are never tested on. Returns how many were added."""
    out = Path(out)
    held = [e for name in ("validation", "test") if (out / f"{name}.jsonl").is_file()
            for e in read_split(out / f"{name}.jsonl")]  # fmt: skip
    report = DataReport(inputs=[str(i) for i in inputs], config=asdict(cfg))
    new = clean(read_inputs(inputs, cfg.skip_bad, StepReport("malformed input (skipped)")), cfg, _rough_tokens, report)
    groups = twin_groups([*held, *new], cfg)
    taken = set(groups[: len(held)])
    added = [e for e, g in zip(new, groups[len(held) :]) if g not in taken]
    with (out / "train.jsonl").open("a", encoding="utf-8") as fh:
        for e in added:
            fh.write(json.dumps(asdict(e), ensure_ascii=False) + "\n")
    return len(added)


def prepare(
    inputs: Sequence[str | Path],
    out: str | Path,
    cfg: PrepareConfig = PrepareConfig(),
    count_tokens: Callable[[Sequence[str]], list[int]] | None = None,
    chunk_text: Callable | None = None,
    untested: Collection[str] = (),
) -> DataReport:
    """Read, clean, split and write the data set to `out`; returns the data report. The examples whose
    ids are in `untested` (and their twins) never go to the test split (`split`)."""
    count_tokens = count_tokens or _rough_tokens
    report = DataReport(inputs=[str(i) for i in inputs], config=asdict(cfg))
    bad = StepReport("malformed input (skipped)")
    examples = read_inputs(inputs, cfg.skip_bad, bad, chunk_text)
    report.read = len(examples) + bad.removed
    report.steps.append(bad)
    cleaned = clean(examples, cfg, count_tokens, report)
    if not cleaned:
        raise RagtuneError(
            f"no examples left after cleaning {report.read} read from {report.inputs}; see the steps: "
            + ", ".join(f"{s.name}: {s.removed}" for s in report.steps if s.removed)
        )
    parts = split(cleaned, cfg, untested)
    report.kept = len(cleaned)
    report.splits = {k: len(v) for k, v in parts.items()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, exs in parts.items():
        write_jsonl(out / f"{name}.jsonl", exs)
    (out / "report.json").write_text(json.dumps(asdict(report), indent=2, ensure_ascii=False))
    (out / "report.md").write_text(report.to_markdown())
    return report
