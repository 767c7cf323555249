"""Load on the ragtune server over loopback: 1, 4 and 16 concurrent clients for a fixed time
each, then more clients than the queue admits. Real models (SmolLM2-135M, all-MiniLM-L6-v2) on an
index of the bundled demo data; the server runs in its own process, as `ragtune serve` does.

Prints throughput, p50/p95 latency and errors per level, and the ratio of throughput at N
clients to the 1-client baseline measured in this run. Targets: with 16 clients, throughput at
least 3x that of 1 client (concurrent questions are answered in batches) and no errors; past the
queue limit, 503s that come back fast rather than time-outs. `--max-batch 1` measures the server
without batching. `--rounds N` runs the 1/4/16 levels N times, interleaved (the CPU may be shared),
and compares medians. The mean batch (questions per model call) comes from the server's /metrics.

`--ceiling` first measures, in this process and without HTTP, what batching can gain on this machine
at most: the same Pipeline answering 64 demo questions one at a time and then in batches of 16
(medians of 3 rounds, the embedder's cache off so that neither pass reuses the other's vectors). A
server adds per-request work that does not batch (HTTP, JSON, the queue), so its 16/1 ratio stays
below this one.

    python benchmarks/serve_load.py [--seconds 20] [--rounds 1] [--queue 16] [--batch-window-ms 5] [--max-batch 16]
        [--questions 200] [--embed-cache N] [--ceiling]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# The server, in its own process (the load's client threads must not share its interpreter lock).
SERVER = """
import sys, uvicorn
import ragtune.embedders
from ragtune.server.app import ServeConfig, create_app
index, port, queue, window, batch, cache = sys.argv[1:7]
if cache != "default":
    ragtune.embedders.CACHE_SIZE = int(cache)  # texts whose vectors the embedder keeps (0: none)
cfg = ServeConfig(index=index, max_queue=int(queue), request_timeout_s=120.0, batch_window_ms=float(window),
                  max_batch=int(batch))
