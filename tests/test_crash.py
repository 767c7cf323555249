"""Crash safety: each long run is SIGKILLed (or SIGTERMed) in a subprocess at a seeded random
point after it has visibly started, then rerun; what it left must be whole, and the rerun must end
where an uninterrupted run ends. RAGTUNE_CRASH_SEED picks other kill points (the default is fixed
so the suite is reproducible)."""

from __future__ import annotations

import csv
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ragtune.documents import Document
from ragtune.index import Index
from ragtune.testing import HashingEmbedder

from .crash_helpers import CHUNKING, compare_generators, experiment

ROOT = Path(__file__).resolve().parent.parent
SEED = int(os.environ.get("RAGTUNE_CRASH_SEED", "20240607"))


def rng_for(name: str) -> random.Random:
    return random.Random(f"{SEED}:{name}")


class Proc:
    """`python -m tests.crash_helpers ARGS` with its output lines collected as they come."""

    def __init__(self, *args):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
               "OMP_NUM_THREADS": "1"}  # fmt: skip
        self.p = subprocess.Popen(
            [sys.executable, "-m", "tests.crash_helpers", *map(str, args)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for line in self.lines[seen:]:
                seen += 1
                m = re.search(pattern, line)
                if m:
                    return m
            if self.p.poll() is not None and seen == len(self.lines):
                self._reader.join(5)
                if seen == len(self.lines):
                    break
            time.sleep(0.005)
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines[-40:]))

    def signal(self, sig: int) -> None:
        assert self.p.poll() is None, "the run finished before it could be interrupted:\n" + "\n".join(self.lines)
        self.p.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            rc = self.p.wait(timeout)
        finally:
            if self.p.poll() is None:
                self.p.kill()
                self.p.wait()
        self._reader.join(5)
        return rc

    def output(self) -> str:
        return "\n".join(self.lines)


def kill_after(proc: Proc, pattern: str | None, delay: float) -> None:
    """SIGKILL once `pattern` has appeared and `delay` more seconds have passed; assert it was mid-run."""
    if pattern is not None:
        proc.wait_for(pattern)
    time.sleep(delay)
    proc.signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL


# -- 1. compare ------------------------------------------------------------------------------------

TIMING = {"retrieve_s", "context_s", "generate_s", "total_s"}


def town_corpus(folder: Path, n: int = 12) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        hills = " ".join(f"Hill{i}x{j}" for j in range(i))  # lengths differ: no two documents tie in BM25
        (folder / f"town{i}.txt").write_text(
            f"Town{i} is the capital of Land{i}. Town{i} was founded in {1800 + 7 * i}. Its river is the Flow{i}. "
            f"Its hills: {hills}."
        )
    return folder


def _comparable(res) -> dict:
    """What an interrupted-and-resumed run must share with an uninterrupted one: all but timings."""
    drop = ("latency_", "_mean_s")
    costs_drop = {"per_question_wall_s", "per_question_cpu_s", "per_1000_questions_usd", "peak_rss_mb", "update_cost_s"}
    return {
        "records": [{k: v for k, v in vars(r).items() if k not in TIMING} for r in res.records],
        "aggregates": {
            s: {k: v for k, v in a.items() if not (k.startswith(drop[0]) or k.endswith(drop[1]))}
            for s, a in res.aggregates.items()
        },
        "costs": {s: {k: v for k, v in c.items() if k not in costs_drop} for s, c in res.costs.items()},
        "paired": res.paired,
        "config": res.config,
        "strategies": res.strategies,
        "edits": res.freshness.get("edits"),
        "tuning": res.tuning,
    }


def _csv_rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(fh)]


