"""The HTTP service: `create_app(ServeConfig(index=...))` -> FastAPI app.

Routes: POST /v1/ask, POST /v1/chat/completions (OpenAI-compatible, streaming), GET /v1/models,
POST/GET /v1/documents, DELETE /v1/documents/{id}, GET /healthz, GET /metrics, GET / (chat page).

Every route but the open ones needs a key (see `auth.py`); each key reads only the documents of
its groups, inside the store's query, so answers, citations and listings never show the others.
"""

from __future__ import annotations

import asyncio
import collections
import math
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import ValidationError

from ..errors import ConfigError, InputError, RagtuneError
from ..index import Index
from ..rag import NOTHING_FOUND, Answer, Pipeline
from ..registry import make_generator
from ..stores.base import GROUPS, doc_groups
from .auth import (
    Guard,
    KeyRing,
    Principal,
    current_principal,
    group_names,
    security_headers,
    unprocessable,
    visible_only,
    with_access,
)
from .batching import Batcher
from .models import AskRequest, AskResponse, CitationOut, DocumentsIn
from .openai import chat_completion, chat_stream, question_from_messages

STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"chat.js": "text/javascript; charset=utf-8", "chat.css": "text/css; charset=utf-8"}
# The chat page and its files are open: the page asks for the key itself.
OPEN_PATHS = ("/healthz", "/", "/favicon.ico", *(f"/static/{name}" for name in STATIC_FILES))
JSON = ("application/json",)
CONTENT_TYPES = {"/v1/ask": JSON, "/v1/chat/completions": JSON, "/v1/documents": JSON + ("multipart/form-data",)}
# The chat page loads only its own script and style; nothing may frame it or load remote content.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# FastAPI's /docs and /redoc pages load Swagger UI / ReDoc from a CDN and start them inline.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src 'self' https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com "
    "https://cdn.redoc.ly; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
NO_RESULTS = "No documents matched the question, so there is nothing to answer from."
MAX_TOKENS = 4096  # the most `max_tokens` a chat request gets (larger asks are cut to this)
_ORIGIN = re.compile(r"https?://[^/\s?#]+")