uvicorn.run(create_app(cfg), host="127.0.0.1", port=int(port), log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def batch_counts(url: str) -> tuple[float, float]:
    """(batches, questions in them) so far, from the server's /metrics (NaN from a server without them)."""
    import httpx

    text = httpx.get(url + "/metrics").text
    found = [re.search(rf"^{name} (\S+)$", text, re.M) for name in ("ragtune_batches", "ragtune_batched_questions")]
    return tuple(float(m.group(1)) if m else float("nan") for m in found)


def load(url: str, clients: int, seconds: float, questions: list[str]) -> dict:
    import httpx

    batches0, answered0 = batch_counts(url)
    lat, codes, lock = [], {}, threading.Lock()
    stop = time.perf_counter() + seconds

    def worker(i: int) -> None:
        with httpx.Client(timeout=120) as c:
            n = 0
            while time.perf_counter() < stop:
                q = questions[(i * 7 + n) % len(questions)]
                n += 1
                t0 = time.perf_counter()
                try:
                    code = c.post(url + "/v1/ask", json={"question": q, "k": 3}).status_code
                except httpx.TimeoutException:
                    code = "timeout"
                dt = time.perf_counter() - t0
                with lock:
                    codes[code] = codes.get(code, 0) + 1
                    if code == 200:
                        lat.append(dt)
                if code == 503:
                    time.sleep(0.2)  # a polite client backs off

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    batches1, answered1 = batch_counts(url)
    lat.sort()
    return {
        "mean_batch": (answered1 - answered0) / max(batches1 - batches0, 1),
        "clients": clients,
        "ok": codes.get(200, 0),
        "codes": codes,
        "throughput": codes.get(200, 0) / wall,
        "p50": statistics.median(lat) if lat else float("nan"),
        "p95": lat[int(0.95 * (len(lat) - 1))] if lat else float("nan"),
    }


def ceiling(index: str, questions: list[str], rounds: int = 3, n: int = 64, batch: int = 16) -> float:
    """Answers/s of one Pipeline in batches of `batch` over answers/s one question at a time, in this
    process (no HTTP); prints both and returns the ratio of the medians."""
    import ragtune.embedders
    from ragtune import Index, Pipeline, make_generator

    ragtune.embedders.CACHE_SIZE = 0  # read when the embedder is made: neither pass reuses the other's vectors
    pipe = Pipeline(Index.open(index), make_generator())
    qs = questions[:n]
    pipe.answer_batch(qs[:batch])  # warm: loads the models
    one, many = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for q in qs:
            pipe.answer_batch([q])
        one.append(len(qs) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for i in range(0, len(qs), batch):
            pipe.answer_batch(qs[i : i + batch])
        many.append(len(qs) / (time.perf_counter() - t0))
    ratio = statistics.median(many) / statistics.median(one)
    print(
        f"in-process ceiling ({len(qs)} questions, {rounds} rounds, medians): one at a time "
        f"{statistics.median(one):.2f} answers/s, batches of {batch} {statistics.median(many):.2f}/s: "
        f"ratio {ratio:.2f} (the most a server's batching can gain here)",
        flush=True,
    )
    return ratio


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rounds", type=int, default=1, help="repeat the 1/4/16 levels; medians are compared")
    ap.add_argument("--queue", type=int, default=16)
    ap.add_argument("--batch-window-ms", type=float, default=5.0, help="ServeConfig.batch_window_ms")
    ap.add_argument("--max-batch", type=int, default=16, help="ServeConfig.max_batch; 1 = no batching")
    ap.add_argument("--index", help="an existing index of the demo data (default: build one in a temporary folder)")
    ap.add_argument("--no-overload", action="store_true", help="skip the level past the queue limit")
    ap.add_argument(
        "--embed-cache", type=int, help="vectors the embedder keeps (ragtune.embedders.CACHE_SIZE); 0: none"
    )
    ap.add_argument(
        "--questions",
        type=int,
        default=200,
        help="distinct demo questions the clients cycle through (the demo has 713); fewer repeats, fewer "
        "answers from the embedder's cache of recent texts",
    )
    ap.add_argument("--ceiling", action="store_true", help="first measure batching's gain in-process, without HTTP")
    args = ap.parse_args()

    from ragtune.demo import demo_data_path
    from ragtune.documents import load_squad

    docs, examples = load_squad(demo_data_path())
    index = args.index or str(Path(tempfile.mkdtemp(prefix="ragtune-serve-bench-")) / "ix")
    if not args.index:
        subprocess.run(
            [sys.executable, "-m", "ragtune.cli", "ingest", str(demo_data_path()), "--index", index],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    if args.ceiling:
        ceiling(index, [e.question for e in examples[: args.questions]])
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, index, str(port), str(args.queue), str(args.batch_window_ms),
         str(args.max_batch), "default" if args.embed_cache is None else str(args.embed_cache)],
        env=env,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(600):
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        questions = [e.question for e in examples[: args.questions]]
        httpx.post(url + "/v1/ask", json={"question": questions[0]}, timeout=300)  # warm: loads the models
        rows = []
        print(f"batch window {args.batch_window_ms:g} ms, max batch {args.max_batch}, queue {args.queue}", flush=True)
        runs: dict[int, list[dict]] = {1: [], 4: [], 16: []}
        for _ in range(args.rounds):
            for clients in runs:
                r = load(url, clients, args.seconds, questions)
                runs[clients].append(r)
                print(
                    f"{clients:>3} clients: {r['throughput']:.2f} answers/s, p50 {r['p50']:.2f}s, p95 {r['p95']:.2f}s"
                    f", mean batch {r['mean_batch']:.1f}, responses {r['codes']}",
                    flush=True,
                )
        for clients, rs in runs.items():
            codes: dict = {}
            for r in rs:
                for k, v in r["codes"].items():
                    codes[k] = codes.get(k, 0) + v
            median = statistics.median(r["throughput"] for r in rs)
            rows.append({"clients": clients, "codes": codes, "throughput": median})
        if args.rounds > 1:
            print("medians over rounds: " + ", ".join(f"{r['clients']} clients {r['throughput']:.2f}/s" for r in rows))
        if not args.no_overload:
            r = load(url, args.queue * 2 + 8, args.seconds, questions)
            rows.append(r)
            print(f"{r['clients']:>3} clients: {r['throughput']:.2f} answers/s, responses {r['codes']}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    base = rows[0]["throughput"]
    for r in rows[1:3]:
        print(f"ratio throughput {r['clients']} clients / 1 client (baseline, same run) = {r['throughput'] / base:.2f}")
    errors = {r["clients"]: sum(v for k, v in r["codes"].items() if k != 200) for r in rows[:3]}
    ratio = rows[2]["throughput"] / base
    print(f"errors at 1 / 4 / 16 clients: {errors[1]} / {errors[4]} / {errors[16]} (target 0)")
    ok = ratio >= 3 and not any(errors.values())
    print(f"16 clients / 1 client = {ratio:.2f} (target >= 3): {'met' if ok else 'NOT met'}")
    if len(rows) > 3:
        over = rows[3]["codes"]
        print(
            f"past the queue limit ({rows[3]['clients']} clients): "
            f"{over.get(503, 0)} x 503, {over.get('timeout', 0)} time-outs (target: 503s, no time-outs)"
        )
        ok = ok and over.get("timeout", 0) == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
