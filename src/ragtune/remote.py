"""A generator that is any OpenAI-compatible chat endpoint: vLLM, llama.cpp's server, Ollama,
LM Studio, OpenAI itself, or another ragtune's `serve`.

Usage: name the endpoint where a generator name goes (`make_generator`, `--generator`,
`ServeConfig.generator`, an experiment's strategies)::

    openai:http://127.0.0.1:8000/v1#Qwen/Qwen2.5-1.5B-Instruct     # vLLM
    openai:http://127.0.0.1:11434/v1#llama3.2:1b                   # Ollama
    openai:https://api.openai.com/v1#gpt-4o-mini?key_env=MY_KEY     # key read from $MY_KEY

    ragtune ask --index my-index --generator "openai:http://127.0.0.1:8080/v1#local" "Who built it?"

The part before `#` is the API root (requests go to `<root>/chat/completions`); after it, the
model. The API key is read from the environment when a request is sent: from the variable
named by `key_env` when given (it must be set), else `RAGTUNE_OPENAI_API_KEY`, else
`OPENAI_API_KEY`; with none, no `Authorization` header is sent (local servers need none).
Keys never go in a name: names are logged and key calibrated gates, so a name holding a
password or an `api_key=` option is refused. Options, in the query or as keyword arguments
of `make_generator`: `key_env`, `concurrency` (requests in flight at once, default 4),
`timeout` (seconds per request, default 120).

Only the `base` and `rag` strategies can use such a generator: a fine-tuned adapter needs
local weights, and without log-probabilities `answer_mode="auto"` writes answers instead of
extracting spans (`"extract"` is refused by the Pipeline).
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from .errors import ConfigError, RagtuneError
from .prompts import Messages

SCHEME = "openai:"
KEY_ENVS = ("RAGTUNE_OPENAI_API_KEY", "OPENAI_API_KEY")
OPTIONS = ("key_env", "concurrency", "timeout")
CHARS_PER_TOKEN = 4  # the usual rule of thumb for English with BPE vocabularies; only used without `usage`
RETRY_STATUS = (429, 502, 503, 504)  # busy or restarting: worth another try after a pause
_COUNTS_KEPT = 4096


class RemoteGeneratorError(RagtuneError):
    """An OpenAI-compatible endpoint could not be reached or answered badly. The message names
    the URL, never the API key."""


def _text(content) -> str:
    """A message's text; content parts (`[{"type": "text", "text": ...}]`) joined."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def parse_name(name: str) -> tuple[str, str, dict[str, str]]:
    """`openai:<http(s) API root>#<model>[?options]` -> (API root, model, options). The query
    may stand before the `#` (as in a URL) or after the model. Errors quote no more of the name
    than scheme, host and port: the rest may hold a secret put there by mistake."""
    form = f"{SCHEME}http://HOST:PORT/v1#MODEL (or https)"
    if not name.lower().startswith(SCHEME):
        raise ConfigError(f"an OpenAI-compatible endpoint is named {form}")
    url, _, model = name[len(SCHEME) :].partition("#")
    model, _, tail = model.partition("?")
    parts = urllib.parse.urlsplit(url)
    try:
        parts.port  # noqa: B018 - a malformed port raises here
    except ValueError:
        parts = parts._replace(netloc="")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"generator names an endpoint as {form}; got no http(s) URL with a host")
    where = f"{SCHEME}{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    if parts.username or parts.password:
        raise ConfigError(
            f"generator {where}: credentials do not belong in a generator name (names are logged); "
            f"put the key in {KEY_ENVS[0]} or a variable named by ?key_env="
        )
    options: dict[str, str] = {}
    for query in (parts.query, tail):
        for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
            if key not in OPTIONS:
                # The value is not echoed: an unknown option may well be a key.
                raise ConfigError(
                    f"generator {where}: unknown option {key!r}; known: {', '.join(OPTIONS)} "
                    f"(API keys come from {KEY_ENVS[0]} or {KEY_ENVS[1]}, never the name)"
                )
            options[key] = value
    root = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    if not model.strip():
        raise ConfigError(f"generator {where}: name the model after '#': {SCHEME}{root}#MODEL")
    return root, model.strip(), options


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


