import os
import socket

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

_real_connect = socket.socket.connect


def _loopback_only(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if (
        isinstance(host, str)
        and (host in ("localhost", "::1") or host.startswith("127."))
        or self.family == socket.AF_UNIX
    ):
        return _real_connect(self, address)
    raise RuntimeError(f"tests must not touch the network (tried {address!r})")


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path_factory):
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)
    # User and cache directories live in a temp folder, except the converted-model cache,
    # which is shared across the session so the real model is converted once.
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("RAGTUNE_CACHE", str(_shared_cache(tmp_path_factory)))


_CACHE = {}


def _shared_cache(factory):
    if "dir" not in _CACHE:
        _CACHE["dir"] = os.environ.get("RAGTUNE_TEST_CACHE") or str(factory.mktemp("ragtune-cache"))
    return _CACHE["dir"]


@pytest.fixture
def embedder():
    from ragtune.testing import HashingEmbedder

    return HashingEmbedder(dim=256)


@pytest.fixture
def small_chunking():
    from ragtune.config import ChunkConfig

    return ChunkConfig(chunk_tokens=40, overlap_tokens=8)


CORPUS = {
    "paris.txt": "Paris is the capital of France. It lies on the river Seine.\n\nThe Eiffel Tower was built in 1889.",
    "berlin.md": "# Berlin\n\nBerlin is the capital of Germany. The Brandenburg Gate stands in Berlin.",
    "rome.txt": "Rome is the capital of Italy. The Colosseum is an amphitheatre in Rome.",
}


@pytest.fixture
def corpus_dir(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    for name, text in CORPUS.items():
        (d / name).write_text(text, encoding="utf-8")
    return d