def test_compare_killed_midway_reuses_its_records_and_matches_a_clean_run(tmp_path):
    from ragtune.evaluation.compare import PARTIAL, load_results, run_experiment

    corpus = town_corpus(tmp_path / "corpus")
    Index.create(tmp_path / "ix", embedder=HashingEmbedder(64), chunking=CHUNKING).ingest([corpus])
    qs = [
        q
        for i in range(12)
        for q in (
            {"id": f"cap{i}", "question": f"What is the capital of Land{i}?", "answers": [f"Town{i}"],
             "doc_id": f"corpus/town{i}.txt"},
            {"id": f"year{i}", "question": f"When was Town{i} founded?", "answers": [str(1800 + 7 * i)],
             "doc_id": f"corpus/town{i}.txt"},
        )
    ]  # fmt: skip
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(q) + "\n" for q in qs))
    una = [{"id": f"u{j}", "question": f"What is the capital of Land{90 + j}?", "answers": [f"Town{90 + j}"],
            "doc_id": f"elsewhere/{j}"} for j in range(4)]  # fmt: skip
    (tmp_path / "u.jsonl").write_text("".join(json.dumps(q) + "\n" for q in una))
    config = {
        "index": str(tmp_path / "ix"),
        "questions": str(tmp_path / "q.jsonl"),
        "unanswerable": str(tmp_path / "u.jsonl"),
        "documents": str(corpus),
        "fresh_edits": 4,
        "bootstrap": 200,
        "strategies": [{"name": "base", "retrieval": False}, {"name": "rag", "retrieval": True}],
    }
    (tmp_path / "exp.json").write_text(json.dumps(config))

    clean = run_experiment(experiment(config), tmp_path / "clean", generators=compare_generators())
    n_records = len(clean.records)
    assert clean.aggregates["rag"]["n_edited"] == 4 and n_records == 2 * (24 + 4 + 4)
    assert clean.aggregates["rag"]["em"]["mean"] == 100.0 and clean.aggregates["rag"]["fresh_rate"] == 1.0
    assert not (tmp_path / "clean" / PARTIAL).exists()

    out = tmp_path / "cut"
    proc = Proc("compare", tmp_path / "exp.json", out, 0.05)  # 64 answers x 0.05 s: about 3 s of answering
    proc.wait_for(r"^base: \d+ answerable")
    deadline = time.monotonic() + 30
    while not ((out / PARTIAL).is_file() and (out / PARTIAL).read_bytes().count(b"\n")):  # a batch is down
        assert time.monotonic() < deadline and proc.p.poll() is None, proc.output()
        time.sleep(0.005)
    kill_after(proc, None, rng_for("compare").uniform(0.0, 1.2))
    assert "done" not in proc.lines and not (out / "results.json").exists()
    written = (out / PARTIAL).read_bytes().count(b"\n")
    assert 0 < written < n_records

    # Records are fingerprinted: another configuration in the same folder reuses none of them.
    shutil.copytree(out, tmp_path / "other")
    said: list[str] = []
    other = experiment({**config, "support_threshold": 0.6, "strategies": config["strategies"][:1], "fresh_edits": 0})
    run_experiment(other, tmp_path / "other", progress=said.append, generators=compare_generators())
    assert not [s for s in said if "reused" in s]

    said = []
    resumed = run_experiment(experiment(config), out, progress=said.append, generators=compare_generators())
    total = [re.search(r"reused (\d+) of (\d+) records from", s) for s in said]
    total = [m for m in total if m]
    assert total, said
    reused = int(total[0].group(1))
    assert 0 < reused <= written and int(total[0].group(2)) == n_records
    assert _comparable(resumed) == _comparable(clean)
    assert _comparable(load_results(out)) == _comparable(load_results(tmp_path / "clean"))
    assert _csv_rows(out / "records.csv") == _csv_rows(tmp_path / "clean" / "records.csv")
    assert not (out / PARTIAL).exists()


def test_a_torn_record_line_is_dropped_not_trusted(tmp_path):
    from ragtune.evaluation.compare import RecordLog

    log = RecordLog(tmp_path / "r.jsonl")
    rec = {"strategy": "s", "question_id": "q", "kind": "answerable", "question": "?", "gold": [], "answer": "a",
           "abstained": False}  # fmt: skip
    log.add([{"fp": "a", "record": rec, "wall_s": 0.1, "cpu_s": 0.1}])
    log.close()
    with (tmp_path / "r.jsonl").open("a") as fh:
        fh.write('{"fp": "b", "record": {"strategy": "s", "quest')  # killed mid-write
    again = RecordLog(tmp_path / "r.jsonl")
    assert again.get("a") and again.get("b") is None
    again.add([{"fp": "c", "record": rec, "wall_s": 0.1, "cpu_s": 0.1}])
    again.close()
    assert set(RecordLog(tmp_path / "r.jsonl").rows) == {"a", "c"}


