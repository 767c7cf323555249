"""An OpenAI-compatible endpoint as a generator (`openai:http://HOST:PORT/v1#MODEL`): against
ragtune's own `serve` on loopback, and against a handwritten fake server that records requests."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ragtune import Index, Pipeline, make_generator, registry
from ragtune.config import RagConfig
from ragtune.errors import ConfigError, ModelNotFoundError
from ragtune.prompts import closed_book_messages
from ragtune.remote import OpenAIGenerator, RemoteGeneratorError
from ragtune.server.app import ServeConfig, create_app
from ragtune.testing import ScriptedGenerator

KEY = "sk-test-0123456789"
KEY_VARS = ("RAGTUNE_OPENAI_API_KEY", "OPENAI_API_KEY", "MY_KEY_VAR")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def clean_keys(monkeypatch):
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)


# -- ragtune's own server, on loopback ----------------------------------------------------------


def reply(messages):
    """First sentence of source [1], cited, when the prompt has sources; else the question echoed."""
    user = messages[-1]["content"]
    if "<source" in user:
        return user.split(">", 1)[1].split("</source>", 1)[0].strip().split(".")[0] + " [1]"
    return "echo " + user.rsplit("Question:", 1)[1].strip()


class Counting(ScriptedGenerator):
    """Takes a while per answer and records how many answers were being written at once."""

    def __init__(self):
        super().__init__(reply, name="remote-scripted")
        self.busy = self.peak = 0
        self.lock = threading.Lock()

    def generate(self, prompts, max_new_tokens=48):
        with self.lock:
            self.busy += 1
            self.peak = max(self.peak, self.busy)
        time.sleep(0.15)
        with self.lock:
            self.busy -= 1
        return super().generate(prompts, max_new_tokens)


@pytest.fixture
def index(tmp_path, corpus_dir, small_chunking):
    Index.create(tmp_path / "ix", embedder="hashing-256", chunking=small_chunking).ingest([corpus_dir])
    return tmp_path / "ix"


@pytest.fixture
def served(index, monkeypatch):
    """(API root, the server's generator): `ragtune serve` with an API key, under uvicorn in a thread."""
    import uvicorn

    gen = Counting()
    app = create_app(ServeConfig(index=str(index), api_key=KEY), generators={"rag": gen, "base": gen})
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    monkeypatch.setenv("RAGTUNE_OPENAI_API_KEY", KEY)
    yield f"http://127.0.0.1:{port}/v1", gen
    server.should_exit = True
    thread.join(timeout=5)


def test_generate_batch_and_stream_through_ragtune_serve(served):
    url, server_gen = served
    gen = make_generator(f"openai:{url}#base")
    port = url.split(":")[2].split("/")[0]
    assert isinstance(gen, OpenAIGenerator) and gen.name == f"openai:127.0.0.1:{port}/base"
    assert gen.generate([closed_book_messages("Who wrote Hamlet?")], 32) == ["echo Who wrote Hamlet?"]

    questions = [f"question number {i}?" for i in range(8)]
    out = gen.generate([closed_book_messages(q) for q in questions], 32)
    assert out == [f"echo {q}" for q in questions]  # in order, one request per prompt
    assert 2 <= server_gen.peak <= 4  # concurrent, at most `concurrency` (4) at once

    pieces = list(gen.stream(closed_book_messages("Where is the Colosseum?"), 32))
    assert len(pieces) > 1 and "".join(pieces) == "echo Where is the Colosseum?"

    one_at_a_time = make_generator(f"openai:{url}#base?concurrency=1")
    server_gen.peak = 0
    assert one_at_a_time.generate([closed_book_messages(q) for q in questions[:3]], 8) == out[:3]
    assert server_gen.peak == 1


def test_pipeline_answers_with_a_remote_generator(served, index):
    url, _ = served
    gen = make_generator(f"openai:{url}#base")
    pipe = Pipeline(Index.open(index), gen)
    assert pipe.config.answer_mode == "auto" and not pipe.extracts  # no `score`: answers are written, not extracted
    ans = pipe.answer("When was the Eiffel Tower built?")
    assert not ans.abstained and ans.citations and ans.citations[0].doc_id == "corpus/paris.txt"
    assert ans.raw.endswith("[1]") and ans.tokens_in > 0 and ans.tokens_out > 0
    *pieces, final = Pipeline(Index.open(index), gen).stream("Where is the Colosseum?")
    assert "".join(pieces).strip() == final.raw and final.citations[0].doc_id == "corpus/rome.txt"
    closed = Pipeline(None, gen).answer("What is the capital of Spain?")
    assert closed.text == "echo What is the capital of Spain?" and not closed.citations
    with pytest.raises(ConfigError, match="cannot score spans"):
        Pipeline(Index.open(index), gen, RagConfig(answer_mode="extract"))


def test_clear_errors_that_name_the_url_and_never_the_key(served, monkeypatch):
    url, _ = served
    monkeypatch.setenv("RAGTUNE_OPENAI_API_KEY", "sk-wrong-987654")
    prompt = [closed_book_messages("Who wrote Hamlet?")]
    with pytest.raises(RemoteGeneratorError, match="401") as err:
        make_generator(f"openai:{url}#base").generate(prompt)
    assert "RAGTUNE_OPENAI_API_KEY" in str(err.value) and url in str(err.value)
    assert "sk-wrong-987654" not in str(err.value) and KEY not in str(err.value)

    monkeypatch.delenv("RAGTUNE_OPENAI_API_KEY")
    with pytest.raises(RemoteGeneratorError, match="no API key was sent"):
        make_generator(f"openai:{url}#base").generate(prompt)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)  # the second place a key is looked for
    assert make_generator(f"openai:{url}#base").generate(prompt) == ["echo Who wrote Hamlet?"]

    monkeypatch.setenv("MY_KEY_VAR", KEY)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-987654")
    assert make_generator(f"openai:{url}?key_env=MY_KEY_VAR#base").generate(prompt) == ["echo Who wrote Hamlet?"]
    assert make_generator(f"openai:{url}#base?key_env=MY_KEY_VAR").generate(prompt) == ["echo Who wrote Hamlet?"]
    monkeypatch.delenv("MY_KEY_VAR")
    with pytest.raises(ConfigError, match="MY_KEY_VAR"):
        make_generator(f"openai:{url}#base?key_env=MY_KEY_VAR")
    monkeypatch.setenv("RAGTUNE_OPENAI_API_KEY", KEY)

    with pytest.raises(RemoteGeneratorError, match="422.*unknown strategy 'nope'"):
        make_generator(f"openai:{url}#nope").generate(prompt)
    root = url.removesuffix("/v1")
    with pytest.raises(RemoteGeneratorError, match="404.*ends in /v1"):
        make_generator(f"openai:{root}#base").generate(prompt)

    dead = f"http://127.0.0.1:{_free_port()}/v1"
    t0 = time.perf_counter()
    with pytest.raises(RemoteGeneratorError, match="connection refused") as err:
        make_generator(f"openai:{dead}#base").generate(prompt * 3)
    assert f"{dead}/chat/completions" in str(err.value) and KEY not in str(err.value)
    assert time.perf_counter() - t0 < 5
    with pytest.raises(RemoteGeneratorError, match="connection refused"):
        list(make_generator(f"openai:{dead}#base").stream(prompt[0]))