@dataclass(frozen=True)
class ServeConfig:
    index: str
    adapter: str = ""  # a fine-tuned adapter: adds the `ft` and `rag+ft` strategies
    generator: str = ""  # registry name, HF folder or .gguf; "" = the default generator (or the adapter's base)
    api_key: str = ""  # when set (or RAGTUNE_API_KEY), every route but /healthz needs `Authorization: Bearer <key>`
    keys_file: str = ""  # keys.toml: one key per user, with the document groups it reads and whether it writes
    cors_origins: tuple[str, ...] = ()  # browser origins (https://host:port) allowed to call the API; () = none
    max_upload_bytes: int = 10 * 1024 * 1024  # POST /v1/documents, JSON or files
    max_body_bytes: int = 1024 * 1024  # any other request body (questions, chat)
    max_question_chars: int = 2000
    request_timeout_s: float = 120.0
    max_queue: int = 8  # requests allowed to wait for a model; beyond that: 503 at once
    k: int = 0  # chunks retrieved per question; 0 = the index's setting
    # Questions that arrive together with the same settings are answered in one batched model call:
    # an idle model waits this long for company; a busy one batches whatever arrived meanwhile.
    batch_window_ms: float = 5.0
    max_batch: int = 16  # the most questions answered in one call; 1 = no batching

    def __post_init__(self):
        object.__setattr__(self, "cors_origins", tuple(self.cors_origins))
        for name in ("max_upload_bytes", "max_body_bytes", "max_question_chars", "max_queue", "max_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ServeConfig.{name}={value!r}: must be a positive integer")
        if not self.request_timeout_s > 0:
            raise ConfigError(f"ServeConfig.request_timeout_s={self.request_timeout_s!r}: must be positive")
        if isinstance(self.batch_window_ms, bool) or not 0 <= self.batch_window_ms <= 10_000:
            raise ConfigError(f"ServeConfig.batch_window_ms={self.batch_window_ms!r}: must be 0 to 10000 (ms)")
        if self.k < 0:
            raise ConfigError(f"ServeConfig.k={self.k!r}: must be 0 (the index's setting) or more")
        for origin in self.cors_origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ConfigError(f"ServeConfig.cors_origins: {origin!r} is not an origin like https://host:port")


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
        # One batching worker per model: strategies that share a model share its batches' queue.
        window = cfg.batch_window_ms / 1000
        self.batchers = {id(g): Batcher(self.answer_batch, window, cfg.max_batch) for g in generators.values()}

    async def answer_batched(self, name: str, pipe: Pipeline, question: str, filters: dict | None) -> Answer:
        """The answer to one question, computed in a batch with the others that wait for the same
        model with the same settings (batching.py)."""
        question = pipe.check(question)  # a bad question fails alone, before it joins a batch
        key = (name, pipe.config)
        return await self.batchers[id(pipe.generator)].submit(key, pipe, question, filters)

    def answer_batch(self, pipe: Pipeline, questions: list[str], filters: list[dict | None]) -> list[Answer]:
        """Answers for `questions`, each retrieved with its own `filters` (its caller's access). A
        question whose search finds nothing the caller may read is not put to the model (the
        Pipeline abstains on it) and gets the server's "nothing matched" answer."""
        return [_served(a) for a in pipe.answer_batch(questions, filters)]

    def collect(self, pipe: Pipeline, question: str, filters: dict | None) -> Answer:
        """The streamed answer, whole (chat without `stream`)."""
        *_, final = pipe.stream(question, filters)
        return _served(final)

    @staticmethod
    def tuned(name: str) -> bool:
        """Whether a strategy answers with the fine-tuned model, which learnt from every document."""
        return "ft" in name.split("+")

    def strategies(self, who: Principal) -> list[str]:
        """The strategies `who` may use: a fine-tuned model may repeat any document it was trained
        on, so only keys that read every group get it."""
        return sorted(n for n in self.generators if who.reads_all or not self.tuned(n))

    def pipeline(
        self, name: str, who: Principal, k: int | None = None, max_tokens: int | None = None, mode: str | None = None
    ) -> Pipeline:
        """The strategy `name` as a Pipeline: `rag*` strategies read the index, the others answer closed book."""
        if name not in self.generators:
            raise unprocessable("strategy", f"unknown strategy {name!r}; available: {self.strategies(who)}")
        if name not in self.strategies(who):
            raise HTTPException(
                403,
                detail=f"strategy {name!r} answers with a model fine-tuned on the documents, which may hold groups "
                f"this key cannot read; only keys with every group may use it (available: {self.strategies(who)})",
            )
        config = replace(
            self.rag_config,
            k=k or self.rag_config.k,
            max_new_tokens=max_tokens or self.rag_config.max_new_tokens,
            mode=mode or self.rag_config.mode,
        )
        return Pipeline(self.index if name.startswith("rag") else None, self.generators[name], config)

    def nothing_found(self, pipe: Pipeline, question: str, filters: dict | None) -> Answer | None:
        """For a strategy that reads the index: an answer saying so when retrieval finds nothing the
        caller may read (rather than letting the model answer from nothing); else None."""
        question = pipe.check(question)
        if pipe.index is None:
            return None
        probe = replace(pipe.config, reranker="", candidates=1)
        if self.index.search(question, k=1, filters=filters, config=probe):
            return None
        return _nothing(question)


def _served(answer: Answer) -> Answer:
    """The Pipeline's answer as the server gives it: "nothing matched" where retrieval found nothing."""
    return _nothing(answer.question) if answer.abstain_reason == NOTHING_FOUND else answer


def _nothing(question: str) -> Answer:
    why = "retrieval found no document that matches the question and the filters and that this key may read"
    return Answer(question=question, text=NO_RESULTS, raw=NO_RESULTS, abstained=True, abstain_reason=why)


