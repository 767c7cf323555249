"""Concurrent writers on one index: several processes, and the server with a CLI ingest beside it.
LanceDB commits optimistically; conflicting commits are retried, and every reader sees the
latest commit of any process."""

import socket
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import uvicorn

from ragtune import Index
from ragtune.documents import Document
from ragtune.server.app import ServeConfig, create_app
from ragtune.testing import ScriptedGenerator

WRITER = textwrap.dedent(
    """
    import sys
    from ragtune import Index
    from ragtune.documents import Document
    tag, n = sys.argv[1], int(sys.argv[2])
    ix = Index.open(sys.argv[3])
    for i in range(n):
        ix.ingest([Document(f"{tag}-{i}", f"document {tag} number {i} about the zorblax")])
        if i % 3 == 0:
            ix.delete([f"{tag}-{i}"])
    """
)


def test_processes_writing_one_index_at_once_lose_nothing(tmp_path):
    url = str(tmp_path / "ix")
    Index.create(url, embedder="hashing").ingest([Document("seed", "the first document")])
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, tag, "15", url], stderr=subprocess.PIPE, text=True)
        for tag in "abc"
    ]
    errors = [p.communicate(timeout=240)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    index = Index.open(url)
    expected = {"seed"} | {f"{t}-{i}" for t in "abc" for i in range(15) if i % 3}
    assert {d.id for d in index.documents()} == expected
    found = {h.chunk.doc_id for h in index.search("zorblax", k=100, mode="bm25")}
    assert found == expected - {"seed"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_uploads_and_deletes_while_a_cli_ingest_writes_the_same_index(tmp_path):
    url = str(tmp_path / "ix")
    Index.create(url, embedder="hashing").ingest([Document("seed", "the first document")])
    folder = tmp_path / "files"
    folder.mkdir()
    for i in range(30):
        (folder / f"f{i}.txt").write_text(f"File number {i} is about the quokka.")
    gen = ScriptedGenerator(lambda m: "ok")
    app = create_app(ServeConfig(index=url, max_queue=64), generators={"rag": gen, "base": gen})
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(base + "/healthz", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)

    def upload_then_maybe_delete(i: int) -> list[int]:
        with httpx.Client(base_url=base, timeout=120) as c:
            doc = {"id": f"u{i}", "text": f"Upload {i} mentions the zorblax."}
            codes = [c.post("/v1/documents", json={"documents": [doc]}).status_code]
            if i % 3 == 0:
                codes.append(c.delete(f"/v1/documents/u{i}").status_code)
            return codes

    cli = subprocess.Popen(
        [sys.executable, "-m", "ragtune.cli", "ingest", str(folder), "--index", url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with ThreadPoolExecutor(16) as pool:
            codes = [c for cs in pool.map(upload_then_maybe_delete, range(100)) for c in cs]
        out, err = cli.communicate(timeout=240)
        assert cli.returncode == 0, err
        assert set(codes) == {200}, codes
        expected = {"seed"} | {f"files/f{i}.txt" for i in range(30)} | {f"u{i}" for i in range(100) if i % 3}
        listed = {d["id"] for d in httpx.get(base + "/v1/documents", timeout=30).json()["documents"]}
        assert listed == expected  # the server sees the CLI's commits too
        assert {d.id for d in Index.open(url).documents()} == expected
    finally:
        server.should_exit = True
        thread.join(timeout=30)
