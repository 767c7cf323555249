"""`ragtune ingest --ray`: chunk and embed on a Ray cluster, write on the driver.

    index = Index.create("my-index")
    report = ray_ingest(index, ["docs/"])               # a local Ray on every core
    report = ray_ingest(index, ["docs/"], address="auto")  # the running cluster (ragtune installed on it)

The driver loads the files and compares content hashes with the store first, exactly as
`Index.ingest` does, so only new and changed documents travel to the workers. Two Ray Data
stages follow: chunking (actors that count tokens with the index's embedder) and embedding (an
actor pool; each actor builds the index's embedder once, by its registered name). The driver
gathers each document's chunks and writes documents in batches, one commit per batch, so a
document is never half written, a failure leaves every document wholly old or new, and the index
ends up with the same chunk ids, texts and vectors as a local ingest.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .config import ChunkConfig
from .documents import Chunk, Document, Skipped
from .errors import ConfigError, RagtuneError
from .ingest import (
    MAX_CHUNKS_PER_DOCUMENT,
    IngestReport,
    Progress,
    SyncScope,
    embed_text,
    finish_ingest,
    plan_ingest,
)

LOCAL = "local"  # `--ray` without an address: start a Ray on this machine
CPU_BATCH = 128  # chunks per embedding call on a CPU worker: a few seconds of work, small enough to spread
GPU_BATCH = 1024  # on a GPU worker: enough to fill the device
CHUNK_DOCS = 16  # documents per chunking call


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ConfigError("--ray needs Ray: pip install 'ragtune[ray]' (ray[data] >= 2.40)") from exc
    return ray


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"${name}={value!r}: must be a whole number >= 1")
    return int(value)


def connect(address: str | None = None) -> bool:
    """Make sure this process talks to a Ray: None or 'local' starts one on this machine with
    $RAGTUNE_RAY_CPUS (default: every core) CPUs, 'auto' joins the running cluster, anything else
    is passed to `ray.init(address=...)`. Returns whether this call started the connection (then the
    caller shuts it down). An already initialised Ray is used as it is."""
    ray = _ray()
    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "logging_level": "warning"}
    if address in (None, "", LOCAL):
        cpus = _env_int("RAGTUNE_RAY_CPUS") or os.cpu_count() or 1
        ray.init(address=LOCAL, num_cpus=cpus, include_dashboard=False, **quiet)
    else:
        try:
            ray.init(address=address, **quiet)
        except ConnectionError as exc:
            raise ConfigError(f"--ray {address}: cannot reach a Ray cluster there ({exc})") from exc
    return True


# -- the Ray Data stages (they run in worker processes) -----------------------------------------


def _make_embedder(name: str):
    from .registry import make_embedder

    return make_embedder(name)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class ChunkStage:
    """Documents -> one row per chunk (the document's position in the run, its chunk count, the
    pickled Chunk, what the embedder reads). A document over `max_chunks` becomes one row with a
    negative count and no text (the driver skips it); one without text, one row with count 0; one
    that fails to chunk, one row with the error."""

    def __init__(self, embedder: str, chunking: ChunkConfig, max_chunks: int):
        self.embedder = _make_embedder(embedder)
        self.chunking = chunking
        self.max_chunks = max_chunks

    def __call__(self, batch: dict) -> dict:
        from .chunking import chunk_document

        out: dict[str, list] = {"doc": [], "n": [], "chunk": [], "text": [], "error": []}

        def row(doc: int, n: int, chunk: bytes = b"", text: str = "", error: str = "") -> None:
            for key, value in zip(out, (doc, n, chunk, text, error)):
                out[key].append(value)

        for i, blob in zip(batch["doc"], batch["item"]):
            try:
                doc: Document = pickle.loads(blob)
                chunks = chunk_document(doc, self.chunking, self.embedder.count_tokens)
            except Exception as exc:  # this document fails, not the run: the driver reports it
                row(int(i), 0, error=_error(exc))
                continue
            if len(chunks) > self.max_chunks or not chunks:
                row(int(i), -len(chunks))
                continue
            for c in chunks:
                row(int(i), len(chunks), pickle.dumps(c), embed_text(c.title, c.text))
        return {k: np.asarray(v, dtype=np.int64 if k in ("doc", "n") else object) for k, v in out.items()}


class EmbedStage:
    """Adds each chunk's vector; the embedder is built once per actor from its registered name.
    A batch that fails comes back with its error on every row (an exception would abort the whole
    dataset and, in Ray Data, can keep the failed actor and its CPUs alive)."""

    def __init__(self, embedder: str, threads: int | None = None):
        if threads:  # the model's threads: this actor's share of the CPUs
            if "torch" in sys.modules:
                sys.modules["torch"].set_num_threads(threads)
            else:
                os.environ["OMP_NUM_THREADS"] = str(threads)  # read when torch is imported
        self.embedder = _make_embedder(embedder)

    def vectors(self, texts: list[str]) -> np.ndarray:
        return self.embedder.embed(texts)

    def __call__(self, batch: dict) -> dict:
        t0 = time.perf_counter()
        keep = np.asarray(batch["n"]) > 0
        texts = [str(t) for t, k in zip(batch["text"], keep) if k]
        vectors = np.zeros((len(keep), self.embedder.dim), dtype=np.float32)
        errors = np.asarray(batch["error"], dtype=object)
        if texts:
            try:
                vectors[keep] = self.vectors(texts)
            except Exception as exc:
                errors = np.asarray([e or _error(exc) for e in errors], dtype=object)
        seconds = np.full(len(keep), (time.perf_counter() - t0) / max(1, len(keep)))
        return {**batch, "error": errors, "vector": vectors, "embed_s": seconds}


# -- the driver ---------------------------------------------------------------------------------


def _resources(ray, workers: int | None, batch_size: int | None) -> dict:
    """How many embedding actors, with how many CPUs (or a GPU) each, and the batch size."""
    total = ray.cluster_resources()
    cpus = max(1, int(total.get("CPU", 1)))
    gpus = int(total.get("GPU", 0))
    if gpus and os.environ.get("RAGTUNE_DEVICE", "auto").lower() != "cpu":
        n = min(workers or _env_int("RAGTUNE_RAY_WORKERS") or gpus, gpus)  # more would wait for a GPU forever
        return {"workers": n, "cpus": 1, "gpus": 1, "batch": batch_size or GPU_BATCH}
    n = min(workers or _env_int("RAGTUNE_RAY_WORKERS") or cpus, cpus)
    return {"workers": n, "cpus": max(1, cpus // n), "gpus": 0, "batch": batch_size or CPU_BATCH}


def _pipeline(ray, todo: list[Document], embedder: str, chunking: ChunkConfig, max_chunks: int, res: dict):
    from ray.data import ActorPoolStrategy, DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    if hasattr(ctx, "print_on_execution_start"):
        ctx.print_on_execution_start = False
    items = [{"doc": i, "item": pickle.dumps(d)} for i, d in enumerate(todo)]
    blocks = max(1, min(len(items), -(-len(items) // CHUNK_DOCS)))
    chunkers = max(1, min(blocks, -(-res["workers"] // 4)))  # the tokenizer outpaces the model a few times over
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    ds = ds.map_batches(
        ChunkStage,
        fn_constructor_kwargs={"embedder": embedder, "chunking": chunking, "max_chunks": max_chunks},
        compute=ActorPoolStrategy(size=chunkers),
        batch_size=CHUNK_DOCS,
        num_cpus=0,  # leaves every CPU to the embedding actors; tokenizing is a small share of the work
    )
    ds = ds.map_batches(
        EmbedStage,
        fn_constructor_kwargs={"embedder": embedder, "threads": res["cpus"]},
        compute=ActorPoolStrategy(size=res["workers"]),
        batch_size=res["batch"],
        num_cpus=res["cpus"],
        num_gpus=res["gpus"] or None,
    )
    return ds


def ray_ingest(
    index,
    items: Sequence[str | Path | Document],
    sync: bool = False,
    strict: bool = False,
    progress: Progress | None = None,
    groups: Sequence[str] | None = None,
    address: str | None = None,
    workers: int | None = None,
    batch_size: int | None = None,
    batch_docs: int = 64,
    max_chunks: int = MAX_CHUNKS_PER_DOCUMENT,
) -> IngestReport:
    """`Index.ingest` with chunking and embedding on Ray; same arguments, same report, same result.

    `address`: None/'local' (start a Ray here), 'auto' (the running cluster) or a Ray address.
    `workers`: embedding actors (default $RAGTUNE_RAY_WORKERS, else one per GPU, else one per CPU);
    each gets an equal share of the CPUs. `batch_size`: chunks per embedding call (default 128 on
    CPU, 1024 on GPU). `batch_docs`: documents per store commit."""
    from .index import load_items

    t0 = time.perf_counter()
    c0 = time.process_time()
    store = index.store
    chunking = index.chunking
    docs, skipped = load_items(items, strict, groups, store=store)  # a file already stored keeps its id
    # a bad line keeps its file's stored records; sync deletes only what came from the paths given
    report, todo = plan_ingest(docs, store, chunking, sync, [s.source for s in skipped], SyncScope.of_items(items))
    started = connect(address) if todo else False
    try:
        if todo:
            ray = _ray()
            res = _resources(ray, workers, batch_size)
            stages = (index.manifest.embedder, chunking, max_chunks, res)
            _write(ray, stages, todo, store, report, batch_docs, progress)
    finally:
        if started:
            _ray().shutdown()
    report.skipped = skipped + report.skipped
    return finish_ingest(store, report, chunking, bool(todo), t0, c0)


def _write(ray, stages: tuple, todo: list[Document], store, report: IngestReport, batch_docs: int,
           progress: Progress | None) -> None:
    """Run the stages; gather the stream of embedded chunks by document; commit every `batch_docs`
    whole documents. Documents that failed in a worker are left as they were, and reported by a
    RagtuneError once the others are written."""
    max_chunks = stages[2]
    pending: dict[int, list[tuple[Chunk, np.ndarray]]] = {}
    ready: list[int] = []  # documents whose chunks have all arrived
    too_big: dict[int, int] = {}
    failed: dict[int, str] = {}
    crash = ""
    done = 0

    def commit(docs: list[int]) -> None:
        nonlocal done
        docs = sorted(docs)
        chunks: list[Chunk] = []
        vectors: list[np.ndarray] = []
        for i in docs:
            for c, v in sorted(pending.pop(i, []), key=lambda cv: cv[0].position):
                chunks.append(c)
                vectors.append(v)
        array = np.stack(vectors) if vectors else np.zeros((0, store.manifest.dim), np.float32)
        store.upsert([todo[i].id for i in docs], chunks, array)
        report.chunks_written += len(chunks)
        done += len(docs)
        if progress:
            progress("embed", done + len(failed), len(todo))

    try:
        for batch in _pipeline(ray, todo, *stages).iter_batches(batch_size=None, batch_format="numpy"):
            report.embed_seconds += float(np.sum(batch["embed_s"]))
            for i, n, blob, vector, error in zip(batch["doc"], batch["n"], batch["chunk"], batch["vector"],
                                                 batch["error"]):  # fmt: skip
                i, n = int(i), int(n)
                if error or i in failed:
                    failed.setdefault(i, str(error))
                    pending.pop(i, None)
                elif n <= 0:
                    if -n > max_chunks:
                        too_big[i] = -n
                    else:
                        ready.append(i)  # no text: written with no chunks, as a local ingest does
                else:
                    got = pending.setdefault(i, [])
                    got.append((pickle.loads(blob), np.asarray(vector, dtype=np.float32)))
                    if len(got) == n:
                        ready.append(i)
            ready = [i for i in ready if i not in failed]
            while len(ready) >= batch_docs:
                commit(ready[:batch_docs])
                del ready[:batch_docs]
        if ready:
            commit(ready)
    except RagtuneError:
        raise
    except Exception as exc:  # Ray itself failed (a node lost past its retries): what was committed stays
        crash = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
    for i in sorted(too_big):
        d = todo[i]
        report.skipped.append(Skipped(
            d.source or d.id,
            f"document {d.id!r} makes {too_big[i]} chunks, over the limit of {max_chunks} per document",
        ))  # fmt: skip
        for kind in (report.added, report.updated):
            if d.id in kind:
                kind.remove(d.id)
    if failed or crash:
        if done:
            store.refresh_text_index()
        why = crash or f"{todo[min(failed)].id}: {failed[min(failed)]}"
        raise RagtuneError(
            f"Ray ingest wrote {done} of {len(todo)} new or changed documents; the others failed in a worker "
            f"and are as they were (each stored document is wholly old or new; run it again to finish): {why}"
        )


# -- `compare --ray` / `evaluate --ray`: questions x strategies on a pool of answering actors --------


class Answerer:
    """A Ray actor that answers batches of an experiment's questions. It opens the experiment's
    indexes by URL and loads each strategy's generator once (by its name and adapter, exactly as a
    local run does), so its answers are the local run's answers: the same greedy decoding of the
    same batches. `generators` (picklable ones, e.g. tests' scripted models) take precedence."""

    def __init__(self, indexes: dict, rag_cfg, generators: dict | None, threads: int):
        try:
            import torch

            torch.set_num_threads(max(1, threads))
        except ImportError:  # pragma: no cover - torch is a dependency
            pass
        self.urls, self.rag_cfg = indexes, rag_cfg
        self.generators = dict(generators or {})
        self.indexes: dict = {}
        self.cache: dict = {}
        self.pipes: dict = {}

    def _pipe(self, strategy, which: str):
        from .evaluation.strategies import load_generator
        from .index import Index
        from .rag import Pipeline

        key = (strategy, which)
        if key not in self.pipes:
            gen = self.generators.get(strategy.name) or load_generator(strategy, self.cache)
            getattr(gen, "model", None)  # loaded outside the meter, as a local run does
            index = None
            if strategy.retrieval:
                if which not in self.indexes:
                    self.indexes[which] = Index.open(self.urls[which])
                index = self.indexes[which]
            self.pipes[key] = Pipeline(index, gen, self.rag_cfg)
        return self.pipes[key]

    def answer(self, job: tuple) -> tuple:
        """job = (start, strategy, examples, kind, which index, support threshold) ->
        (start, records, wall seconds, CPU seconds)."""
        from .evaluation.costs import Meter
        from .evaluation.strategies import run_strategy

        start, strategy, examples, kind, which, threshold = job
        pipe = self._pipe(strategy, which)
        with Meter() as m:
            recs = run_strategy(strategy, examples, kind, pipe, threshold)
        return start, recs, m.result.wall_s, m.result.cpu_s


def _url_for_workers(url: str) -> str:
    """A local index path, absolute (workers do not share the driver's working directory)."""
    if not url or "://" in url or url.startswith(("pg:", "postgres")):
        return url
    return str(Path(url).resolve())


class AnswerPool:
    """`workers` Answerer actors (default: one per CPU of the cluster, or $RAGTUNE_RAY_WORKERS),
    each with an equal share of the CPUs (one GPU each on a GPU cluster). `map(jobs)` yields
    finished jobs as they complete."""

    def __init__(self, address: str | None, indexes: dict, rag_cfg, generators: dict | None = None,
                 workers: int | None = None):  # fmt: skip
        ray = _ray()
        self._started = connect(address)
        res = _resources(ray, workers, None)  # the same shares as the embedding actors of ray_ingest
        actor = ray.remote(num_cpus=res["cpus"], num_gpus=res["gpus"] or None)(Answerer)
        urls = {k: _url_for_workers(v) for k, v in indexes.items()}
        self.actors = [actor.remote(urls, rag_cfg, generators, res["cpus"]) for _ in range(res["workers"])]
        self.workers = res["workers"]

    def map(self, jobs: Sequence[tuple]):
        from ray.util import ActorPool

        pool = ActorPool(self.actors)
        yield from pool.map_unordered(lambda a, job: a.answer.remote(job), list(jobs))

    def close(self) -> None:
        ray = _ray()
        for a in self.actors:
            ray.kill(a)
        self.actors = []
        if self._started:
            ray.shutdown()


# -- `finetune --ray --workers N`: data-parallel training with Ray Train ---------------------------


KILL_AT_STEP = "RAGTUNE_TEST_RAY_KILL_AT_STEP"  # testing hook, see _kill_once


def _kill_once(step: int, marker: Path):
    """Testing hook ($RAGTUNE_TEST_RAY_KILL_AT_STEP=N): a progress callback that kills the first
    worker's process outright (no exception, no clean-up) after step N, once per out folder (the
    marker file remembers it), so tests can see Ray restart the workers and the run resume."""

    def progress(done: int, total: int, loss: float, tokens_per_s: float) -> None:
        if done == step and not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            os._exit(17)

    return progress


def _train_worker(config: dict) -> None:
    """One Ray Train worker: torch.distributed is set up (gloo on CPUs, nccl on GPUs); `train`
    shares each step's examples and sums the gradients (finetune.train.DataParallel). After a
    worker died, Ray runs this again on a new group and `train` resumes from the checkpoint that
    the first worker left in the shared out folder."""
    import torch

    from .finetune.train import train

    torch.set_num_threads(max(1, int(config["threads"])))
    kill = config.get("kill_at_step")
    progress = _kill_once(kill, Path(config["out"], ".ray", f"killed-at-step-{kill}")) if kill else None
    train(config["cfg"], config["data"], config["out"], index=config["index"], progress=progress)


def ray_finetune(cfg, data_dir: str | Path, out_dir: str | Path, index: str | None = None,
                 address: str | None = None, workers: int = 2, progress: Progress | None = None,
                 max_failures: int = 2):  # fmt: skip
    """Fine-tune on `workers` Ray Train workers (data parallel). Same artefacts as a local run
    (adapter or model, log, checkpoints, results.json) in `out_dir`, written by the first worker.

    Fault tolerance: the checkpoint files in `out_dir` are the run's state (Ray keeps none of its
    own). When a worker dies, Ray Train restarts the whole group, up to `max_failures` times (-1:
    without limit), and the new workers resume from the last checkpoint; past that, or when the
    driver itself is stopped, the same call run again resumes from it too (so does a local `train`).
    `out_dir` must therefore be one folder every worker sees: on a multi-node cluster, shared
    storage. Returns the TrainResult (its `resumed_from_step` is the last resume's step)."""
    import json

    from .finetune.train import CHECKPOINT, RESULTS, TrainResult

    if workers < 1:
        raise ConfigError(f"--workers {workers}: must be at least 1")
    if max_failures < -1:
        raise ConfigError(f"max_failures={max_failures}: must be -1 (no limit), 0 (no restarts) or more")
    ray = _ray()
    try:
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
    except ImportError as exc:
        raise ConfigError("finetune --ray needs Ray Train: pip install 'ragtune[ray]' (ray[train])") from exc
    started = connect(address)
    say = progress or (lambda msg: None)
    try:
        res = _resources(ray, workers, None)
        workers, cpus, gpus = res["workers"], res["cpus"], res["gpus"]
        out = Path(out_dir).resolve()
        out.mkdir(parents=True, exist_ok=True)
        config = {"cfg": cfg, "data": str(Path(data_dir).resolve()), "out": str(out),
                  "index": _url_for_workers(str(index)) if index else None, "threads": cpus,
                  "kill_at_step": _env_int(KILL_AT_STEP)}  # fmt: skip
        restarts = {0: "no restarts", -1: "restarts"}.get(max_failures, f"up to {max_failures} restart(s)")
        say(f"training on Ray: {workers} workers, {cpus} CPUs each{', one GPU each' if gpus else ''}; "
            f"{restarts} from the last checkpoint if a worker dies")  # fmt: skip
        trainer = TorchTrainer(
            _train_worker,
            train_loop_config=config,
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=bool(gpus), resources_per_worker={"CPU": cpus}),
            run_config=RunConfig(
                name="ragtune-finetune",
                storage_path=str(out / ".ray"),
                failure_config=FailureConfig(max_failures=max_failures),
            ),
        )
        try:
            trainer.fit()
        except Exception as exc:  # Ray wraps a worker's error; say what it was
            cause = exc.__cause__ or exc
            again = f" (run it again to resume from {out / CHECKPOINT})" if (out / CHECKPOINT).is_file() else ""
            raise RagtuneError(f"fine-tuning on Ray failed{again}: {type(cause).__name__}: {cause}") from exc
        data = json.loads((out / RESULTS).read_text())
        return TrainResult(**data)
    finally:
        if started:
            ray.shutdown()