def answer_to_response(ans: Answer, strategy: str) -> AskResponse:
    return AskResponse(
        question=ans.question,
        answer=ans.text,
        abstained=ans.abstained,
        abstain_reason=ans.abstain_reason,
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
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

    keys = KeyRing.build(cfg.api_key or os.environ.get("RAGTUNE_API_KEY", ""), cfg.keys_file)
    svc = Service(cfg, generators)
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
    # Batched answering (batching.py): the mean batch is questions / batches.
    batchers = list(svc.batchers.values())
    Gauge("ragtune_batches", "batched model calls run for /v1/ask", registry=registry).set_function(
        lambda: sum(b.batches for b in batchers)
    )
    Gauge("ragtune_batched_questions", "questions answered in those calls", registry=registry).set_function(
        lambda: sum(b.answered for b in batchers)
    )

    # Middleware, innermost first: the guard (key, content type, body size), metrics (so refusals
    # count too), CORS when asked for (preflight requests carry no key), security headers on everything.
    app.add_middleware(
        Guard,
        keys=keys,
        open_paths=lambda path: path in OPEN_PATHS,
        content_types=CONTENT_TYPES,
        body_limit=lambda path: cfg.max_upload_bytes if path == "/v1/documents" else cfg.max_body_bytes,
    )

    @app.middleware("http")
    async def metrics_middleware(request: Request, call_next):
        t0 = time.perf_counter()
        response = await call_next(request)
        route = _route(request)
        requests.labels(route, request.method, str(response.status_code)).inc()
        latency.labels(route).observe(time.perf_counter() - t0)
        if response.status_code >= 500:
            errors.labels(route).inc()
        return response

    if cfg.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cfg.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(security_headers, csp=lambda path: DOCS_CSP if path.startswith(("/docs", "/redoc")) else CSP)

    def busy() -> HTTPException:
        return HTTPException(
            503,
            detail=f"busy: {cfg.max_queue} requests already waiting; try again shortly",
            headers={"Retry-After": "1"},
        )

    def too_slow() -> HTTPException:
        return HTTPException(
            504, detail=f"the answer took longer than the limit of {cfg.request_timeout_s:g}s (request_timeout_s)"
        )

    async def guarded(work, loc: str = "question"):
        """Await `work()` behind the admission gate and the time limit (503, 504, 422 on bad input)."""
        try:
            with svc.gate:
                return await asyncio.wait_for(work(), timeout=cfg.request_timeout_s)
        except Busy:
            raise busy() from None
        except TimeoutError:
            raise too_slow() from None
        except InputError as exc:
            raise unprocessable(loc, str(exc)) from None

    async def run_model(fn, *args, loc: str = "question"):
        """Run blocking model work in a thread, guarded."""
        return await guarded(lambda: asyncio.to_thread(fn, *args), loc)

    async def answer_batched(name: str, pipe: Pipeline, question: str, filters: dict | None, loc: str = "question"):
        """A question answered in a batch (server/batching.py), guarded; a question that times out
        before its batch starts is withdrawn."""
        return await guarded(lambda: svc.answer_batched(name, pipe, question, filters), loc)

    @app.get("/healthz", summary="liveness")
    def healthz():
        return {"status": "ok"}

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    def metrics():
        return PlainTextResponse(generate_latest(registry).decode(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/ask", response_model=AskResponse, summary="answer a question with cited sources")
    async def ask(req: AskRequest, who: Principal = Depends(current_principal)):
        pipe = svc.pipeline(req.strategy, who, k=req.k, mode=req.mode)
        ans = await answer_batched(req.strategy, pipe, req.question, who.scope(req.filters))
        return answer_to_response(visible_only(ans, who), req.strategy)

    @app.get("/v1/models", summary="the strategies this key may use, as OpenAI models")
    def models(who: Principal = Depends(current_principal)):
        return {
            "object": "list",
            "data": [{"id": n, "object": "model", "created": 0, "owned_by": "ragtune"} for n in svc.strategies(who)],
        }

    @app.post(
        "/v1/chat/completions", summary="OpenAI-compatible chat completions (model = strategy; sources in `sources`)"
    )
    async def chat(body: dict, who: Principal = Depends(current_principal)):
        question, model, stream, max_tokens = question_from_messages(body)
        pipe = svc.pipeline(model, who, max_tokens=min(max_tokens, MAX_TOKENS) if max_tokens else None)
        filters = who.scope(None)
        if not stream:
            # Per request, as the stream is: an OpenAI client's concurrency stays visible to the model.
            ans = await run_model(svc.collect, pipe, question, filters, loc="messages")
            return chat_completion(visible_only(ans, who), model)
        try:
            svc.gate.__enter__()
        except Busy:
            raise busy() from None
        release = _once(svc.gate.__exit__)
        try:
            found = await asyncio.wait_for(
                asyncio.to_thread(svc.nothing_found, pipe, question, filters), timeout=cfg.request_timeout_s
            )
        except BaseException as exc:
            release()
            if isinstance(exc, TimeoutError):
                raise too_slow() from None
            if isinstance(exc, InputError):
                raise unprocessable("messages", str(exc)) from None
            raise
        pieces = iter([found.text, found]) if found else pipe.stream(question, filters)

        def guarded():
            try:
                for p in pieces:
                    yield p if isinstance(p, str) else visible_only(p, who)
            finally:
                getattr(pieces, "close", lambda: None)()

        return StreamingResponse(
            chat_stream(guarded(), model, release=release, timeout_s=cfg.request_timeout_s),
            media_type="text/event-stream",
            background=_background(release),
        )

    @app.post("/v1/documents", summary="add or update documents (JSON or file upload); visible to the next question")
    async def add_documents(request: Request, who: Principal = Depends(current_principal)):
        from ..documents import Document, load_paths

        if not who.write:
            raise HTTPException(403, detail=f"key {who.name!r} may not write documents (write = false)")
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form()
            files = [f for f in form.getlist("files") if hasattr(f, "filename")]
            if not files:
                raise HTTPException(400, detail="multipart upload needs one or more `files` fields")
            groups = [g for v in form.getlist(GROUPS) if isinstance(v, str) for g in v.split(",")]
            groups = group_names(groups, GROUPS)
            tmp = Path(tempfile.mkdtemp(prefix="ragtune-upload-"))
            try:
                folder = tmp / "upload"
                folder.mkdir()
                for f in files:
                    name = Path(f.filename or "file").name
                    name = name if name not in ("", ".", "..") else "file"  # an id, never a path
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
            docs = [d if doc_groups(d.meta) or not groups else replace(d, meta={**d.meta, GROUPS: groups})
                    for d in loaded.documents]  # fmt: skip
        else:
            try:
                body = await request.json()
            except ValueError as exc:
                raise HTTPException(422, detail=f"the body is not valid JSON: {exc}"[:2000]) from None
            try:
                payload = DocumentsIn.model_validate(body)
            except ValidationError as exc:  # the same structured list as every other 422
                raise RequestValidationError(exc.errors(include_url=False)) from None
            docs = []
            for i, d in enumerate(payload.documents):
                loc = f"documents.{i}"
                meta = dict(d.meta)
                groups = group_names(meta.pop(GROUPS), f"{loc}.meta.groups") if GROUPS in meta else None
                if d.groups is not None:
                    given = group_names(d.groups, f"{loc}.groups")
                    if groups is not None and groups != given:
                        raise unprocessable(loc, "`groups` and `meta.groups` differ; give one")
                    groups = given
                docs.append(Document(d.id, d.text, d.title, "api", {**meta, GROUPS: groups} if groups else meta))
        repeated = sorted(i for i, n in collections.Counter(d.id for d in docs).items() if n > 1)
        if repeated:
            raise HTTPException(422, detail=f"document ids given more than once in one request: {repeated[:20]}")
        for d in docs:  # a file's own groups (a JSONL record's meta) must be names too
            group_names(d.meta.get(GROUPS) or [], f"{d.id}: meta.groups")

        def write():
            with svc.write_lock:
                existing = {} if who.reads_all else {d.id: d.groups for d in svc.index.documents()}
                return svc.index.ingest(with_access(docs, who, existing), atomic=True)  # all or nothing

        report = await asyncio.to_thread(write)
        return {
            **report.counts(),
            "added_ids": report.added,
            "updated_ids": report.updated,
            "chunks": report.chunks_written,
        }

    @app.get("/v1/documents", summary="the documents this key may read")
    def list_documents(who: Principal = Depends(current_principal)):
        docs = svc.index.documents(groups=who.listing_groups())
        if not who.reads_all:  # the names of groups the key is not in are not its business
            docs = [replace(d, groups=tuple(g for g in d.groups if g in who.groups)) for d in docs]
        return {"documents": [asdict(d) for d in docs]}

    @app.delete("/v1/documents/{doc_id:path}", summary="delete a document")
    async def delete_document(doc_id: str, who: Principal = Depends(current_principal)):
        if not who.write:
            raise HTTPException(403, detail=f"key {who.name!r} may not delete documents (write = false)")

        def delete():
            with svc.write_lock:
                if not who.reads_all and doc_id not in {d.id for d in svc.index.documents(who.listing_groups())}:
                    return 0  # a document this key cannot read does not exist for it
                return svc.index.delete([doc_id])

        n = await asyncio.to_thread(delete)
        if not n:
            raise HTTPException(404, detail=f"no document {doc_id!r}")
        return {"deleted": doc_id, "chunks": n}

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        if name not in STATIC_FILES:
            raise HTTPException(404, detail="not found")
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name])

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        # The errors echo the input, which may hold NaN or Infinity (Python's JSON parser takes them).
        return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)

    @app.exception_handler(RagtuneError)
    async def ragtune_error(request: Request, exc: RagtuneError):
        from ..remote import RemoteGeneratorError

        # The model behind an openai: generator failed: a bad gateway, not a bad request.
        return JSONResponse({"detail": str(exc)}, status_code=502 if isinstance(exc, RemoteGeneratorError) else 400)

    return app


def _once(fn):
    """`fn` that runs at most once, however often it is called (the gate's release)."""
    lock, done = threading.Lock(), []

    def call(*_):
        with lock:
            if done:
                return
            done.append(True)
        fn()

    return call


def _background(fn):
    from starlette.background import BackgroundTask

    return BackgroundTask(fn)  # releases the gate even when the stream never started (client gone)


def _json_safe(value):
    """`value` with the floats JSON cannot carry (NaN, Infinity) as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", None) or "unmatched"
