"""`ragtune ingest --ray`: the same index as a local ingest, incremental, and consistent after a worker fails."""

import os
import random
import re
import sys

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from ragtune import distributed  # noqa: E402
from ragtune.cli import EXIT_SKIPPED, main  # noqa: E402
from ragtune.config import ChunkConfig  # noqa: E402
from ragtune.distributed import ray_ingest  # noqa: E402
from ragtune.errors import RagtuneError  # noqa: E402
from ragtune.index import Index  # noqa: E402

EMBEDDER = "hashing-256"  # built by name in the Ray actors, as the index records it
CHUNKING = ChunkConfig(chunk_tokens=40, overlap_tokens=8)
WORDS = "paris rome river bridge tower capital built century museum king queen harbour market".split()


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def write_corpus(folder, n=16, version="one", seed=0):
    rng = random.Random(seed)
    folder.mkdir(exist_ok=True)
    for i in range(n):
        paragraphs = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30))).capitalize() + "."
            for _ in range(rng.randint(1, 5))
        ]
        paragraphs.append(f"This is version {version} of document {i}.")
        (folder / f"doc{i:02d}.txt").write_text("\n\n".join(paragraphs), encoding="utf-8")
    return folder


def contents(index: Index) -> dict:
    """chunk id -> (chunk, vector) of everything stored."""
    out = {}
    for chunks, vectors in index.store.iter_chunks(vectors=True):
        for c, v in zip(chunks, vectors):
            out[c.id] = (c, np.asarray(v))
    return out


def assert_same(a: Index, b: Index) -> None:
    ca, cb = contents(a), contents(b)
    assert sorted(ca) == sorted(cb)
    for cid, (chunk, vector) in ca.items():
        assert cb[cid][0] == chunk  # id, document, text, position, title, source, hash, meta
        np.testing.assert_allclose(cb[cid][1], vector, atol=1e-5)
    assert a.store.document_hashes() == b.store.document_hashes()


def local_index(path, corpus):
    index = Index.create(path, embedder=EMBEDDER, chunking=CHUNKING)
    index.ingest([corpus])
    return index