def test_names_hold_no_secrets_and_no_adapter(tmp_path):
    for bad, secret in (
        ("openai:http://user:sk-inline-secret@127.0.0.1:9/v1#m", "sk-inline-secret"),
        ("openai:http://127.0.0.1:9/v1?api_key=sk-inline-secret#m", "sk-inline-secret"),
        ("openai:http://127.0.0.1:9/v1#m?token=sk-inline-secret", "sk-inline-secret"),
    ):
        with pytest.raises(ConfigError) as err:
            make_generator(bad)
        assert secret not in str(err.value)
    with pytest.raises(ConfigError, match="#MODEL"):
        make_generator("openai:http://127.0.0.1:9/v1")
    with pytest.raises(ConfigError, match="http"):
        make_generator("openai:127.0.0.1:9/v1#m")
    with pytest.raises(ConfigError, match="concurrency"):
        make_generator("openai:http://127.0.0.1:9/v1#m?concurrency=0")
    run = tmp_path / "run"
    run.mkdir()
    (run / "adapter_config.json").write_text("{}")
    with pytest.raises(ConfigError, match="adapters need local weights"):
        make_generator("openai:http://127.0.0.1:9/v1#m", adapter=run)
    # Constructing sends nothing (nothing listens on port 9); names are matched without case; options pass through.
    gen = make_generator("OpenAI:https://example.invalid/v1#org/model:7b", concurrency=2, timeout=5)
    assert gen.name == "openai:example.invalid/org/model:7b" and gen.concurrency == 2 and gen.timeout == 5
    assert registry().entries["generator"]["openai:"].source == "ragtune"
    with pytest.raises(ModelNotFoundError, match="openai:http://HOST:PORT/v1#MODEL"):
        make_generator("no-such-model")


