"""Hostile HTTP input: content types, body and question limits, time limits, security headers,
CORS, and random JSON bodies that must never make the server fail (5xx)."""

import json
import re
import time

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ragtune.errors import ConfigError
from ragtune.index import Index
from ragtune.server.app import NO_RESULTS, STATIC, ServeConfig, create_app
from ragtune.testing import ScriptedGenerator

from .test_server import KEY, echo_first_source


@pytest.fixture
def index(tmp_path, corpus_dir, embedder, small_chunking):
    Index.create(tmp_path / "ix", embedder=embedder, chunking=small_chunking).ingest([corpus_dir])
    return tmp_path / "ix"


def make_client(index, gen=None, **kw):
    gen = gen or ScriptedGenerator(echo_first_source)
    app = create_app(ServeConfig(index=str(index), **kw), generators={"rag": gen, "base": gen})
    return TestClient(app), gen


ASK = {"question": "When was the Eiffel Tower built?"}
CHAT = {"model": "rag", "messages": [{"role": "user", "content": "When was the Eiffel Tower built?"}]}


# -- content types -------------------------------------------------------------------------------


def test_wrong_content_type_is_415_naming_the_accepted_ones(index):
    client, gen = make_client(index)
    cases = [
        ("/v1/documents", "text/plain", b"hello", ["application/json", "multipart/form-data"]),
        ("/v1/documents", "application/x-www-form-urlencoded", b"id=1&text=x", ["application/json"]),
        ("/v1/ask", "text/plain", json.dumps(ASK).encode(), ["application/json"]),
        ("/v1/ask", "multipart/form-data; boundary=x", b"--x--", ["application/json"]),
        ("/v1/chat/completions", "application/x-www-form-urlencoded", json.dumps(CHAT).encode(), ["application/json"]),
        ("/v1/chat/completions", None, json.dumps(CHAT).encode(), ["application/json"]),
    ]
    for path, ctype, body, accepted in cases:
        r = client.post(path, content=body, headers={"Content-Type": ctype} if ctype else {})
        assert r.status_code == 415, (path, ctype, r.text)
        assert r.headers["content-type"] == "application/json"
        for name in accepted:
            assert name in r.json()["detail"], (path, r.json())
    assert not gen.seen
    # Parameters and case do not matter; the right type passes.
    r = client.post("/v1/ask", content=json.dumps(ASK), headers={"Content-Type": "Application/JSON; charset=utf-8"})
    assert r.status_code == 200


def test_content_type_is_checked_after_the_key(index):
    client, _ = make_client(index, api_key=KEY)
    assert client.post("/v1/ask", content=b"x", headers={"Content-Type": "text/plain"}).status_code == 401


# -- limits --------------------------------------------------------------------------------------


