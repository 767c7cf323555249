"""The reliability suite (`make reliability`; `--short` runs in CI through `make test`).

Three parts, one table:
  hostile corpus  every kind of hostile file from tests/hostile_corpus.py, ingested by the CLI
                  (`--json`) next to good files: no traceback, every good file lands, every bad
                  file is skipped with a reason;
  crash tests     tests/test_crash.py and tests/test_concurrency.py (SIGKILL mid-ingest,
                  mid-fine-tuning and mid-compare, SIGTERM mid-request, concurrent writers);
  soak            16 clients on a loopback server for a bounded time: questions (all retrieval
                  modes, streamed chat), uploads, deletes and listings at once; an upload the
                  server acknowledged and nobody deleted must be in the index at the end.

    python scripts/reliability.py [--short] [--seconds 60] [--clients 16] [--json out.json]

Exit status 1 when anything crashed, lost a document, answered 5xx other than 503, or a crash
test failed. The soak uses the test fakes (hashing embedder, a scripted generator with a
per-answer delay) so that it measures the server, not the model.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def hostile(work: Path) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from hostile_corpus import write_hostile_corpus

    corpus = work / "hostile"
    corpus.mkdir()
    expected = write_hostile_corpus(corpus)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "ragtune.cli", "ingest", str(corpus), "--index", str(work / "hix"),
         "--embedder", "hashing", "--json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    crashed = "Traceback" in proc.stdout + proc.stderr or proc.returncode not in (0, 3)
    lost, unexplained = [], []
    if not crashed:
        report = json.loads(proc.stdout)
        skipped = {Path(s["path"].rsplit(":", 1)[0] if re.search(r":\d+$", s["path"]) else s["path"]).name: s
                   for s in report["skipped"]}  # fmt: skip
        unexplained = [name for name, s in skipped.items() if not s["reason"].strip()]
        from ragtune import Index

        docs = Index.open(work / "hix").documents()
        landed = {os.path.realpath(d.source) for d in docs}  # files in subfolders by their whole path
        sources = {Path(d.source).name for d in docs} | {Path(d.id).name for d in docs}
        lost = [
            name
            for name, outcome in expected.items()
            if outcome == "load" and name not in sources and os.path.realpath(corpus / name) not in landed
        ]
    return {
        "part": "hostile corpus",
        "inputs": len(expected),
        "crashes": int(crashed),
        "lost": len(lost) + len(unexplained),
        "detail": (proc.stderr[-2000:] if crashed else "")
        + (f" lost: {lost}" if lost else "")
        + (f" skipped without a reason: {unexplained}" if unexplained else ""),
        "seconds": time.perf_counter() - t0,
    }


def crash_tests() -> dict:
    t0 = time.perf_counter()
    files = [f for f in ("tests/test_crash.py", "tests/test_concurrency.py") if (ROOT / f).exists()]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
        capture_output=True, text=True, cwd=ROOT, timeout=1200,
    )  # fmt: skip
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    passed = sum(int(n) for n in re.findall(r"(\d+) passed", tail))
    failed = sum(int(n) for n in re.findall(r"(\d+) (?:failed|error)", tail))
    return {
        "part": "crash tests",
        "inputs": passed + failed,
        "crashes": failed + (0 if proc.returncode in (0,) else int(failed == 0)),
        "lost": 0,
        "detail": tail if proc.returncode else "",
        "seconds": time.perf_counter() - t0,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def soak(work: Path, seconds: float, clients: int) -> dict:
    import httpx
    import uvicorn

    from ragtune import Index
    from ragtune.documents import Document
    from ragtune.server.app import ServeConfig, create_app
    from ragtune.testing import ScriptedGenerator

    url = str(work / "six")
    topics = ["bridges", "rivers", "castles", "quokkas", "comets", "glaciers", "harbours", "orchards"]
    Index.create(url, embedder="hashing").ingest(
        [Document(f"seed-{i}", f"The {t} of region {i} are described here. Region {i} has {i * 7} {t}.")
         for i, t in enumerate(topics * 4)]
    )  # fmt: skip

    def slow(messages):
        time.sleep(0.02)  # a model's time, so that requests overlap and the queue fills
        return "They are described in the sources [1]."

    gen = ScriptedGenerator(slow)
    app = create_app(ServeConfig(index=url, max_queue=8), generators={"rag": gen, "base": gen})
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.config.port}"
    for _ in range(200):
        try:
            httpx.get(base + "/healthz", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.05)
    lock = threading.Lock()
    lat: list[float] = []
    codes: dict[str, int] = {}
    acked: set[str] = set()
    deleted: set[str] = set()
    stop = time.perf_counter() + seconds

    def record(code: str, dt: float) -> None:
        with lock:
            codes[code] = codes.get(code, 0) + 1
            lat.append(dt)

    def client(n: int) -> None:
        rng = random.Random(n)
        mine: list[str] = []
        with httpx.Client(base_url=base, timeout=60) as c:
            i = 0
            while time.perf_counter() < stop:
                i += 1
                roll, t0 = rng.random(), time.perf_counter()
                try:
                    if roll < 0.6:
                        body = {"question": f"How many {rng.choice(topics)} has region {rng.randrange(32)}?",
                                "strategy": rng.choice(["rag", "rag", "base"])}  # fmt: skip
                        r = c.post("/v1/ask", json=body)
                    elif roll < 0.7:
                        msg = {"role": "user", "content": f"Tell me about {rng.choice(topics)}"}
                        with c.stream("POST", "/v1/chat/completions",
                                      json={"model": "rag", "messages": [msg], "stream": True}) as r:  # fmt: skip
                            for _ in r.iter_lines():
                                pass
                    elif roll < 0.85:
                        doc_id = f"c{n}-{i}"
                        doc = {"id": doc_id, "text": f"Client {n} wrote note {i} about {rng.choice(topics)}."}
                        r = c.post("/v1/documents", json={"documents": [doc]})
                        if r.status_code == 200:
                            mine.append(doc_id)
                            with lock:
                                acked.add(doc_id)
                    elif roll < 0.93 and mine:
                        doc_id = mine.pop(rng.randrange(len(mine)))
                        r = c.delete(f"/v1/documents/{doc_id}")
                        if r.status_code == 200:
                            with lock:
                                deleted.add(doc_id)
                    else:
                        r = c.get("/v1/documents")
                    record(str(r.status_code), time.perf_counter() - t0)
                except httpx.HTTPError as exc:
                    record(type(exc).__name__, time.perf_counter() - t0)

    t0 = time.perf_counter()
    workers = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stored = {d.id for d in Index.open(url).documents()}
    server.should_exit = True
    thread.join(timeout=30)
    lost = sorted((acked - deleted) - stored)
    errors = sum(v for k, v in codes.items() if not (k.startswith("2") or k == "503"))
    lat.sort()
    return {
        "part": f"soak ({clients} clients)",
        "inputs": sum(codes.values()),
        "crashes": errors,
        "lost": len(lost),
        "requests": sum(codes.values()),
        "errors": errors,
        "503s": codes.get("503", 0),
        "p50_ms": 1000 * statistics.median(lat) if lat else 0.0,
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else 0.0,
        "codes": codes,
        "detail": f"lost: {lost[:10]}" if lost else "",
        "seconds": time.perf_counter() - t0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", action="store_true", help="the CI version: a 10 s soak")
    ap.add_argument("--seconds", type=float, help="soak duration (default 10 short, 60 full)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--skip-crash-tests", action="store_true", help="when pytest has just run them")
    ap.add_argument("--json", help="write the rows here too")
    args = ap.parse_args()
    seconds = args.seconds or (10.0 if args.short else 60.0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ragtune-reliability-") as tmp:
        work = Path(tmp)
        rows.append(hostile(work))
        if not args.skip_crash_tests:
            rows.append(crash_tests())
        rows.append(soak(work, seconds, args.clients))
    print(f"{'part':<18}{'inputs':>7}{'crashes':>8}{'lost':>5}" + "".join(
        f"{h:>{w}}" for h, w in (("requests", 9), ("errors", 7), ("503s", 6), ("p50 ms", 8), ("p99 ms", 8))))
    for r in rows:
        soaked = "requests" in r
        print(
            f"{r['part']:<18}{r['inputs']:>7}{r['crashes']:>8}{r['lost']:>5}"
            + (f"{r['requests']:>9}{r['errors']:>7}{r['503s']:>6}{r['p50_ms']:>8.1f}{r['p99_ms']:>8.1f}" if soaked
               else f"{'-':>9}{'-':>7}{'-':>6}{'-':>8}{'-':>8}")  # fmt: skip
        )
        if r["detail"]:
            print(f"  {r['part']}: {r['detail']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    bad = any(r["crashes"] or r["lost"] for r in rows)
    print("reliability: " + ("FAILED" if bad else "ok"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
