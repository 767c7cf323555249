"""Who may call the server and what a request must look like before a route reads it.

API keys live in a TOML file (`ragtune serve --keys keys.toml`), one table per key; the file
holds the SHA-256 of each bearer token, never the token itself:

    [keys.alice]
    sha256 = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
    groups = ["finance", "hr"]    # the document groups this key reads; ["*"] = all, [] = public only
    write = true                  # may add and delete documents (default false)

`printf %s "$TOKEN" | sha256sum` gives the digest. `RAGTUNE_API_KEY` (ServeConfig.api_key)
stays a single key with every group and write access. A document without groups is visible to
every key. With no key configured at all, the server is open: every caller reads and writes all.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from fastapi import HTTPException, Request

from ..errors import ConfigError
from ..stores.base import GROUPS, doc_groups

log = logging.getLogger("ragtune.server")

ALL_GROUPS = "*"
KEY_FIELDS = ("sha256", "groups", "write")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class Principal:
    """The caller behind a request: a key's name, the document groups it reads (None = all) and
    whether it may write documents."""

    name: str
    groups: frozenset[str] | None = None
    write: bool = False

    @property
    def reads_all(self) -> bool:
        return self.groups is None

    def sees(self, groups: Iterable[str]) -> bool:
        """Whether a document with these access groups is visible to this caller."""
        groups = set(groups)
        return self.groups is None or not groups or bool(groups & self.groups)

    def scope(self, filters: Mapping | None) -> dict | None:
        """`filters` plus this caller's access restriction. A caller's own `groups` filter (a list,
        or names separated by commas) can only narrow what the key reads, never widen it."""
        out: dict = {}
        asked: set[str] | None = None
        for key, value in (filters or {}).items():
            if key.removeprefix("meta.") != GROUPS:
                out[key] = value
                continue
            names = set(doc_groups({GROUPS: value.split(",") if isinstance(value, str) else value}))
            asked = names if asked is None else asked & names
        allowed = self.groups if asked is None else asked if self.groups is None else self.groups & asked
        if allowed is not None:
            out[GROUPS] = sorted(allowed)
        return out or None

    def listing_groups(self) -> list[str] | None:
        """The `groups` argument of Index.documents for this caller."""
        return None if self.groups is None else sorted(self.groups)


OPEN = Principal("anonymous", None, True)  # a server without keys: everyone reads and writes everything


class KeyRing:
    """Bearer tokens -> principals. Tokens are compared as SHA-256 digests, in constant time,
    against every key (no early exit), so timing tells nothing about which key nearly matched."""

    def __init__(self, entries: Iterable[tuple[bytes, Principal]]):
        self.entries = list(entries)

    @classmethod
    def build(cls, api_key: str = "", keys_file: str = "") -> KeyRing | None:
        """The keys of a server, or None for an open server (neither an API key nor a keys file)."""
        entries = load_keys(keys_file) if keys_file else []
        if api_key:
            entries.append((hashlib.sha256(api_key.encode()).digest(), Principal("api-key", None, True)))
        return cls(entries) if entries or keys_file else None

    def authenticate(self, token: str) -> Principal | None:
        if not token:
            return None
        presented = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found = None
        for digest, principal in self.entries:
            if hmac.compare_digest(presented, digest) and found is None:
                found = principal
        return found


def load_keys(path: str | Path) -> list[tuple[bytes, Principal]]:
    """Parse a keys.toml into (sha256 digest, Principal) pairs; ConfigError names the key and field."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"keys file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"keys file {str(path)!r} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"keys file {str(path)!r} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"keys"})
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {unknown}; keys go in [keys.NAME] tables")
    keys = data.get("keys")
    if not isinstance(keys, dict) or not keys:
        raise ConfigError(f"{path}: no keys; add one [keys.NAME] table with sha256, groups and write")
    entries: list[tuple[bytes, Principal]] = []
    seen: dict[bytes, str] = {}
    for name, spec in keys.items():
        where = f"{path}: [keys.{name}]"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where} must be a table with sha256, groups and write")
        extra = sorted(set(spec) - set(KEY_FIELDS))
        if extra:
            raise ConfigError(f"{where}: unknown field(s) {extra}; known: {list(KEY_FIELDS)}")
        digest = spec.get("sha256")
        # The value is never echoed: someone may have pasted the token itself here.
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            got = f"a {type(digest).__name__}" if not isinstance(digest, str) else f"{len(digest)} characters"
            raise ConfigError(f"{where} sha256: must be the 64 hex digits of the token's SHA-256 (got {got})")
        raw = bytes.fromhex(digest)
        if raw in seen:
            raise ConfigError(f"{where} sha256: the same token as [keys.{seen[raw]}]")
        seen[raw] = name
        if "groups" not in spec:
            raise ConfigError(f'{where} groups: missing; a list of group names, ["*"] for all, [] for public only')
        groups = _groups(spec["groups"], f"{where} groups")
        write = spec.get("write", False)
        if not isinstance(write, bool):
            raise ConfigError(f"{where} write: must be true or false, got {write!r}")
        if write and groups == frozenset():
            raise ConfigError(
                f"{where}: groups = [] with write = true would make everything it writes public; "
                "give it groups or write = false"
            )
        entries.append((raw, Principal(str(name), groups, write)))
    return entries