def test_evaluate_killed_in_its_comparison_resumes_with_its_plan_questions_and_records(tmp_path, monkeypatch):
    from ragtune.evaluation.compare import PARTIAL, load_results
    from ragtune.evaluation.evaluate import EvaluateConfig, run_evaluate
    from ragtune.synth import generate as gen_mod

    from .crash_helpers import evaluate_generators
    from .test_synth import town_folder

    folder = town_folder(tmp_path / "docs")
    out = tmp_path / "out"
    proc = Proc("evaluate", folder, out, 0.02)  # about 160 answers in the comparison: 3 s of answering
    proc.wait_for(r"^  base: \d+ answerable")
    deadline = time.monotonic() + 30
    while not ((out / PARTIAL).is_file() and (out / PARTIAL).read_bytes().count(b"\n")):
        assert time.monotonic() < deadline and proc.p.poll() is None, proc.output()
        time.sleep(0.005)
    kill_after(proc, None, rng_for("evaluate").uniform(0.0, 1.5))
    assert "done" not in proc.lines and not (out / "results.json").exists()
    written = (out / PARTIAL).read_bytes().count(b"\n")
    plan = json.loads((out / "plan.json").read_text())

    monkeypatch.setattr(gen_mod, "qg_messages", lambda passage, answer: [
        {"role": "user", "content": json.dumps({"passage": passage, "answer": answer})}])  # fmt: skip
    said: list[str] = []
    cfg = EvaluateConfig(budget_min=3, strategies=("base", "rag"), embedder="hashing-64")
    res = run_evaluate([folder], out, cfg, say=said.append, generators=evaluate_generators())
    assert any(s.startswith("plan: kept") for s in said) and json.loads((out / "plan.json").read_text()) == plan
    assert any("reusing the synthetic questions" in s for s in said)
    m = next(m for m in (re.search(r"^  reused (\d+) of (\d+) records from", s) for s in said) if m)
    assert 0 < int(m.group(1)) <= written < int(m.group(2)) == len(res.records)
    keys = [(r.strategy, r.kind, r.question_id) for r in res.records]
    assert len(set(keys)) == len(keys) and {r.strategy for r in res.records} == {"base", "rag"}
    assert len(load_results(out).records) == len(keys) and (out / "report.html").is_file()
    assert not (out / PARTIAL).exists()


