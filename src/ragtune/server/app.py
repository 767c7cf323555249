"""The HTTP service: `create_app(ServeConfig(index=...))` -> FastAPI app.

Routes: POST /v1/ask, POST /v1/chat/completions (OpenAI-compatible, streaming), GET /v1/models,
POST/GET /v1/documents, DELETE /v1/documents/{id}, GET /healthz, GET /metrics, GET / (chat page).
"""

from __future__ import annotations

import asyncio
import hmac
import os
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field

from ..errors import InputError, RagtuneError
from ..index import Index
from ..rag import Pipeline
from ..registry import make_generator
from .openai import chat_completion, chat_stream, question_from_messages

STATIC = Path(__file__).parent / "static"
OPEN_PATHS = ("/healthz", "/", "/favicon.ico")  # the chat page asks for the key itself


@dataclass(frozen=True)
class ServeConfig:
    index: str
    adapter: str = ""  # a fine-tuned adapter: adds the `ft` and `rag+ft` strategies
    generator: str = ""  # registry name, HF folder or .gguf; "" = the default generator (or the adapter's base)
    api_key: str = ""  # when set (or RAGTUNE_API_KEY), every route but /healthz needs `Authorization: Bearer <key>`
    max_upload_bytes: int = 10 * 1024 * 1024
    max_question_chars: int = 2000
    request_timeout_s: float = 120.0
    max_queue: int = 8  # requests allowed to wait for a model; beyond that: 503 at once
    k: int = 0  # chunks retrieved per question; 0 = the index's setting


class AskRequest(BaseModel):
    question: str = Field(min_length=1, description="the question")
    strategy: str = Field("rag", description="rag | base | ft | rag+ft (ft ones need --adapter)")
    k: int = Field(5, ge=1, le=50, description="chunks to retrieve")
    filters: dict[str, str] | None = Field(None, description="doc_id, title, source or a document meta key -> value")


class CitationOut(BaseModel):
    number: int
    chunk_id: str
    document_id: str
    title: str
    snippet: str
    by_model: bool


class AskResponse(BaseModel):
    question: str
    answer: str
    abstained: bool
    strategy: str
    citations: list[CitationOut]
    retrieved: list[dict[str, Any]]
    timings: dict[str, float]
    tokens_in: int
    tokens_out: int


class DocumentIn(BaseModel):
    id: str = Field(min_length=1)
    text: str = Field(min_length=1)
    title: str = ""
    meta: dict[str, Any] = Field(default_factory=dict)


class DocumentsIn(BaseModel):
    documents: list[DocumentIn] = Field(min_length=1)


class Busy(Exception):
    pass


class Gate:
    """Admission control: at most `limit` requests wait for the models; the rest get 503 now
    rather than a time-out later."""

    def __init__(self, limit: int):
        self.limit = limit
        self.waiting = 0
        self._lock = threading.Lock()

    def __enter__(self):
        with self._lock:
            if self.waiting >= self.limit:
                raise Busy()
            self.waiting += 1
        return self

    def __exit__(self, *exc):
        with self._lock:
            self.waiting -= 1


class Service:
    """What the routes share: the index and one generator per strategy."""

    def __init__(self, cfg: ServeConfig, generators: dict | None = None):
        from dataclasses import replace

        self.cfg = cfg
        self.index = Index.open(cfg.index)
        base = self.index.rag_config()
        self.rag_config = replace(base, k=cfg.k or base.k, max_question_chars=cfg.max_question_chars)
        self.write_lock = threading.Lock()
        self.gate = Gate(cfg.max_queue)
        if generators is None:
            gen = make_generator(cfg.generator or None)
            generators = {"base": gen, "rag": gen}
            if cfg.adapter:
                ft = make_generator(cfg.generator or None, adapter=cfg.adapter)
                generators.update({"ft": ft, "rag+ft": ft})
        self.generators = generators

    def pipeline(self, name: str, k: int | None = None, max_tokens: int | None = None) -> Pipeline:
        """The strategy `name` as a Pipeline: `rag*` strategies read the index, the others answer closed book."""
        from dataclasses import replace

        if name not in self.generators:
            raise HTTPException(
                422,
                detail=[
                    {
                        "loc": ["body", "strategy"],
                        "msg": f"unknown strategy {name!r}; available: {sorted(self.generators)}",
                        "type": "value_error",
                    }
                ],
            )
        config = replace(
            self.rag_config, k=k or self.rag_config.k, max_new_tokens=max_tokens or self.rag_config.max_new_tokens
        )
        return Pipeline(self.index if name.startswith("rag") else None, self.generators[name], config)