def test_every_body_is_held_to_its_limit(index):
    client, gen = make_client(index, max_body_bytes=500, max_upload_bytes=1000)
    big_question = {"question": "Eiffel " * 100}
    r = client.post("/v1/ask", json=big_question)
    assert r.status_code == 413 and "limit of 500 bytes" in r.json()["detail"]
    r = client.post("/v1/chat/completions", json={**CHAT, "padding": "x" * 600})
    assert r.status_code == 413 and "500" in r.json()["detail"]
    docs = {"documents": [{"id": "big", "text": "word " * 300}]}
    r = client.post("/v1/documents", json=docs)
    assert r.status_code == 413 and "limit of 1000 bytes" in r.json()["detail"]

    # A chunked body (no Content-Length) is counted as it arrives.
    def chunks():
        for _ in range(20):
            yield b"x" * 100

    r = client.post("/v1/ask", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    r = client.post("/v1/ask", content=b"{}", headers={"Content-Type": "application/json", "Content-Length": "zz"})
    assert r.status_code == 400
    assert not gen.seen
    assert "Gulbenkian" not in json.dumps(client.get("/v1/documents").json())
    # Below the limits all is well, chunked or not.
    small = json.dumps(ASK).encode()
    r = client.post("/v1/ask", content=iter([small[:10], small[10:]]), headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["citations"]


def test_question_length_is_limited_on_every_route(index):
    client, gen = make_client(index, max_question_chars=100)
    long = "When was the Eiffel Tower built? " * 10
    r = client.post("/v1/ask", json={"question": long})
    assert r.status_code == 422 and "the limit is 100" in r.json()["detail"][0]["msg"]
    for stream in (False, True):
        body = {**CHAT, "stream": stream, "messages": [{"role": "user", "content": long}]}
        r = client.post("/v1/chat/completions", json=body)
        detail = r.json()["detail"][0]
        assert r.status_code == 422 and "the limit is 100" in detail["msg"] and detail["loc"][-1] == "messages"
    assert not gen.seen


class Slow(ScriptedGenerator):
    def generate(self, prompts, max_new_tokens=48):
        time.sleep(0.6)
        return super().generate(prompts, max_new_tokens)


def test_generation_time_limit_is_504_with_a_message(index):
    client, _ = make_client(index, gen=Slow(echo_first_source), request_timeout_s=0.2)
    r = client.post("/v1/ask", json=ASK)
    assert r.status_code == 504 and "longer than the limit of 0.2s" in r.json()["detail"]
    r = client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 504 and "0.2s" in r.json()["detail"]
    # A stream has sent its status already: it ends with an error event instead.
    with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as r:
        assert r.status_code == 200
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["type"] == "timeout" and "0.2s" in error["message"]
    time.sleep(0.7)  # let the abandoned generations finish before the index folder goes


def test_no_results_is_said_not_silent(index):
    client, gen = make_client(index)
    r = client.post("/v1/ask", json={**ASK, "filters": {"doc_id": "no-such-document"}})
    ans = r.json()
    assert r.status_code == 200 and ans["answer"] == NO_RESULTS and ans["abstained"]
    assert "no document" in ans["abstain_reason"] and not ans["citations"] and not ans["retrieved"]
    r = client.post("/v1/ask", json={"question": "zyzzyva quokka", "mode": "bm25"})
    assert r.json()["answer"] == NO_RESULTS
    assert not gen.seen  # the model was not asked to answer from nothing
    # With nothing the caller may read, chat says so too, streamed or not.
    Index.open(index).delete(["corpus/paris.txt", "corpus/rome.txt", "corpus/berlin.md"])
    r = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == NO_RESULTS
    assert chunks[-1]["abstained"] and chunks[-1]["sources"] == []
    done = client.post("/v1/chat/completions", json=CHAT).json()
    assert done["choices"][0]["message"]["content"] == NO_RESULTS and done["abstained"]
    assert not gen.seen


def test_odd_upload_names_and_repeated_ids_are_refused_or_kept_inside(index):
    client, _ = make_client(index)
    for name in ("..", ".", "../../etc/passwd", "/abs/olute.txt"):
        r = client.post("/v1/documents", files=[("files", (name, b"Lisbon is in Portugal."))])
        assert r.status_code in (200, 400), (name, r.text)
        assert all("/" not in i.removeprefix("upload/") for i in r.json().get("added_ids", [])), r.json()
    r = client.post("/v1/documents", json={"documents": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]})
    assert r.status_code == 422 and "more than once" in r.json()["detail"]


def test_chat_fields_of_the_wrong_type_are_422_not_500(index):
    client, _ = make_client(index)
    for extra, field in (
        ({"max_tokens": True}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "5"}, "max_tokens"),
        ({"stream": "yes"}, "stream"),
        ({"model": ["rag"]}, "model"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages"),
        ({"messages": "hello"}, "messages"),
    ):
        r = client.post("/v1/chat/completions", json={**CHAT, **extra})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == field, (extra, r.text)
    r = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 10**12})
    assert r.status_code == 200  # cut to the server's ceiling


# -- headers, the page, CORS ---------------------------------------------------------------------