class OpenAIGenerator:
    """Chat completions from an OpenAI-compatible server, greedy (temperature 0), one request
    per prompt with up to `concurrency` in flight.

    No tokenizer is at hand: `count_tokens` returns the server's `usage` counts for the prompts
    and replies this generator has seen (as `render`ed, and as returned), and otherwise an
    estimate of one token per 4 characters (about right for English; code and other
    languages use more). `render` is a readable rendering of the messages, not the template
    the server applies. No `score`: the remote model's log-probabilities are not read, so
    spans are not extracted and no likelihood reaches the answerability gate."""

    backend = "openai-compatible"
    device = "remote"

    def __init__(
        self,
        base_url: str,
        model: str,
        key_env: str = "",
        concurrency: int | str = 4,
        timeout: float | str = 120.0,
        retries: int = 2,
    ):
        parts = urllib.parse.urlsplit(base_url)
        if "@" in parts.netloc:
            raise ConfigError(f"generator at {parts.hostname}: credentials do not belong in the URL; use {KEY_ENVS[0]}")
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.model = model
        self.name = f"openai:{parts.netloc}/{model}"  # no scheme, path or secret: it keys calibrated gates
        self.adapter = None
        try:
            self.concurrency = int(concurrency)
            self.timeout = float(timeout)
        except ValueError:
            raise ConfigError(
                f"generator {self.name}: concurrency={concurrency!r} and timeout={timeout!r} must be numbers"
            ) from None
        if self.concurrency < 1:
            raise ConfigError(f"generator {self.name}: concurrency={self.concurrency} must be at least 1")
        if self.timeout <= 0:
            raise ConfigError(f"generator {self.name}: timeout={self.timeout} must be positive (seconds)")
        if key_env and key_env not in os.environ:
            raise ConfigError(f"generator {self.name}: key_env={key_env!r} but that environment variable is not set")
        self.key_env = key_env
        self.retries = retries
        # Loopback servers are reached directly even where an HTTP proxy is configured.
        handlers = [urllib.request.ProxyHandler({})] if _is_loopback(parts.hostname or "") else []
        self._opener = urllib.request.build_opener(*handlers)
        self._counts: OrderedDict[str, int] = OrderedDict()  # text -> tokens, as the server counted them
        self._lock = threading.Lock()

    @classmethod
    def from_name(cls, name: str, **options) -> OpenAIGenerator:
        """From `openai:http://HOST:PORT/v1#MODEL[?key_env=VAR&concurrency=N&timeout=S]`; keyword
        options override the query's."""
        root, model, query = parse_name(name)
        return cls(root, model, **{**query, **options})

    # -- the Generator protocol ------------------------------------------------------------------
    def render(self, prompt: Messages) -> str:
        """The messages as readable text (the server applies its own chat template, unknown here)."""
        turns = [f"[{m.get('role', 'user')}]\n{_text(m.get('content'))}" for m in prompt]
        return "\n\n".join([*turns, "[assistant]\n"])

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """The server's count where a reply's `usage` gave it, else ~1 token per 4 characters."""
        with self._lock:
            known = [self._counts.get(t) for t in texts]
        return [k if k is not None else -(-len(t) // CHARS_PER_TOKEN) for k, t in zip(known, texts)]

    def generate(self, prompts: Sequence[Messages], max_new_tokens: int = 48) -> list[str]:
        """One completion per prompt; up to `concurrency` requests at once, results in order."""
        if len(prompts) <= 1 or self.concurrency == 1:
            return [self._complete(p, max_new_tokens) for p in prompts]
        pool = ThreadPoolExecutor(min(self.concurrency, len(prompts)), thread_name_prefix="ragtune-openai")
        try:
            return list(pool.map(lambda p: self._complete(p, max_new_tokens), prompts))
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # after a failure, queued prompts are not sent

    def stream(self, prompt: Messages, max_new_tokens: int = 48) -> Iterator[str]:
        """The completion's text pieces as the server sends them (server-sent events)."""
        body = self._body(prompt, max_new_tokens, stream=True)
        pieces: list[str] = []
        usage = None
        with self._send(body) as resp, self._reading():
            for raw in resp:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue  # blank separators, comments, `event:` lines
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = self._json(data)
                if not isinstance(chunk, dict) or "error" in chunk:
                    raise self._error(f"the stream carried an error: {self._detail(chunk)}")
                usage = chunk.get("usage") or usage
                choices = chunk.get("choices") or []  # the usage chunk has none
                delta = choices[0].get("delta") if choices and isinstance(choices[0], dict) else None
                piece = _text(delta.get("content")) if isinstance(delta, dict) else ""
                if piece:
                    pieces.append(piece)
                    yield piece
        self._remember(prompt, "".join(pieces).strip(), usage)

    # -- HTTP ------------------------------------------------------------------------------------
    def _body(self, prompt: Messages, max_new_tokens: int, stream: bool = False) -> dict:
        body = {
            "model": self.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in prompt],
            "temperature": 0,
            "max_tokens": max_new_tokens,
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}  # the counts arrive in a last chunk
        return body

    def _complete(self, prompt: Messages, max_new_tokens: int) -> str:
        with self._send(self._body(prompt, max_new_tokens)) as resp, self._reading():
            raw = resp.read()
        reply = self._json(raw)
        try:
            text = _text(reply["choices"][0]["message"].get("content")).strip()
        except (KeyError, IndexError, TypeError, AttributeError):
            raise self._error(
                f"malformed response (expected choices[0].message.content): {self._scrub(raw[:300])}"
            ) from None
        self._remember(prompt, text, reply.get("usage"))
        return text

    def _api_key(self) -> tuple[str, str]:
        """(variable, key); ('', '') when no key is configured."""
        for var in (self.key_env,) if self.key_env else KEY_ENVS:
            if os.environ.get(var):
                return var, os.environ[var]
        return (self.key_env, "") if self.key_env else ("", "")

    def _send(self, body: dict):
        """POST `body`; the open response, or a RemoteGeneratorError saying what went wrong.
        Busy answers (429, 502-504) are tried again after a pause (the server's Retry-After, <= 10 s)."""
        var, key = self._api_key()
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode()
        attempt = 0
        while True:
            req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with self._reading():
                    return self._opener.open(req, timeout=self.timeout)
            except urllib.error.HTTPError as exc:
                with exc, self._reading():
                    detail = self._detail(self._json(exc.read(), strict=False))
                if exc.code not in RETRY_STATUS or attempt >= self.retries:
                    raise self._http_error(exc.code, detail, var) from None
                try:
                    pause = float(exc.headers.get("Retry-After") or 2**attempt)
                except ValueError:  # an HTTP date
                    pause = 2**attempt
                time.sleep(min(max(pause, 0.0), 10.0))
                attempt += 1

    @contextmanager
    def _reading(self):
        """Network failures while connecting or reading, as RemoteGeneratorErrors (HTTP errors pass)."""
        try:
            yield
        except urllib.error.HTTPError:
            raise
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                raise self._error(f"no answer within {self.timeout:g} s (raise it with ?timeout=)") from None
            if isinstance(reason, ConnectionRefusedError):
                raise self._error("connection refused: is the server running, on that host and port?") from None
            raise self._error(f"cannot reach the server or read its answer: {self._scrub(reason)}") from None

    def _http_error(self, code: int, detail: str, var: str) -> RemoteGeneratorError:
        if code in (401, 403):
            if var and os.environ.get(var):
                sent = f"the key from ${var} was refused"
            elif self.key_env:
                sent = f"no API key was sent: ${self.key_env} (named by key_env) is empty"
            else:
                sent = f"no API key was sent: set {KEY_ENVS[0]} (or {KEY_ENVS[1]}, or name a variable with ?key_env=)"
            return self._error(f"HTTP {code}, not authorised: {sent} ({detail})")
        if code == 404:
            return self._error(
                f"HTTP 404: no model {self.model!r} there, or the URL is not the API root (it usually ends in /v1) "
                f"({detail})"
            )
        if code >= 500:
            return self._error(f"HTTP {code}, the server failed: {detail}")
        return self._error(f"HTTP {code}: {detail}")

    def _error(self, what: str) -> RemoteGeneratorError:
        return RemoteGeneratorError(f"generator {self.name} at {self.url}: {what}")

    def _json(self, raw, strict: bool = True):
        try:
            return json.loads(raw)
        except (ValueError, TypeError):
            if not strict:
                return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            raise self._error(f"malformed response (not JSON): {self._scrub(raw[:300])}") from None

    def _detail(self, payload) -> str:
        """The server's own words about a failure: OpenAI's error.message, FastAPI's detail, or the text."""
        if isinstance(payload, dict):
            err = payload.get("error")
            payload = (err.get("message") if isinstance(err, dict) else err) or payload.get("detail") or payload
        text = payload if isinstance(payload, str) else json.dumps(payload)
        return self._scrub(text.strip()[:300]) or "no details"

    def _scrub(self, text) -> str:
        """`text` with the API key blanked out, should a server echo it."""
        text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        _, key = self._api_key()
        return text.replace(key, "***") if key else text

    def _remember(self, prompt: Messages, reply: str, usage) -> None:
        """Keep the server's token counts for the rendered prompt and the reply (for count_tokens)."""
        if not isinstance(usage, dict):
            return
        pairs = [(self.render(prompt), usage.get("prompt_tokens")), (reply, usage.get("completion_tokens"))]
        with self._lock:
            for text, n in pairs:
                if isinstance(n, int) and n >= 0:
                    self._counts[text] = n
                    self._counts.move_to_end(text)
            while len(self._counts) > _COUNTS_KEPT:
                self._counts.popitem(last=False)


def make(name: str, adapter=None, **options) -> OpenAIGenerator:
    """The registry's factory for `openai:` names."""
    gen = OpenAIGenerator.from_name(name, **options)
    if adapter is not None:
        raise ConfigError(
            f"generator {gen.name} runs on a remote server: fine-tuned adapters need local weights (use a local "
            "base model for the ft and rag+ft strategies, or serve the merged model and name that endpoint)"
        )
    return gen