def _groups(value, where: str) -> frozenset[str] | None:
    if not isinstance(value, list) or not all(isinstance(g, str) and g.strip() for g in value):
        raise ConfigError(f"{where}: must be a list of non-empty group names, got {value!r}")
    if ALL_GROUPS in value:
        if value != [ALL_GROUPS]:
            raise ConfigError(f'{where}: "*" (all groups) stands alone, got {value!r}')
        return None
    bad = [g for g in value if "," in g]
    if bad:
        raise ConfigError(f"{where}: group names cannot contain commas: {bad}")
    return frozenset(g.strip() for g in value)


def current_principal(request: Request) -> Principal:
    """The caller, as the guard authenticated it (a FastAPI dependency)."""
    return request.state.principal


# -- access to documents and answers -----------------------------------------------------------


def unprocessable(loc: str, msg: str) -> HTTPException:
    return HTTPException(422, detail=[{"loc": ["body", loc], "msg": msg, "type": "value_error"}])


def visible_only(ans, who: Principal):
    """`ans` without hits or citations `who` may not read. Retrieval filters inside the store, so
    this never removes anything; if it does, the store broke its contract: say so loudly, withhold."""
    hidden = {h.chunk.doc_id for h in ans.hits if not who.sees(doc_groups(h.chunk.meta))}
    if not hidden:
        return ans
    log.error("retrieval returned %d document(s) outside the groups of key %r; answer withheld", len(hidden), who.name)
    return replace(
        ans,
        text="The answer was withheld: retrieval returned documents this key may not read.",
        raw="",
        citations=[c for c in ans.citations if c.doc_id not in hidden],
        hits=[h for h in ans.hits if h.chunk.doc_id not in hidden],
        sources=[],
        abstained=True,
        abstain_reason="access check failed",
    )


def group_names(value, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(g, str) for g in value):
        raise unprocessable(where, f"groups must be a list of group names, got {value!r}"[:300])
    return doc_groups({GROUPS: value})


def with_access(docs: list, who: Principal, existing: dict[str, tuple[str, ...]]) -> list:
    """The documents `who` asked to write, with their access groups settled, or 403: a key that does
    not read every group writes only within its groups, and what it writes without groups gets
    them, so nothing it writes becomes public; it cannot replace a document it cannot read."""
    out = []
    for d in docs:
        groups = doc_groups(d.meta)
        if who.groups is not None:
            outside = sorted(set(groups) - who.groups)
            if outside:
                mine = sorted(who.groups)
                raise HTTPException(403, detail=f"document {d.id!r}: groups {outside} are not among this key's {mine}")
            if d.id in existing and not who.sees(existing[d.id]):
                raise HTTPException(403, detail=f"document id {d.id!r} is not writable with this key; use another id")
            groups = groups or sorted(who.groups)
        meta = {k: v for k, v in d.meta.items() if k != GROUPS}
        out.append(replace(d, meta={**meta, GROUPS: groups} if groups else meta))
    return out


