"""The HTTP API's request and response bodies (their field descriptions feed the OpenAPI page)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class AskRequest(BaseModel):
    question: str = Field(min_length=1, description="the question")
    strategy: str = Field("rag", description="rag | base | ft | rag+ft (ft ones need --adapter)")
    k: int = Field(5, ge=1, le=50, description="chunks to retrieve")
    mode: Literal["hybrid", "dense", "bm25"] | None = Field(None, description="retrieval mode; default: the index's")
    filters: dict[str, str] | None = Field(
        None,
        description="doc_id, title, source or a document meta key -> value; "
        "`groups`: names separated by commas, to read fewer of the key's groups",
    )


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
    abstain_reason: str = ""
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
    groups: list[str] | None = Field(
        None, description="access groups; none = the writing key's groups (public for a key that reads all)"
    )


class DocumentsIn(BaseModel):
    documents: list[DocumentIn] = Field(min_length=1)
