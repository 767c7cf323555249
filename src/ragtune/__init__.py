"""ragtune: RAG or fine-tuning, or both? Measure it on your own documents.

from ragtune import Index, Pipeline, make_generator

index = Index.create("my-index")          # LanceDB; "pg:DIR" or "postgresql://..." for PostgreSQL
index.ingest(["docs/"])
pipe = Pipeline(index, make_generator())   # Pipeline(None, ...) answers closed book
print(pipe.answer("Who built the bridge?").text)
"""

from .config import ChunkConfig, RagConfig, Settings, load_settings
from .documents import Chunk, Document, Hit, QAExample
from .errors import ConfigError, IndexNotFoundError, ModelNotFoundError, RagtuneError
from .finetune.run import RunFolder
from .index import Index
from .ingest import IngestReport
from .rag import Answer, Citation, Pipeline
from .registry import DEFAULT_EMBEDDER, DEFAULT_GENERATOR, make_embedder, make_generator, registry
from .stores import open_store

__all__ = [
    "Answer",
    "Chunk",
    "ChunkConfig",
    "Citation",
    "ConfigError",
    "DEFAULT_EMBEDDER",
    "DEFAULT_GENERATOR",
    "Document",
    "Hit",
    "Index",
    "IndexNotFoundError",
    "IngestReport",
    "ModelNotFoundError",
    "Pipeline",
    "QAExample",
    "RagConfig",
    "RagtuneError",
    "RunFolder",
    "Settings",
    "load_settings",
    "make_embedder",
    "make_generator",
    "open_store",
    "registry",
]
__version__ = "0.1.0"
