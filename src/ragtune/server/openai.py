"""OpenAI-compatible request parsing and responses (chat.completion and SSE chunks).

Sources travel in an extra top-level field `sources` (a list of citations): the official
client keeps unknown fields, e.g. `completion.model_extra["sources"]`."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator

from fastapi import HTTPException


def _bad(loc: str, msg: str) -> HTTPException:
    return HTTPException(422, detail=[{"loc": ["body", loc], "msg": msg, "type": "value_error"}])


def question_from_messages(body: dict) -> tuple[str, str, bool, int | None]:
    """(question, model, stream, max_tokens); the question is the last user message."""
    if not isinstance(body, dict):
        raise _bad("body", "expected a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "a non-empty list of {role, content} is required")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise _bad("messages", "no message with role 'user'")
    content = users[-1].get("content")
    if isinstance(content, list):  # content parts: keep the text ones
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        content = " ".join(p for p in parts if isinstance(p, str))
    if not isinstance(content, str) or not content.strip():
        raise _bad("messages", "the last user message has no text")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_completion_tokens")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise _bad("max_tokens", "must be a positive integer")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("model", "must be a string (a strategy: see GET /v1/models)")
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise _bad("stream", "must be true or false")
    return content, model or "rag", bool(stream), max_tokens


def sources_of(ans) -> list[dict]:
    return [
        {
            "number": c.number,
            "chunk_id": c.chunk_id,
            "document_id": c.doc_id,
            "title": c.title,
            "snippet": c.snippet,
            "by_model": c.by_model,
        }
        for c in ans.citations
    ]


def chat_completion(ans, model: str) -> dict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ans.raw if not ans.abstained else ans.text},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": ans.tokens_in,
            "completion_tokens": ans.tokens_out,
            "total_tokens": ans.tokens_in + ans.tokens_out,
        },
        "sources": sources_of(ans),
        "abstained": ans.abstained,
    }


def chat_stream(
    pieces: Iterator, model: str, release: Callable[[], None], timeout_s: float | None = None
) -> Iterator[str]:
    """Server-sent events in OpenAI's chunk format; the last chunk carries `sources`. Past
    `timeout_s` the stream ends with an `error` event (the status line has long been sent)."""
    cid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
    deadline = time.monotonic() + timeout_s if timeout_s else None

    def event(delta: dict, finish: str | None = None, **extra) -> str:
        chunk = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    try:
        yield event({"role": "assistant", "content": ""})
        for item in pieces:
            if isinstance(item, str):
                yield event({"content": item})
            else:
                yield event({}, "stop", sources=sources_of(item), abstained=item.abstained)
            if isinstance(item, str) and deadline is not None and time.monotonic() > deadline:
                message = f"the answer took longer than the limit of {timeout_s:g}s (request_timeout_s)"
                yield f"data: {json.dumps({'error': {'message': message, 'type': 'timeout', 'code': 504}})}\n\n"
                break
        yield "data: [DONE]\n\n"
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()  # stop the model at once when the client leaves or time runs out
        release()