# -- the guard: authentication, content types and body limits, before any route runs ----------


def _reply(send, status: int, detail, headers: dict[str, str] | None = None):
    body = json.dumps({"detail": detail}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    head += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]

    async def go():
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": body})

    return go()


def _bearer(headers: dict[bytes, bytes]) -> str:
    given = headers.get(b"authorization", b"").decode("latin-1")
    return given[7:].strip() if given[:7].lower() == "bearer " else ""


class Guard:
    """ASGI middleware. In order, and before a route reads a byte of the body:
    401 without a valid key (except on `open_paths`), 415 for a POST whose Content-Type the route
    does not take, 413 for a body over the route's limit (counted as it arrives, so a chunked body
    without Content-Length is held to it too). Sets `request.state.principal`."""

    def __init__(
        self,
        app,
        keys: KeyRing | None,
        open_paths: Callable[[str], bool],
        content_types: Mapping[str, tuple[str, ...]],
        body_limit: Callable[[str], int],
    ):
        self.app = app
        self.keys = keys
        self.open_paths = open_paths
        self.content_types = content_types
        self.body_limit = body_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        headers = dict(scope["headers"])
        principal = OPEN if self.keys is None else self.keys.authenticate(_bearer(headers))
        if principal is None and not self.open_paths(path):
            return await _reply(
                send,
                401,
                "missing or wrong API key (Authorization: Bearer <key>)",
                {"www-authenticate": "Bearer"},
            )
        scope.setdefault("state", {})["principal"] = principal
        if method in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        accepted = self.content_types.get(path) if method == "POST" else None
        if accepted is not None:
            ctype = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
            if ctype not in accepted:
                return await _reply(
                    send,
                    415,
                    f"unsupported Content-Type {ctype or '(none)'!r} for {method} {path}; accepted: {list(accepted)}",
                    {"accept-post": ", ".join(accepted)},
                )
        limit = self.body_limit(path)
        too_big = f"request body exceeds the limit of {limit} bytes for {path}"
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                return await _reply(send, 400, "Content-Length is not a number")
            if n > limit:
                return await _reply(send, 413, f"{too_big} (Content-Length {n})")
        # Read the body here, up to the limit, then hand it to the app as if it came from the socket.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replay([], message, receive), send)  # the client left
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                return await _reply(send, 413, too_big)
            more = message.get("more_body", False)
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], None, receive), send)


def _replay(messages: list[dict], last: dict | None, receive):
    pending = list(messages) + ([last] if last else [])

    async def replayed():
        return pending.pop(0) if pending else await receive()

    return replayed


def security_headers(app, csp: Callable[[str], str]):
    """ASGI middleware adding security headers to every response, errors included; an exception
    that escapes the app still gets a JSON 500 with the headers (and is re-raised to be logged)."""

    async def middleware(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        path = scope["path"]
        extra = [
            (b"content-security-policy", csp(path).encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-opener-policy", b"same-origin"),
        ]
        if path.startswith("/v1/"):
            extra.append((b"cache-control", b"no-store"))  # answers differ per key: no shared caches
        started = False

        async def send_with_headers(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                names = {k.lower() for k, _ in message.get("headers", [])}
                message = {
                    **message,
                    "headers": list(message.get("headers", [])) + [h for h in extra if h[0] not in names],
                }
            await send(message)

        try:
            await app(scope, receive, send_with_headers)
        except Exception:
            if not started:
                await _reply(send_with_headers, 500, "internal server error")
            raise

    return middleware
