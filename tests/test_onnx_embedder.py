"""The ONNX Runtime embedder: sentence-transformers' vectors without torch at query time."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from ragtune import models
from ragtune.embedders import SentenceTransformerEmbedder, sentence_embedder
from ragtune.errors import ConfigError
from ragtune.onnx_embedder import OnnxEmbedder, UnsupportedModel, providers, read_layout

TEXTS = [
    "Who built the Brooklyn Bridge?",
    "hello",
    "The quick brown fox jumps over the lazy dog. " * 40,  # past max_seq_length: truncated alike
    "Ünïcödé façade — naïve 東京 café",
    "",
    "  leading and trailing spaces  ",
]
HEAVY = ("torch", "sentence_transformers", "transformers")


def _tiny_bert(path: Path, pooling: dict, lower: bool = False, dense: bool = False) -> Path:
    """A 2-layer BERT sentence-transformers folder with the real MiniLM tokenizer (fast to export)."""
    import torch
    from transformers import BertConfig, BertModel

    real = models.resolve_embedder("all-minilm-l6-v2")
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=128,
    )  # fmt: skip
    BertModel(cfg).save_pretrained(path)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(real / name, path / name)
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64, "do_lower_case": lower}))
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **pooling}))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if dense:
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (path / "modules.json").write_text(json.dumps(modules))
    return path


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize(
    "pooling, lower, exporter",
    [
        ({"pooling_mode_mean_tokens": True}, False, "dynamo"),
        ({"pooling_mode": ["cls", "max", "mean_sqrt_len_tokens"]}, True, "torchscript"),
    ],
)
def test_tiny_model_matches_sentence_transformers(tmp_path, monkeypatch, pooling, lower, exporter):
    folder = _tiny_bert(tmp_path / "tiny", pooling, lower)
    if exporter == "torchscript":  # what export_onnx falls back to without onnxscript
        real_find_spec = models.importlib.util.find_spec
        monkeypatch.setattr(
            models.importlib.util, "find_spec", lambda n, *a: None if n == "onnxscript" else real_find_spec(n, *a)
        )
    onnx = OnnxEmbedder(str(folder), batch_size=4)
    st = SentenceTransformerEmbedder(str(folder))
    texts = [*TEXTS, "MiXeD CaSe TeXt"]
    got, want = onnx.embed(texts), st.embed(texts)
    assert got.shape == want.shape == (len(texts), onnx.dim) and got.dtype == np.float32
    assert onnx.dim == st.dim
    assert _cosines(got, want).min() >= 0.999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert onnx.count_tokens(texts) == st.count_tokens(texts)


def test_vector_cache_embeds_each_distinct_text_once(tmp_path):
    folder = _tiny_bert(tmp_path / "tiny", {"pooling_mode_mean_tokens": True}, False)
    plain = OnnxEmbedder(str(folder), batch_size=4, cache_size=0)
    onnx = OnnxEmbedder(str(folder), batch_size=4, cache_size=3)
    seen: list[list[str]] = []
    compute = onnx._embed_all
    onnx._embed_all = lambda texts: (seen.append(list(texts)), compute(texts))[1]
    a, b, c, d = TEXTS[:4]
    got = onnx.embed([a, b, a, c, a])
    assert seen == [[a, b, c]]  # a call's duplicates once
    assert np.allclose(got, plain.embed([a, b, a, c, a]), atol=1e-6)
    assert np.array_equal(got[0], got[2]) and np.array_equal(got[0], got[4])
    assert np.allclose(onnx.embed([c, a]), got[[3, 0]], atol=1e-6) and len(seen) == 1  # both cached
    onnx.embed([d])  # a fourth text: the least recently used (b) goes
    assert list(onnx.cache._vecs) == [c, a, d]
    onnx.embed([b, a])
    assert seen[1:] == [[d], [b]] and (onnx.cache.hits, onnx.cache.misses) == (3, 5)
    with pytest.raises(ConfigError, match="cache size"):
        OnnxEmbedder(str(folder), cache_size=-1)


@pytest.mark.e2e
def test_bundled_model_matches_sentence_transformers():
    onnx = sentence_embedder("all-minilm-l6-v2")
    assert isinstance(onnx, OnnxEmbedder) and onnx.name == "all-minilm-l6-v2"  # same name -> same index space
    st = sentence_embedder("all-minilm-l6-v2", backend="sentence-transformers")
    got, want = onnx.embed(TEXTS), st.embed(TEXTS)
    assert _cosines(got, want).min() >= 0.999
    assert onnx.count_tokens(TEXTS) == st.count_tokens(TEXTS)
    assert onnx.dim == st.dim == 384 and onnx.embed([]).shape == (0, 384)
    # int8: a quarter of the size, close but not identical (benchmarks/onnx_recall.py measures recall)
    int8 = OnnxEmbedder("all-minilm-l6-v2", quantize=True)
    assert int8.model_file().stat().st_size < onnx.model_file().stat().st_size / 3
    assert _cosines(int8.embed(TEXTS[:2]), want[:2]).min() > 0.8


def _fake_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


def test_export_is_atomic_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGTUNE_CACHE", str(tmp_path / "cache"))
    folder = _fake_folder(tmp_path)
    calls = []

    def broken(transformer, out):
        out.write_bytes(b"half a model")
        raise RuntimeError("export died")

    monkeypatch.setattr(models, "_export_transformer", broken)
    with pytest.raises(RuntimeError):
        models.export_onnx(folder, "fake")
    cached = models.onnx_cache_folder(folder, "fake")
    assert not (cached / "model.onnx").exists() and not list(cached.iterdir())  # nothing half-written stays

    def works(transformer, out):
        calls.append(out)
        out.write_bytes(b"onnx")

    monkeypatch.setattr(models, "_export_transformer", works)
    path = models.export_onnx(folder, "fake")
    assert path.read_bytes() == b"onnx" and path == models.export_onnx(folder, "fake") and len(calls) == 1
    # new weights (size/time of the folder's files) -> a new cache entry, exported again
    (folder / "model.safetensors").write_bytes(b"other weights")
    assert models.export_onnx(folder, "fake") != path and len(calls) == 2


def test_killed_export_leaves_no_cache(tmp_path):
    """A process killed in the middle of writing the export leaves no file that looks finished."""
    folder = _fake_folder(tmp_path)
    env = {**os.environ, "RAGTUNE_CACHE": str(tmp_path / "cache")}
    script = textwrap.dedent(
        f"""
        import time, pathlib
        from ragtune import models
        def slow(transformer, out):
            with open(out, "wb") as f:
                f.write(b"partial"); f.flush()
                print("writing", flush=True)
                time.sleep(60)
        models._export_transformer = slow
        models.export_onnx(pathlib.Path({str(folder)!r}), "fake")
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    cached = models.onnx_cache_folder(folder, "fake").relative_to(models.cache_dir())
    cached = tmp_path / "cache" / cached
    assert not (cached / "model.onnx").exists()
    assert [p.name for p in cached.iterdir()] == [f".model.onnx.{proc.pid}.tmp"]  # swept by a later export
    old = time.time() - 7200
    os.utime(cached / f".model.onnx.{proc.pid}.tmp", (old, old))
    code = "import pathlib; from ragtune import models\n"
    code += "models._export_transformer = lambda t, out: out.write_bytes(b'onnx')\n"
    code += f"print(models.export_onnx(pathlib.Path({str(folder)!r}), 'fake'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert Path(out.strip()).read_bytes() == b"onnx"
    assert [p.name for p in cached.iterdir()] == ["model.onnx"]