def test_ray_ingest_equals_local_ingest_and_is_incremental(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    (corpus / "junk.txt").write_bytes(b"\x00\x01\x02" * 50)
    local = Index.create(tmp_path / "local", embedder=EMBEDDER, chunking=CHUNKING)
    expected = local.ingest([corpus])
    index = Index.create(tmp_path / "ray", embedder=EMBEDDER, chunking=CHUNKING)
    report = ray_ingest(index, [corpus], batch_docs=3, batch_size=16)  # several commits and embedding calls
    assert report.counts() == expected.counts() and report.counts()["added"] == 16
    assert report.chunks_written == expected.chunks_written > 16
    assert [s.path for s in report.skipped] == [s.path for s in expected.skipped] == [str(corpus / "junk.txt")]
    assert_same(local, index)
    assert index.search("version one of document 3", k=1, mode="bm25")[0].chunk.doc_id == "corpus/doc03.txt"

    # Nothing changed: nothing travels, nothing is written.
    version = index.store.version()
    again = ray_ingest(index, [corpus])
    assert again.counts()["unchanged"] == 16 and again.chunks_written == 0
    assert index.store.version() == version

    # One file edited, one removed (with sync): only those change.
    (corpus / "doc05.txt").write_text("The harbour market was rebuilt in 1901.", encoding="utf-8")
    (corpus / "doc07.txt").unlink()
    expected = local.ingest([corpus], sync=True)
    report = ray_ingest(index, [corpus], sync=True)
    assert report.counts() == expected.counts()
    assert report.updated == ["corpus/doc05.txt"] and report.deleted == ["corpus/doc07.txt"]
    assert len(report.unchanged) == 14
    assert_same(local, index)


def test_a_failing_worker_leaves_every_document_whole_and_a_rerun_finishes(tmp_path, monkeypatch):
    corpus = write_corpus(tmp_path / "corpus", version="one")
    index = local_index(tmp_path / "ix", corpus)
    before = {c.id: c for c, _ in contents(index).values()}
    write_corpus(tmp_path / "corpus", version="two")
    (corpus / "doc12.txt").write_text("The zebra crossed the bridge. " * 3, encoding="utf-8")
    expected = local_index(tmp_path / "expected", corpus)
    after = {c.id: c for c, _ in contents(expected).values()}

    base = distributed.EmbedStage

    class Failing(base):  # built in the worker from this pickled class
        def vectors(self, texts):
            if any("zebra" in t for t in texts):
                raise RuntimeError("embedder died on the zebra batch")
            return super().vectors(texts)

    monkeypatch.setattr(distributed, "EmbedStage", Failing)
    with pytest.raises(RagtuneError, match="run it again.*zebra batch"):
        ray_ingest(index, [corpus], batch_docs=2, batch_size=8, workers=1)
    monkeypatch.undo()

    # Every stored document is wholly the old or wholly the new version; the index opens and searches.
    stored = {c.id: c for c, _ in contents(index).values()}
    for doc_id in {c.doc_id for c in stored.values()}:
        mine = {i: c for i, c in stored.items() if c.doc_id == doc_id}
        old = {i: c for i, c in before.items() if c.doc_id == doc_id}
        new = {i: c for i, c in after.items() if c.doc_id == doc_id}
        assert mine in (old, new), doc_id
    assert stored["corpus/doc12.txt#0"] == before["corpus/doc12.txt#0"]  # the failed batch was not written
    reopened = Index.open(tmp_path / "ix")
    assert reopened.search("bridge", k=3)

    report = ray_ingest(reopened, [corpus], workers=1)
    assert "corpus/doc12.txt" in report.updated
    assert report.counts()["updated"] + report.counts()["unchanged"] == 16
    assert_same(expected, reopened)


def test_cli_ray_prints_the_same_summary_as_a_local_run(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus", n=6)
    (corpus / "empty.txt").write_text("")

    def ingest(name, *extra):
        code = main(["ingest", str(corpus), "--index", str(tmp_path / name), "--embedder", EMBEDDER, *extra])
        out = capsys.readouterr().out
        return code, re.sub(r" in [\d.]+s", "", out.replace(str(tmp_path / name), "INDEX"))

    local = ingest("local")
    remote = ingest("ray", "--ray")
    assert local == remote
    assert local[0] == EXIT_SKIPPED and "6 added, 0 updated, 0 deleted, 0 unchanged, 1 skipped" in local[1]
    assert_same(Index.open(tmp_path / "local"), Index.open(tmp_path / "ray"))


def test_connect_reads_the_cpu_count_from_the_environment(monkeypatch):
    monkeypatch.setenv("RAGTUNE_RAY_CPUS", "two")
    from ragtune.errors import ConfigError

    assert distributed.connect() is False  # an initialised Ray is used as it is
    with pytest.raises(ConfigError, match="RAGTUNE_RAY_CPUS"):
        distributed._env_int("RAGTUNE_RAY_CPUS")
    assert os.environ["RAGTUNE_RAY_CPUS"] == "two"


# -- compare --ray ---------------------------------------------------------------------------------


def _capital_from_sources(messages) -> str:
    """A scripted reader: the capital named in the prompt's sources, cited, or an abstention."""
    text = messages[-1]["content"]
    match = re.search(r"(\w+) is the capital of (\w+)", text)
    return f"{match.group(1)} [1]" if match else "I don't know based on the sources."


TIMING = {"retrieve_s", "context_s", "generate_s", "total_s"}


def _records(results) -> list[dict]:
    from dataclasses import asdict

    return sorted(
        ({k: v for k, v in asdict(r).items() if k not in TIMING} for r in results.records),
        key=lambda r: (r["strategy"], r["kind"], r["question_id"]),
    )


def test_compare_on_ray_gives_the_local_records(tmp_path, monkeypatch):
    """Questions x strategies answered by 2 Ray workers: the same records, aggregates and paired
    tests as the local run; the log is written as batches finish and a rerun reuses it."""
    import json

    from ray import cloudpickle

    from ragtune.evaluation.compare import ExperimentConfig, run_experiment
    from ragtune.evaluation.strategies import Strategy
    from ragtune.testing import ScriptedGenerator

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the scripted models travel to the workers
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    capitals = {"France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Peru": "Lima"}
    for country, city in list(capitals.items())[:3]:
        (corpus / f"{city.lower()}.txt").write_text(f"{city} is the capital of {country}. It has a river.")
    index = Index.create(tmp_path / "ix", embedder=EMBEDDER, chunking=CHUNKING)
    index.ingest([corpus])
    qs = [
        {"id": f"{c}{i}", "question": f"What is the capital of {c}?", "answers": [cap],
         "doc_id": f"corpus/{cap.lower()}.txt"}  # fmt: skip
        for i in range(5)
        for c, cap in list(capitals.items())[:3]
    ]
    (tmp_path / "q.jsonl").write_text("\n".join(json.dumps(q) for q in qs))
    (tmp_path / "u.jsonl").write_text(
        json.dumps({"id": "u1", "question": "What is the capital of Peru?", "answers": ["Lima"], "doc_id": "peru"})
    )
    cfg = ExperimentConfig(
        index=str(tmp_path / "ix"),
        questions=str(tmp_path / "q.jsonl"),
        unanswerable=str(tmp_path / "u.jsonl"),
        strategies=(Strategy("base", False), Strategy("rag", True)),
        fresh_edits=0,
        bootstrap=200,
    )
    gens = {"base": ScriptedGenerator(lambda m: "Madrid"), "rag": ScriptedGenerator(_capital_from_sources)}
    for g in gens.values():
        g.batch_size = 4  # 4 batches of the 15 answerable questions: more jobs than workers
    local = run_experiment(cfg, tmp_path / "local", generators=gens)
    from ragtune.evaluation import compare

    def not_here(*args, **kwargs):
        raise AssertionError("answered on the driver, not on a Ray worker")

    monkeypatch.setattr(compare, "run_strategy", not_here)
    said: list[str] = []
    on_ray = run_experiment(cfg, tmp_path / "ray", generators=gens, ray="local", workers=2, progress=said.append)
    assert "answering on Ray: 2 workers" in said
    assert _records(on_ray) == _records(local)
    assert len(on_ray.records) == 2 * 16
    for name in ("base", "rag"):
        a, b = local.aggregates[name], on_ray.aggregates[name]
        for metric in ("em", "f1", "abstain_unanswerable"):
            assert a[metric] == b[metric], (name, metric)
    assert on_ray.aggregates["rag"]["em"]["mean"] == 100.0 and on_ray.aggregates["base"]["em"]["mean"] < 50
    assert [(p["metric"], p["diff"], p["p_value"]) for p in on_ray.paired] == [
        (p["metric"], p["diff"], p["p_value"]) for p in local.paired
    ]


# -- finetune --ray ----------------------------------------------------------------------------------


def _tiny_qa(tmp_path, **overrides):
    """A 2-layer Llama, 40 prepared QA pairs and a small LoRA configuration (folder, config)."""
    import json

    from ragtune.finetune.config import FinetuneConfig
    from ragtune.finetune.data import PrepareConfig, prepare

    from .tiny_models import build_tiny_llama

    tiny = build_tiny_llama(tmp_path / "llama")
    rows = [{"id": f"q{i}", "question": f"w{i} w{i + 1} the capital of w{i % 7}", "answer": f"paris w{i % 13}"}
            for i in range(40)]  # fmt: skip
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    prepare([tmp_path / "qa.jsonl"], tmp_path / "prep", PrepareConfig(ratios=(0.8, 0.1, 0.1)))
    settings = dict(base_model=str(tiny), mode="qa", method="lora", lora_r=4, lora_alpha=8, lora_dropout=0.0,
                    batch_size=6, lr=1e-2, warmup_steps=0, max_steps=2, eval_every=1, patience=50, generate_max=2,
                    max_seq_len=64)  # fmt: skip
    return tmp_path / "prep", FinetuneConfig(**{**settings, **overrides})


def _log(out) -> list[dict]:
    import json

    return [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]


def _assert_same_run(local, on_ray, local_out, ray_out) -> None:
    """Per-step losses, best validation loss and adapter weights equal (within 1e-4)."""
    import torch
    from safetensors.torch import load_file

    assert on_ray.steps == local.steps
    a, b = _log(local_out), _log(ray_out)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, local.steps + 1))
    for x, y in zip(a, b):
        assert abs(x["train_loss"] - y["train_loss"]) < 1e-4, (x, y)
        assert abs(x.get("val_loss", 0) - y.get("val_loss", 0)) < 1e-4, (x, y)
    assert abs(on_ray.best_val_loss - local.best_val_loss) < 1e-4
    assert on_ray.best_step == local.best_step
    wa = load_file(local_out / "adapter" / "adapter_model.safetensors")
    wb = load_file(ray_out / "adapter" / "adapter_model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=1e-4) for k in wa)
    assert any(not torch.allclose(v, torch.zeros_like(v)) for k, v in wb.items() if "lora_B" in k)  # it trained


def test_two_worker_finetune_gives_the_local_run(tmp_path):
    """Data-parallel LoRA on 2 Ray Train workers (gloo): the same artefacts, per-step losses,
    validation loss and adapter weights as one local process, at the same examples per step."""
    import json

    from ragtune.distributed import ray_finetune
    from ragtune.finetune.train import train

    prep, cfg = _tiny_qa(tmp_path)
    local = train(cfg, prep, tmp_path / "local")
    said: list[str] = []
    on_ray = ray_finetune(cfg, prep, tmp_path / "ray", workers=2, progress=said.append)
    assert any("2 workers" in s for s in said)
    assert json.loads((tmp_path / "ray" / "ragtune-finetune.json").read_text())["workers"] == 2  # really 2 processes
    artefacts = {p.relative_to(tmp_path / "local").as_posix() for p in (tmp_path / "local").rglob("*") if p.is_file()}
    on_disk = {p.relative_to(tmp_path / "ray").as_posix() for p in (tmp_path / "ray").rglob("*") if p.is_file()}
    assert artefacts <= on_disk, sorted(artefacts - on_disk)
    assert on_ray.steps == local.steps == 2 and on_ray.resumed_from_step == 0
    _assert_same_run(local, on_ray, tmp_path / "local", tmp_path / "ray")


def test_a_killed_worker_is_restarted_and_the_run_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """The first worker's process dies outright after step 3 (last checkpoint: step 2): Ray Train
    restarts both workers, which resume from step 2 and finish with the uninterrupted run's losses
    and weights; steps 3-4 appear once in the log."""
    from ragtune.distributed import KILL_AT_STEP, ray_finetune
    from ragtune.finetune.train import train

    prep, cfg = _tiny_qa(tmp_path, max_steps=4, eval_every=2)
    local = train(cfg, prep, tmp_path / "local")
    assert local.resumed_from_step == 0
    monkeypatch.setenv(KILL_AT_STEP, "3")
    said: list[str] = []
    on_ray = ray_finetune(cfg, prep, tmp_path / "ray", workers=2, max_failures=1, progress=said.append)
    assert (tmp_path / "ray" / ".ray" / "killed-at-step-3").is_file()  # the worker really died
    assert any("up to 1 restart(s) from the last checkpoint" in s for s in said)
    assert on_ray.resumed_from_step == 2
    assert not (tmp_path / "ray" / "checkpoint.pt").exists()  # finished: the next run starts afresh
    _assert_same_run(local, on_ray, tmp_path / "local", tmp_path / "ray")


def test_a_ray_run_stopped_past_its_restarts_resumes_when_run_again(tmp_path, monkeypatch):
    """With no restarts allowed the killed run fails and leaves its checkpoint; the same call run
    again resumes from it to the uninterrupted run's result."""
    import torch

    from ragtune.distributed import KILL_AT_STEP, ray_finetune
    from ragtune.finetune.train import train

    prep, cfg = _tiny_qa(tmp_path, max_steps=4, eval_every=2)
    local = train(cfg, prep, tmp_path / "local")
    monkeypatch.setenv(KILL_AT_STEP, "3")
    with pytest.raises(RagtuneError, match=r"failed \(run it again to resume from .*checkpoint.pt\)"):
        ray_finetune(cfg, prep, tmp_path / "ray", workers=2, max_failures=0)
    assert (tmp_path / "ray" / ".ray" / "killed-at-step-3").is_file()
    assert not (tmp_path / "ray" / "results.json").exists()
    assert torch.load(tmp_path / "ray" / "checkpoint.pt", weights_only=False)["state"]["step"] == 2
    on_ray = ray_finetune(cfg, prep, tmp_path / "ray", workers=2, max_failures=0)  # the hook fires only once
    assert on_ray.resumed_from_step == 2
    _assert_same_run(local, on_ray, tmp_path / "local", tmp_path / "ray")