def test_security_headers_on_every_response(index):
    client, _ = make_client(index, api_key=KEY, max_body_bytes=100)
    auth = {"Authorization": f"Bearer {KEY}"}
    responses = [
        client.get("/"),
        client.get("/healthz"),
        client.get("/static/chat.js"),
        client.post("/v1/ask", json=ASK),  # 401
        client.post("/v1/ask", json=ASK, headers=auth),
        client.post("/v1/ask", json={"question": "x" * 200}, headers=auth),  # 413
        client.post("/v1/ask", content=b"x", headers={**auth, "Content-Type": "text/plain"}),  # 415
        client.get("/v1/nothing-here", headers=auth),  # 404
        client.post("/v1/ask", json={}, headers=auth),  # 422
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 401, 200, 413, 415, 404, 422]
    for r in responses:
        h = r.headers
        assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY"
        assert h["referrer-policy"] == "no-referrer"
        csp = h["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "img-src 'self';" in csp
        assert "unsafe-inline" not in csp and "http" not in csp  # no inline code, nothing remote
        assert "access-control-allow-origin" not in h
    assert responses[4].headers["cache-control"] == "no-store"  # answers are per key
    # FastAPI's API docs page loads Swagger UI from its CDN: allowed there, and only there.
    docs = make_client(index)[0].get("/docs")
    assert docs.status_code == 200 and "cdn.jsdelivr.net" in docs.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in docs.headers["content-security-policy"]


def test_chat_page_has_no_inline_code(index):
    client, _ = make_client(index)
    page = client.get("/").text
    assert "<style" not in page and not re.search(r"\son\w+=", page) and "style=" not in page
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    assert scripts and all('src="/static/' in attrs and not body.strip() for attrs, body in scripts)
    for name, ctype in (("chat.js", "text/javascript"), ("chat.css", "text/css")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(ctype)
        assert r.text == (STATIC / name).read_text()
        assert "http://" not in r.text and "https://" not in r.text  # nothing loads from elsewhere
    assert client.get("/static/index.html").status_code == 404
    assert client.get("/static/../app.py").status_code == 404


def test_cors_is_off_by_default_and_on_for_named_origins(index):
    client, _ = make_client(index, api_key=KEY)
    pre = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    r = client.options("/v1/ask", headers=pre)
    assert "access-control-allow-origin" not in r.headers
    r = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers

    client, _ = make_client(index, api_key=KEY, cors_origins=("https://app.example",))
    ok = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
          "Access-Control-Request-Headers": "authorization, content-type"}  # fmt: skip
    r = client.options("/v1/ask", headers=ok)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
    assert r.headers["x-frame-options"] == "DENY"
    r = client.options("/v1/ask", headers={**ok, "Origin": "https://evil.example"})
    assert r.headers.get("access-control-allow-origin") != "https://evil.example"
    r = client.post("/v1/ask", json=ASK, headers={"Origin": "https://app.example", "Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
    r = client.post("/v1/ask", json=ASK, headers={"Origin": "https://app.example"})
    assert r.status_code == 401  # CORS lets the browser ask; the key is still needed


def test_serve_config_is_validated():
    with pytest.raises(ConfigError, match="cors_origins"):
        ServeConfig(index="x", cors_origins=("app.example/path",))
    with pytest.raises(ConfigError, match="max_body_bytes"):
        ServeConfig(index="x", max_body_bytes=0)
    assert ServeConfig(index="x", cors_origins=["http://localhost:3000"]).cors_origins == ("http://localhost:3000",)


# -- random bodies never make a 500 ------------------------------------------------------------------

SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=40)
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
TEXT = st.text(max_size=60) | st.sampled_from(
    ["Eiffel Tower?", "'; DROP TABLE chunks; --", '"unclosed', "a:b AND (", "*"]
)
ASK_BODIES = JSON_VALUES | st.fixed_dictionaries(
    {"question": TEXT},
    optional={
        "strategy": st.sampled_from(["rag", "base", "ft", ""]) | JSON_VALUES,
        "k": st.integers(-3, 60) | JSON_VALUES,
        "mode": st.sampled_from(["dense", "bm25", "hybrid", "x"]) | JSON_VALUES,
        "filters": st.dictionaries(
            st.sampled_from(["doc_id", "title", "groups", "meta.groups", "lang"]) | TEXT, TEXT, max_size=3
        )
        | JSON_VALUES,  # fmt: skip
    },
)
CONTENT = TEXT | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": TEXT | JSON_VALUES}), max_size=2)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "user", "system", "assistant"]), "content": CONTENT}
) | st.dictionaries(st.sampled_from(["role", "content", "name"]), JSON_VALUES, max_size=3)
CHAT_BODIES = JSON_VALUES | st.fixed_dictionaries(
    {"messages": st.lists(MESSAGE, min_size=1, max_size=3) | JSON_VALUES},
    optional={
        "model": st.sampled_from(["rag", "base", "nope"]) | JSON_VALUES,
        "stream": st.booleans() | JSON_VALUES,
        "max_tokens": st.integers(-2, 10**6) | JSON_VALUES,
        "max_completion_tokens": JSON_VALUES,
    },
)
DOCUMENT = st.fixed_dictionaries(
    {"id": TEXT, "text": TEXT},
    optional={"title": TEXT | JSON_VALUES, "meta": JSON_VALUES, "groups": st.lists(TEXT, max_size=2) | JSON_VALUES},
)
DOCUMENT_BODIES = JSON_VALUES | st.fixed_dictionaries({"documents": st.lists(DOCUMENT, max_size=3) | JSON_VALUES})
# Derandomized: the same examples each run, so a failure reproduces; no example database in the tree.
FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _post(client, path, body):
    try:
        data = json.dumps(body)
    except ValueError:
        data = "{}"
    return client.post(path, content=data, headers={"Content-Type": "application/json"})


@FUZZ
@given(body=ASK_BODIES)
def test_random_ask_bodies_never_fail_the_server(fuzz_client, body):
    r = _post(fuzz_client, "/v1/ask", body)
    event(f"HTTP {r.status_code}")
    assert r.status_code < 500, (body, r.text)


@FUZZ
@given(body=CHAT_BODIES)
def test_random_chat_bodies_never_fail_the_server(fuzz_client, body):
    r = _post(fuzz_client, "/v1/chat/completions", body)
    event(f"HTTP {r.status_code}")
    assert r.status_code < 500, (body, r.text)


@FUZZ
@given(body=DOCUMENT_BODIES)
def test_random_document_bodies_never_fail_the_server(fuzz_client, body):
    r = _post(fuzz_client, "/v1/documents", body)
    event(f"HTTP {r.status_code}")
    assert r.status_code < 500, (body, r.text)
    if r.status_code == 200:
        assert fuzz_client.get("/v1/documents").status_code == 200


@pytest.fixture
def fuzz_client(index):
    gen = ScriptedGenerator(lambda messages: messages[-1]["content"][-200:])  # echoes odd text back
    app = create_app(ServeConfig(index=str(index), max_question_chars=50), generators={"rag": gen, "base": gen})
    with TestClient(app) as client:
        yield client