def test_falls_back_to_sentence_transformers_without_onnxruntime(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    monkeypatch.delenv("RAGTUNE_EMBEDDER_BACKEND", raising=False)
    emb = sentence_embedder("all-minilm-l6-v2")
    assert isinstance(emb, SentenceTransformerEmbedder) and emb.name == "all-minilm-l6-v2"
    with pytest.raises(ConfigError, match="onnxruntime"):
        sentence_embedder("all-minilm-l6-v2", backend="onnx")  # asked for explicitly: say why not
    monkeypatch.setenv("RAGTUNE_EMBEDDER_BACKEND", "onnx")
    with pytest.raises(ConfigError, match="onnxruntime"):
        sentence_embedder("all-minilm-l6-v2")


def test_fallback_embeds_with_sentence_transformers(monkeypatch):
    """Without onnxruntime, the registered embedder still embeds (the fallback stays usable)."""
    from ragtune.registry import make_embedder

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.delenv("RAGTUNE_EMBEDDER_BACKEND", raising=False)
    emb = make_embedder("all-minilm-l6-v2")
    assert isinstance(emb, SentenceTransformerEmbedder)
    vecs = emb.embed(["a", "b c"])
    assert vecs.shape == (2, 384) and np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_failed_export_falls_back(tmp_path, monkeypatch):
    folder = _tiny_bert(tmp_path / "tiny", {"pooling_mode_mean_tokens": True})
    monkeypatch.setenv("RAGTUNE_CACHE", str(tmp_path / "cache"))

    def no_torch(*a, **k):
        raise ImportError("No module named 'torch'")

    monkeypatch.setattr("ragtune.onnx_embedder.export_onnx", no_torch)
    emb = OnnxEmbedder(str(folder))
    want = SentenceTransformerEmbedder(str(folder)).embed(TEXTS)
    assert _cosines(emb.embed(TEXTS), want).min() > 0.9999
    with pytest.raises(ImportError):
        OnnxEmbedder(str(folder), fallback=False).embed(["x"])


def test_unsupported_modules_use_sentence_transformers(tmp_path):
    folder = _tiny_bert(tmp_path / "tiny", {"pooling_mode_mean_tokens": True}, dense=True)
    with pytest.raises(UnsupportedModel, match="Dense"):
        read_layout(folder)
    assert isinstance(sentence_embedder(str(folder)), SentenceTransformerEmbedder)
    with pytest.raises(UnsupportedModel):
        sentence_embedder(str(folder), backend="onnx")
    with pytest.raises(ConfigError, match="backend"):
        sentence_embedder(str(folder), backend="tensorflow")


def test_bundled_layout_reads_modules_json():
    layout = read_layout(models.resolve_embedder("all-minilm-l6-v2"))
    assert (layout.pooling, layout.max_seq_length, layout.dim, layout.do_lower_case) == (("mean",), 256, 384, False)


def test_providers(monkeypatch):
    import onnxruntime as ort

    monkeypatch.delenv("RAGTUNE_DEVICE", raising=False)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert providers(None) == providers("cuda") == ["CPUExecutionProvider"]  # no CUDA build: the CPU
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert providers(None) == providers("cpu") == ["CPUExecutionProvider"]  # the CPU unless asked
    assert providers("cuda:1")[0] == ("CUDAExecutionProvider", {"device_id": 1})
    monkeypatch.setenv("RAGTUNE_DEVICE", "auto")  # `ragtune --device auto`
    assert providers(None)[0][0] == "CUDAExecutionProvider"
    with pytest.raises(ConfigError, match="tpu"):
        providers("tpu")


@pytest.mark.e2e
def test_search_imports_neither_torch_nor_sentence_transformers(tmp_path, corpus_dir):
    from ragtune import Index

    index = Index.create(tmp_path / "ix")  # the bundled embedder, on ONNX: exports into the shared cache
    index.ingest([corpus_dir])
    code = textwrap.dedent(
        f"""
        import json, sys
        from ragtune.cli import main
        rc = main(["search", "Where is the Colosseum?", "--index", {str(tmp_path / "ix")!r}, "--json"])
        print(json.dumps({{"rc": rc, "heavy": sorted({{m.split(".")[0] for m in sys.modules}} & {set(HEAVY)!r})}}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "RAGTUNE_EMBEDDER_BACKEND"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    hits, tail = out.rsplit("\n{", 1)[0], json.loads("{" + out.rsplit("\n{", 1)[1])
    assert tail == {"rc": 0, "heavy": []}
    assert json.loads(hits)[0]["chunk"]["doc_id"].endswith("rome.txt")
