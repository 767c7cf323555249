"""Indexes on object storage: `--index s3://bucket/path` against a real S3-compatible server
(moto's server mode, started on loopback by the test; the dev set-up installs it)."""

import itertools
import logging
import os
import subprocess
import sys

import pytest

# No skip: `make test` installs moto[server] (dev extra); a missing one must fail loudly.
from moto.server import ThreadedMotoServer

from ragtune import Index
from ragtune.errors import IndexNotFoundError
from ragtune.testing import HashingEmbedder, StoreContract

_n = itertools.count()
BUCKET = "ragtune-test"


@pytest.fixture(scope="module")
def s3_env():
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per S3 request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        # LanceDB (object_store) and pyarrow read these; AWS_ALLOW_HTTP lets them speak plain HTTP to loopback.
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ENDPOINT": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


class TestS3(StoreContract):
    """The whole store contract on an index kept in S3."""

    @pytest.fixture
    def store_url(self, s3_env):
        return f"s3://{BUCKET}/contract-{next(_n)}"


def _docs(tmp_path, texts: dict[str, str]):
    folder = tmp_path / "docs"
    folder.mkdir(exist_ok=True)
    for name, text in texts.items():
        (folder / name).write_text(text)
    return folder


def test_ingest_sync_and_search_an_index_in_s3(s3_env, tmp_path):
    url = f"s3://{BUCKET}/api-{next(_n)}"
    folder = _docs(
        tmp_path,
        {
            "kelvor.txt": "The Kelvor bridge was built by Mara Voss in 1871.",
            "lake.txt": "Tamsin lake is 40 metres deep.",
        },
    )
    index = Index.create(url, embedder=HashingEmbedder())
    report = index.ingest([folder])
    assert len(report.added) == 2
    assert index.search("Who built the Kelvor bridge?", k=1, mode="bm25")[0].chunk.doc_id == "docs/kelvor.txt"
    assert index.info().disk_bytes > 0  # the objects under the prefix, not 0

    # A second handle (another worker, the server) sees the same index and its changes.
    other = Index.open(url, embedder=HashingEmbedder())
    (folder / "kelvor.txt").write_text("The Kelvor bridge was built by Odo Brant in 1902.")
    (folder / "lake.txt").unlink()
    report = index.ingest([folder], sync=True)
    assert (report.updated, report.deleted) == (["docs/kelvor.txt"], ["docs/lake.txt"])
    hits = other.search("Who built the Kelvor bridge?", k=5, mode="hybrid")
    assert [h.chunk.doc_id for h in hits] == [hits[0].chunk.doc_id] and "Odo Brant" in hits[0].chunk.text

    # Settings recorded in the manifest travel with it.
    index.set_retrieval(mode="bm25", k=2)
    assert Index.open(url, embedder=HashingEmbedder()).info().retrieval["mode"] == "bm25"


def test_a_missing_s3_index_is_one_clear_error(s3_env):
    with pytest.raises(IndexNotFoundError, match="no ragtune index"):
        Index.open(f"s3://{BUCKET}/nothing-here")


@pytest.mark.e2e
def test_cli_ingest_and_search_on_s3(s3_env, tmp_path):
    """The commands a user runs, with the bundled embedder, in fresh processes."""
    url = f"s3://{BUCKET}/cli-{next(_n)}"
    folder = _docs(tmp_path, {"kelvor.txt": "The Kelvor bridge was built by Mara Voss in 1871."})
    cli = [sys.executable, "-m", "ragtune.cli"]
    env = {**os.environ, **s3_env}
    run = subprocess.run([*cli, "ingest", str(folder), "--index", url], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    search = [*cli, "search", "Who built the bridge?", "--index", url]
    run = subprocess.run(search, env=env, capture_output=True, text=True)
    assert run.returncode == 0 and "Mara Voss" in run.stdout, run.stderr
