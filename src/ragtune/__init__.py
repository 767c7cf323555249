"""ragtune: RAG or fine-tuning, or both? Measure it on your own documents."""

from .config import ChunkConfig, RagConfig, Settings, load_settings
from .documents import Chunk, Document, Hit, QAExample, load_paths, load_squad
from .embedders import HashingEmbedder, SentenceTransformerEmbedder, make_embedder
from .errors import RagtuneError
from .generators import ScriptedGenerator, TransformersGenerator
from .ingest import IngestReport, ingest_documents, ingest_paths
from .rag import Answer, Citation, answer, answer_batch, answer_closed_book, open_retriever
from .retrieval import Retriever, reciprocal_rank_fusion
from .stores import LanceStore

__all__ = [
    "Answer", "Chunk", "ChunkConfig", "Citation", "Document", "HashingEmbedder", "Hit", "IngestReport",
    "LanceStore", "QAExample", "RagConfig", "RagtuneError", "Retriever", "ScriptedGenerator",
    "SentenceTransformerEmbedder", "Settings", "TransformersGenerator", "answer", "answer_batch",
    "answer_closed_book", "ingest_documents", "ingest_paths", "load_paths", "load_settings", "load_squad",
    "make_embedder", "open_retriever", "reciprocal_rank_fusion",
]
__version__ = "0.1.0"