def answer_to_response(ans, strategy: str) -> AskResponse:
    return AskResponse(
        question=ans.question,
        answer=ans.text,
        abstained=ans.abstained,
        strategy=strategy,
        citations=[
            CitationOut(
                number=c.number,
                chunk_id=c.chunk_id,
                document_id=c.doc_id,
                title=c.title,
                snippet=c.snippet,
                by_model=c.by_model,
            )
            for c in ans.citations
        ],
        retrieved=[
            {"chunk_id": h.chunk.id, "document_id": h.chunk.doc_id, "title": h.chunk.title, "score": h.score}
            for h in ans.hits
        ],
        timings={k: round(v, 4) for k, v in asdict(ans.timings).items()},
        tokens_in=ans.tokens_in,
        tokens_out=ans.tokens_out,
    )


def create_app(cfg: ServeConfig, generators: dict | None = None) -> FastAPI:
    """Build the app; `generators` (name -> Generator) replaces the real models in tests."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    svc = Service(cfg, generators)
    api_key = cfg.api_key or os.environ.get("RAGTUNE_API_KEY", "")
    app = FastAPI(
        title="ragtune",
        version="0.1.0",
        description="Answers from your documents with cited sources (RAG, fine-tuned, or both).",
    )
    app.state.service = svc
    registry = CollectorRegistry()
    requests = Counter("ragtune_requests_total", "HTTP requests", ["route", "method", "status"], registry=registry)
    errors = Counter("ragtune_errors_total", "HTTP requests that ended in a 5xx", ["route"], registry=registry)
    latency = Histogram(
        "ragtune_request_seconds",
        "request latency",
        ["route"],
        registry=registry,
        buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
    )

    @app.middleware("http")
    async def auth_and_metrics(request: Request, call_next):
        t0 = time.perf_counter()
        path = request.url.path
        if api_key and path not in OPEN_PATHS:
            given = request.headers.get("authorization", "")
            token = given[7:] if given.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), api_key.encode()):
                response = JSONResponse(
                    {"detail": "missing or wrong API key (Authorization: Bearer <key>)"}, status_code=401
                )
                requests.labels(_route(request), request.method, "401").inc()
                return response
        response = await call_next(request)
        route = _route(request)
        requests.labels(route, request.method, str(response.status_code)).inc()
        latency.labels(route).observe(time.perf_counter() - t0)
        if response.status_code >= 500:
            errors.labels(route).inc()
        return response

    def busy() -> HTTPException:
        return HTTPException(
            503,
            detail=f"busy: {cfg.max_queue} requests already waiting; try again shortly",
            headers={"Retry-After": "1"},
        )

    async def run_model(fn, *args):
        """Run blocking model work in a thread, behind the admission gate and the time limit."""
        try:
            with svc.gate:
                return await asyncio.wait_for(asyncio.to_thread(fn, *args), timeout=cfg.request_timeout_s)
        except Busy:
            raise busy() from None
        except TimeoutError:
            raise HTTPException(504, detail=f"the answer took longer than {cfg.request_timeout_s:.0f}s") from None
        except InputError as exc:
            raise HTTPException(
                422, detail=[{"loc": ["body", "question"], "msg": str(exc), "type": "value_error"}]
            ) from None

    @app.get("/healthz", summary="liveness")
    def healthz():
        return {"status": "ok"}

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    def metrics():
        return PlainTextResponse(generate_latest(registry).decode(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/ask", response_model=AskResponse, summary="answer a question with cited sources")
    async def ask(req: AskRequest):
        pipe = svc.pipeline(req.strategy, k=req.k)
        ans = await run_model(pipe.answer, req.question, req.filters)
        return answer_to_response(ans, req.strategy)

    @app.get("/v1/models", summary="the strategies, as OpenAI models")
    def models():
        return {
            "object": "list",
            "data": [{"id": n, "object": "model", "created": 0, "owned_by": "ragtune"} for n in sorted(svc.generators)],
        }

    @app.post(
        "/v1/chat/completions", summary="OpenAI-compatible chat completions (model = strategy; sources in `sources`)"
    )
    async def chat(body: dict):
        question, model, stream, max_tokens = question_from_messages(body)
        pipe = svc.pipeline(model, max_tokens=max_tokens)
        if not stream:

            def collect():
                *_, final = pipe.stream(question)
                return final

            return chat_completion(await run_model(collect), model)
        try:
            svc.gate.__enter__()
        except Busy:
            raise busy() from None
        try:
            pipe.check(question)
        except InputError as exc:
            svc.gate.__exit__()
            raise HTTPException(
                422, detail=[{"loc": ["body", "messages"], "msg": str(exc), "type": "value_error"}]
            ) from None
        it = pipe.stream(question)
        return StreamingResponse(chat_stream(it, model, release=svc.gate.__exit__), media_type="text/event-stream")

    @app.post("/v1/documents", summary="add or update documents (JSON or file upload); visible to the next question")
    async def add_documents(request: Request):
        from ..documents import Document, load_paths

        ctype = request.headers.get("content-type", "")
        size = int(request.headers.get("content-length") or 0)
        if size > cfg.max_upload_bytes:
            raise HTTPException(413, detail=f"upload of {size} bytes exceeds the limit of {cfg.max_upload_bytes}")
        if ctype.startswith("multipart/form-data"):
            form = await request.form()
            files = [f for f in form.getlist("files") if hasattr(f, "filename")]
            if not files:
                raise HTTPException(400, detail="multipart upload needs one or more `files` fields")
            tmp = Path(tempfile.mkdtemp(prefix="ragtune-upload-"))
            try:
                folder = tmp / "upload"
                folder.mkdir()
                for f in files:
                    name = Path(f.filename or "file").name
                    data = await f.read()
                    if len(data) > cfg.max_upload_bytes:
                        raise HTTPException(
                            413, detail=f"{name}: {len(data)} bytes exceeds the limit of {cfg.max_upload_bytes}"
                        )
                    (folder / name).write_bytes(data)
                loaded = load_paths([folder])
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            if loaded.skipped:
                reasons = "; ".join(f"{Path(s.path).name}: {s.reason}" for s in loaded.skipped)
                raise HTTPException(400, detail=f"refused, nothing was stored: {reasons}")
            docs = loaded.documents
        else:
            try:
                payload = DocumentsIn.model_validate(await request.json())
            except ValueError as exc:
                raise HTTPException(422, detail=str(exc)[:2000]) from None
            docs = [Document(d.id, d.text, d.title, "api", d.meta) for d in payload.documents]

        def write():
            with svc.write_lock:
                return svc.index.ingest(docs)

        report = await asyncio.to_thread(write)
        return {
            **report.counts(),
            "added_ids": report.added,
            "updated_ids": report.updated,
            "chunks": report.chunks_written,
        }

    @app.get("/v1/documents", summary="the documents in the index")
    def list_documents():
        return {"documents": [asdict(d) for d in svc.index.documents()]}

    @app.delete("/v1/documents/{doc_id:path}", summary="delete a document")
    async def delete_document(doc_id: str):
        def delete():
            with svc.write_lock:
                return svc.index.delete([doc_id])

        n = await asyncio.to_thread(delete)
        if not n:
            raise HTTPException(404, detail=f"no document {doc_id!r}")
        return {"deleted": doc_id, "chunks": n}

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html")

    @app.exception_handler(RagtuneError)
    async def ragtune_error(request: Request, exc: RagtuneError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    return app


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", None) or "unmatched"