# -- 2. fine-tuning ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_thread():
    """Training here and in the subprocess on one thread: the same arithmetic in both (so losses
    can match exactly) and no spinning threads on a busy two-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_thread):
    from .tiny_models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="module")
def ft_data(tmp_path_factory):
    from ragtune.finetune.data import PrepareConfig, prepare

    d = tmp_path_factory.mktemp("ftdata")
    words = "paris france rome italy capital".split()
    rows = [
        {"id": f"q{i}", "question": f"w{i} w{i + 1} the capital of w{i % 7}", "answer": f"{words[i % 5]} w{i % 13}"}
        for i in range(48)
    ]
    (d / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    prepare([d / "qa.jsonl"], d / "prep", PrepareConfig(ratios=(0.75, 0.125, 0.125)))
    return d / "prep"


def test_finetune_killed_at_a_random_step_resumes_to_the_same_validation_loss(tmp_path, tiny, ft_data):
    import torch
    from safetensors.torch import load_file

    from ragtune.finetune.config import FinetuneConfig
    from ragtune.finetune.train import train

    cfg = dict(base_model=str(tiny), mode="qa", method="lora", lora_r=4, lora_alpha=8, lora_dropout=0.1,
               batch_size=4, lr=1e-2, warmup_steps=2, epochs=2, eval_every=1, patience=50, generate_max=0,
               max_seq_len=64)  # fmt: skip
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    clean = train(FinetuneConfig(**cfg), ft_data, tmp_path / "clean")
    total = clean.steps
    assert total == 18  # 36 training examples, batches of 4, two epochs

    rng = rng_for("finetune")
    at = rng.randint(3, total - 8)
    out = tmp_path / "cut"
    proc = Proc("train", tmp_path / "cfg.json", ft_data, out, "--step-sleep", 0.15)
    kill_after(proc, rf"^step {at}/{total}$", rng.uniform(0.0, 0.3))
    reached = max(int(m.group(1)) for m in map(re.compile(r"^step (\d+)/").match, proc.lines) if m)
    assert at <= reached < total and not (out / "results.json").exists() and (out / "checkpoint.pt").is_file()

    res = train(FinetuneConfig(**cfg), ft_data, out)  # the same call again
    assert 0 < res.resumed_from_step <= reached and res.steps == total
    assert abs(res.best_val_loss - clean.best_val_loss) < 1e-5
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    clean_log = [json.loads(line) for line in (tmp_path / "clean" / "training_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, total + 1))
    assert [r["val_loss"] for r in log] == pytest.approx([r["val_loss"] for r in clean_log], abs=1e-5)
    a = load_file(tmp_path / "clean" / "adapter" / "adapter_model.safetensors")
    b = load_file(out / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert not (out / "checkpoint.pt").exists() and not list(out.glob(".*.tmp")) and not list(out.glob("*.tmp"))


def test_a_kill_between_checkpoint_and_best_file_keeps_the_best_weights(tmp_path, tiny, ft_data, monkeypatch):
    """The one window a kill could land in between two saves: the checkpoint says step N is the best,
    best.pt still holds an older step. The resume rebuilds best.pt from the checkpoint."""
    import torch

    from ragtune.finetune import train as train_mod
    from ragtune.finetune.config import FinetuneConfig

    cfg = FinetuneConfig(base_model=str(tiny), mode="qa", method="lora", lora_r=4, lora_alpha=8, lora_dropout=0.0,
                         batch_size=4, lr=1e-2, warmup_steps=0, max_steps=6, eval_every=2, patience=50,
                         generate_max=0, max_seq_len=64)  # fmt: skip
    clean = train_mod.train(cfg, ft_data, tmp_path / "clean")
    real_save = train_mod._atomic_save

    class Killed(BaseException):
        pass

    def save(obj, path):
        if path.name == "best.pt" and obj["step"] == 4:
            raise Killed()  # as if SIGKILLed just before writing best.pt of step 4
        real_save(obj, path)

    monkeypatch.setattr(train_mod, "_atomic_save", save)
    with pytest.raises(Killed):
        train_mod.train(cfg, ft_data, tmp_path / "cut")
    monkeypatch.setattr(train_mod, "_atomic_save", real_save)
    assert torch.load(tmp_path / "cut" / "best.pt", weights_only=False)["step"] == 2
    resumed = train_mod.train(cfg, ft_data, tmp_path / "cut")
    assert resumed.resumed_from_step == 4 and resumed.best_step == clean.best_step
    assert abs(resumed.test_loss - clean.test_loss) < 1e-5  # the test loss is measured on the best weights


# -- 3. ingest --------------------------------------------------------------------------------------


def many_docs(folder: Path, n: int = 300) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sentences = [f"Item{i} fact {j} says the river Flow{j} runs past Town{i} into Lake{i + j}." for j in
                     range(1 + (i * 7) % 13)]  # fmt: skip
        (folder / f"doc{i:03d}.txt").write_text(" ".join(sentences))
    return folder


def _doc_state(index: Index) -> dict:
    chunks: dict[str, list] = {}
    for c in index.chunks():
        chunks.setdefault(c.doc_id, []).append((c.id, c.position, c.text, c.content_hash))
    return {d.id: (d.chunks, d.content_hash, chunks.get(d.id)) for d in index.documents()}


def test_ingest_killed_midway_leaves_whole_documents_and_a_rerun_completes_it(tmp_path):
    docs = many_docs(tmp_path / "docs")
    clean_ix = Index.create(tmp_path / "clean", embedder=HashingEmbedder(64), chunking=CHUNKING)
    clean_ix.ingest([docs])
    clean = _doc_state(clean_ix)
    assert len(clean) == 300 and len({n for n, _, _ in clean.values()}) > 3  # documents of 1 to several chunks

    url = tmp_path / "ix"
    proc = Proc("ingest", url, docs, 0.5)  # 5 commits of 64 documents, 0.5 s of embedding each
    kill_after(proc, r"^embed 64/300$", rng_for("ingest").uniform(0.0, 1.0))
    assert not any(line.startswith("done") for line in proc.lines)

    index = Index.open(url, embedder=HashingEmbedder(64))
    stored = _doc_state(index)
    assert 64 <= len(stored) < 300  # the first commit is in, and the kill came before the last
    for doc_id, (n, content_hash, chunks) in stored.items():
        assert (n, content_hash, chunks) == clean[doc_id], doc_id  # every stored document whole
    assert index.search("Town5 river", k=3)

    rep = Index.create(url, embedder=HashingEmbedder(64), chunking=CHUNKING).ingest([docs])
    assert sorted(rep.unchanged) == sorted(stored) and len(rep.added) == 300 - len(stored)
    assert _doc_state(Index.open(url, embedder=HashingEmbedder(64))) == clean


# -- 4. server ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, path: str, body: dict, timeout: float = 60.0) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def start_server(index: Path, gen_sleep: float, embed_sleep: float) -> tuple[Proc, int]:
    port = free_port()
    proc = Proc("serve", index, port, gen_sleep, embed_sleep)
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            pass
        assert time.monotonic() < deadline and proc.p.poll() is None, proc.output()
        time.sleep(0.05)


def in_thread(fn, *args) -> dict:
    box: dict = {}

    def run():
        try:
            box["result"] = fn(*args)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            box["error"] = exc
        box["at"] = time.monotonic()

    box["thread"] = threading.Thread(target=run, daemon=True)
    box["thread"].start()
    return box


@pytest.fixture
def town_index(tmp_path):
    url = tmp_path / "ix"
    Index.create(url, embedder="hashing-64", chunking=CHUNKING).ingest([town_corpus(tmp_path / "corpus")])
    return url


def test_serve_drains_the_request_in_flight_on_sigterm(town_index):
    proc, port = start_server(town_index, gen_sleep=2.5, embed_sleep=0.0)
    try:
        box = in_thread(post, port, "/v1/ask", {"question": "What is the capital of Land3?", "strategy": "rag"})
        proc.wait_for(r"^generating 1$")
        time.sleep(rng_for("serve").uniform(0.0, 0.5))
        proc.signal(signal.SIGTERM)
        t_term = time.monotonic()
        # Draining: no new connection is accepted while the answer is still being written.
        refused = False
        while time.monotonic() - t_term < 1.5 and "at" not in box:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            except OSError:
                refused = True
                break
            time.sleep(0.02)
        box["thread"].join(30)
        assert "error" not in box, box.get("error")
        status, body = box["result"]
        assert status == 200 and body["answer"].startswith("Town3") and box["at"] > t_term
        assert refused
        # A clean exit: the drain finished, the lifespan shutdown ran, and uvicorn re-raised SIGTERM.
        assert proc.wait(30) in (0, -signal.SIGTERM) and "shutdown" in proc.lines
    finally:
        if proc.p.poll() is None:
            proc.p.kill()
            proc.wait()


def test_upload_killed_midway_stores_each_document_wholly_or_not_at_all(town_index, tmp_path):
    words = "alpha beta gamma delta epsilon zeta eta theta".split()
    docs = [
        {"id": f"up/{i}", "title": f"Upload {i}",
         "text": " ".join(f"Upload{i} line {j}: {words[j % 8]} {words[(i + j) % 8]} in Lake{j}." for j in
                          range(2 + (i % 5) * 6 + (40 if i == 70 else 0)))}
        for i in range(150)
    ]  # fmt: skip
    scratch = Index.create(tmp_path / "scratch", embedder=HashingEmbedder(64), chunking=CHUNKING)
    scratch.ingest([Document(d["id"], d["text"], d["title"], "api", {}) for d in docs])
    expected = {d.id: d.chunks for d in scratch.documents()}
    assert expected["up/70"] > 10  # one long document among them
    before = _doc_state(Index.open(town_index, embedder=HashingEmbedder(64)))

    proc, port = start_server(town_index, gen_sleep=0.0, embed_sleep=0.6)  # 3 commits of <= 64 documents
    try:
        box = in_thread(post, port, "/v1/documents", {"documents": docs})
        proc.wait_for(r"^embedding \d+$")
        time.sleep(rng_for("upload").uniform(0.0, 1.2))
        proc.signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
        box["thread"].join(30)
        assert "result" not in box and isinstance(box["error"], OSError)  # the upload never completed
    finally:
        if proc.p.poll() is None:
            proc.p.kill()
            proc.wait()

    index = Index.open(town_index, embedder=HashingEmbedder(64))
    have = {d.id: d.chunks for d in index.documents()}
    uploaded = {i: n for i, n in have.items() if i.startswith("up/")}
    assert len(uploaded) < len(docs)
    assert not uploaded  # one commit per upload: a killed request stores none of it
    for doc_id, n in uploaded.items():
        assert n == expected[doc_id], doc_id  # whole, never part of a document
    positions: dict[str, list[int]] = {}
    for c in index.chunks():
        positions.setdefault(c.doc_id, []).append(c.position)
    assert all(positions[doc_id] == list(range(n)) for doc_id, n in uploaded.items())
    assert {k: v for k, v in _doc_state(index).items() if not k.startswith("up/")} == before
    assert index.search("Land3", k=3) and index.get_chunks(["corpus/town3.txt#0"])