# -- a handwritten fake server: the exact request, usage counts, failures ----------------------


class Fake(BaseHTTPRequestHandler):
    """Answers POST /v1/chat/completions from `Fake.plan`: a list of (status, body, headers)
    consumed in order (the last one repeats); records every request in `Fake.seen`."""

    plan: list = []
    seen: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Fake.seen.append((self.path, dict(self.headers), body))
        status, payload, headers = Fake.plan.pop(0) if len(Fake.plan) > 1 else Fake.plan[0]
        if callable(payload):
            status, payload = payload(self, body)
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", **headers}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except BrokenPipeError:  # the client gave up waiting (the time-out test)
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def fake():
    Fake.plan, Fake.seen = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Fake)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"openai:http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def completion(text, prompt_tokens=17, completion_tokens=3):
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": f"  {text} "}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": 20},
    }


def sse(*events):
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"


def test_request_shape_usage_counts_and_stream(fake, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    gen = make_generator(f"{fake}#my-org/my-model")
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
    Fake.plan = [(200, completion("Paris"), {})]
    assert gen.generate([prompt], max_new_tokens=7) == ["Paris"]
    path, headers, body = Fake.seen[-1]
    assert path == "/v1/chat/completions" and headers["Authorization"] == f"Bearer {KEY}"
    assert body == {"model": "my-org/my-model", "messages": prompt, "temperature": 0, "max_tokens": 7, "stream": False}
    rendered = gen.render(prompt)
    assert "Be brief." in rendered and "Capital of France?" in rendered
    assert gen.count_tokens([rendered, "Paris", "a text never sent, 36 characters..."]) == [17, 3, 9]

    chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}}]}
    pieces = [{**chunk, "choices": [{"index": 0, "delta": {"content": p}}]} for p in ("Lyon", " is", " big")]
    usage = {**chunk, "choices": [], "usage": {"prompt_tokens": 21, "completion_tokens": 4}}
    Fake.plan = [(200, sse(chunk, *pieces, usage), {"Content-Type": "text/event-stream"})]
    other = [{"role": "user", "content": "Describe Lyon."}]
    assert list(gen.stream(other, 5)) == ["Lyon", " is", " big"]
    body = Fake.seen[-1][2]
    assert body["stream"] is True and body["max_tokens"] == 5 and body["temperature"] == 0
    assert gen.count_tokens([gen.render(other), "Lyon is big"]) == [21, 4]


def test_failures_are_clear_and_busy_answers_are_retried(fake, monkeypatch):
    monkeypatch.setenv("RAGTUNE_OPENAI_API_KEY", KEY)
    prompt = [{"role": "user", "content": "hi"}]
    gen = make_generator(f"{fake}#m")

    Fake.plan = [(503, {"detail": "busy"}, {"Retry-After": "0"}), (200, completion("ok"), {})]
    assert gen.generate([prompt]) == ["ok"] and len(Fake.seen) == 2

    def echo_auth(handler, body):  # a careless server that repeats the key in its error
        return 500, {"error": {"message": f"boom with {handler.headers['Authorization']}"}}

    Fake.plan = [(500, echo_auth, {})]
    with pytest.raises(RemoteGeneratorError, match="HTTP 500, the server failed: boom") as err:
        gen.generate([prompt])
    assert KEY not in str(err.value) and "***" in str(err.value)

    Fake.plan = [(404, {"error": {"message": "The model `m` does not exist."}}, {})]
    with pytest.raises(RemoteGeneratorError, match="404: no model 'm'.*does not exist"):
        gen.generate([prompt])
    Fake.plan = [(200, {"choices": []}, {})]
    with pytest.raises(RemoteGeneratorError, match="malformed response"):
        gen.generate([prompt])
    Fake.plan = [(200, b"<html>not json</html>", {})]
    with pytest.raises(RemoteGeneratorError, match="malformed response .not JSON.: <html>"):
        gen.generate([prompt])

    def slow(handler, body):
        time.sleep(1.0)
        return 200, completion("late")

    Fake.plan = [(200, slow, {})]
    with pytest.raises(RemoteGeneratorError, match=r"no answer within 0.3 s"):
        make_generator(f"{fake}#m?timeout=0.3").generate([prompt])
