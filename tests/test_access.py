"""Document access per API key: every route, retrieval mode and chat form shows a key only the
documents of its groups (and public ones); writes need `write`; uploads stay within the key's groups."""

import hashlib
import json
import re

import pytest
from fastapi.testclient import TestClient

from ragtune.documents import Document
from ragtune.errors import ConfigError
from ragtune.index import Index
from ragtune.server import auth
from ragtune.server.app import NO_RESULTS, ServeConfig, create_app
from ragtune.server.auth import KeyRing, Principal, load_keys
from ragtune.testing import ScriptedGenerator

# Each document carries a marker word no other document has: a leak shows as a marker.
DOCS = {
    "pub1": ("The zorblax project builds public bridges. Marker PUBLICALPHA.", []),
    "pub2": ("Zorblax visitors tour the bridges on Sundays. Marker PUBLICBETA.", []),
    "fin1": ("The zorblax budget sits in the vault ledger. Marker FINSECRETOKAPI.", ["finance"]),
    "fin2": ("Zorblax bonuses are paid from reserves. Marker FINSECRETLYNX.", ["finance"]),
    "hr1": ("Zorblax salaries are in the payroll sheet. Marker HRSECRETNARWHAL.", ["hr"]),
    "hr2": ("Zorblax staff reviews happen in June. Marker HRSECRETWALRUS.", ["hr"]),
    "shared": ("The zorblax plan is shared by two teams. Marker SHAREDIBEX.", ["finance", "hr"]),
}
MARKERS = {doc_id: re.search(r"[A-Z]{6,}", text).group() for doc_id, (text, _) in DOCS.items()}
TOKENS = {"alice": "alice-token-1", "bob": "bob-token-2", "carol": "carol-token-3", "admin": "admin-token-0"}
KEYS_TOML = f"""
[keys.alice]
sha256 = "{hashlib.sha256(TOKENS["alice"].encode()).hexdigest()}"
groups = ["finance"]
write = true

[keys.bob]
sha256 = "{hashlib.sha256(TOKENS["bob"].encode()).hexdigest().upper()}"
groups = ["hr"]

[keys.carol]
sha256 = "{hashlib.sha256(TOKENS["carol"].encode()).hexdigest()}"
groups = []
write = false
"""
VISIBLE = {
    "alice": {"pub1", "pub2", "fin1", "fin2", "shared"},
    "bob": {"pub1", "pub2", "hr1", "hr2", "shared"},
    "carol": {"pub1", "pub2"},
    "admin": set(DOCS),
}
QUESTION = "zorblax budget bonuses salaries staff plan bridges visitors marker"


def echo(messages):
    """Repeats every marker of its prompt and cites every source: a leak would show in the answer."""
    user = messages[-1]["content"]
    markers = re.findall(r"\b[A-Z]{6,}\b", user)
    cites = " ".join(f"[{n}]" for n in re.findall(r'<source id="(\d+)"', user))
    return " ".join(markers) + " zorblax " + cites if markers else "Zorblax is a project."


@pytest.fixture
def ix(tmp_path):
    index = Index.create(tmp_path / "ix", embedder="hashing")
    index.ingest([Document(d, text, d.title(), meta={"groups": g} if g else {}) for d, (text, g) in DOCS.items()])
    return tmp_path / "ix"


@pytest.fixture
def keys_file(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text(KEYS_TOML)
    return path


def serve(ix, keys_file, **kw):
    gen = ScriptedGenerator(echo)
    app = create_app(
        ServeConfig(index=str(ix), keys_file=str(keys_file), api_key=TOKENS["admin"], **kw),
        generators={"rag": gen, "base": gen, "ft": gen, "rag+ft": gen},
    )
    return TestClient(app), gen


def auth_header(who):
    return {"Authorization": f"Bearer {TOKENS[who]}"}


def leaks(who, payload) -> set[str]:
    """Markers of documents `who` may not read that appear anywhere in `payload`."""
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return {d for d, m in MARKERS.items() if m in text and d not in VISIBLE[who]}


def shown(payload) -> set[str]:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return {d for d, m in MARKERS.items() if m in text}


def chat(client, who, stream, content=QUESTION, **body):
    body = {"model": "rag", "stream": stream, "messages": [{"role": "user", "content": content}], **body}
    if not stream:
        r = client.post("/v1/chat/completions", json=body, headers=auth_header(who))
        assert r.status_code == 200, r.text
        return r.json()
    with client.stream("POST", "/v1/chat/completions", json=body, headers=auth_header(who)) as r:
        assert r.status_code == 200
        return "\n".join(r.iter_lines())


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_every_route_and_mode_shows_only_the_keys_groups(ix, keys_file, mode):
    Index.open(ix).set_retrieval(mode=mode, k=10)  # the index's own mode, for chat
    client, gen = serve(ix, keys_file)
    for who in TOKENS:
        seen_before = len(gen.seen)
        outputs = []
        for body in ({"mode": mode}, {}):  # the mode asked for, and the index's
            r = client.post("/v1/ask", json={"question": QUESTION, "k": 10, **body}, headers=auth_header(who))
            assert r.status_code == 200, r.text
            outputs.append(r.json())
            ans = r.json()
            assert {c["document_id"] for c in ans["citations"]} <= VISIBLE[who]
            assert {h["document_id"] for h in ans["retrieved"]} <= VISIBLE[who]
        outputs += [chat(client, who, stream=False), chat(client, who, stream=True)]
        for out in outputs:
            assert not leaks(who, out), (who, mode, leaks(who, out))
        # The model itself never read another group's text.
        assert not leaks(who, json.dumps(gen.seen[seen_before:])), (who, mode)
        # ...and the test can see a leak: everything the key may read does show up.
        assert shown(outputs[0]) == VISIBLE[who], (who, mode)
        assert shown(outputs[-1]) == VISIBLE[who], (who, mode)


def test_a_callers_groups_filter_only_narrows(ix, keys_file):
    client, _ = serve(ix, keys_file)

    def ask(who, **filters):
        r = client.post(
            "/v1/ask",
            json={"question": QUESTION, "k": 10, "mode": "bm25", "filters": filters},
            headers=auth_header(who),
        )
        assert r.status_code == 200, r.text
        return r.json()

    assert shown(ask("bob", groups="finance,hr")) == VISIBLE["bob"]  # finance is not bob's to ask for
    assert shown(ask("alice", groups="hr")) == {"pub1", "pub2"}  # hr ∩ finance = no group: public only
    assert shown(ask("carol", groups="finance")) == {"pub1", "pub2"}
    assert shown(ask("admin", groups="hr")) == {"pub1", "pub2", "hr1", "hr2", "shared"}
    for key in ("meta.groups", "groups"):
        assert not leaks("bob", ask("bob", **{key: "finance"}))
    assert shown(ask("alice", doc_id="hr1")) == set()  # an invisible document is as if absent
    assert ask("alice", doc_id="hr1")["answer"] == NO_RESULTS


def test_fine_tuned_strategies_need_every_group(ix, keys_file):
    client, _ = serve(ix, keys_file)
    models = lambda who: [m["id"] for m in client.get("/v1/models", headers=auth_header(who)).json()["data"]]  # noqa: E731
    assert models("admin") == ["base", "ft", "rag", "rag+ft"]
    assert models("alice") == models("bob") == ["base", "rag"]
    for strategy in ("ft", "rag+ft"):
        r = client.post("/v1/ask", json={"question": QUESTION, "strategy": strategy}, headers=auth_header("bob"))
        assert r.status_code == 403 and "fine-tuned" in r.json()["detail"]
        r = client.post(
            "/v1/chat/completions",
            json={"model": strategy, "messages": [{"role": "user", "content": QUESTION}]},
            headers=auth_header("alice"),
        )
        assert r.status_code == 403
    r = client.post("/v1/ask", json={"question": QUESTION, "strategy": "rag+ft", "k": 10}, headers=auth_header("admin"))
    assert r.status_code == 200 and shown(r.json()) == set(DOCS)
    r = client.post("/v1/ask", json={"question": QUESTION, "strategy": "base"}, headers=auth_header("bob"))
    assert r.status_code == 200 and not r.json()["citations"] and not leaks("bob", r.json())


def test_document_listing(ix, keys_file):
    client, _ = serve(ix, keys_file)
    for who in TOKENS:
        docs = client.get("/v1/documents", headers=auth_header(who)).json()["documents"]
        assert {d["id"] for d in docs} == VISIBLE[who], who
    alice = {
        d["id"]: d["groups"] for d in client.get("/v1/documents", headers=auth_header("alice")).json()["documents"]
    }
    assert alice["shared"] == ["finance"] and alice["pub1"] == []  # other groups' names are not shown
    admin = {
        d["id"]: d["groups"] for d in client.get("/v1/documents", headers=auth_header("admin")).json()["documents"]
    }
    assert admin["shared"] == ["finance", "hr"]


def test_delete_needs_write_and_visibility(ix, keys_file):
    client, _ = serve(ix, keys_file)
    r = client.delete("/v1/documents/pub1", headers=auth_header("bob"))
    assert r.status_code == 403 and "may not" in r.json()["detail"]
    r = client.delete("/v1/documents/hr1", headers=auth_header("bob"))
    assert r.status_code == 403  # read-only: refused before anything is looked up
    absent = client.delete("/v1/documents/never-was", headers=auth_header("alice"))
    hidden = client.delete("/v1/documents/hr1", headers=auth_header("alice"))
    assert hidden.status_code == absent.status_code == 404 and "hr1" in hidden.json()["detail"]
    ids = lambda who: {d["id"] for d in client.get("/v1/documents", headers=auth_header(who)).json()["documents"]}  # noqa: E731
    assert "hr1" in ids("admin")  # still there
    assert client.delete("/v1/documents/fin1", headers=auth_header("alice")).status_code == 200
    assert client.delete("/v1/documents/shared", headers=auth_header("alice")).status_code == 200
    assert client.delete("/v1/documents/hr1", headers=auth_header("admin")).status_code == 200
    assert ids("admin") == set(DOCS) - {"fin1", "shared", "hr1"}


def test_uploads_stay_within_the_keys_groups(ix, keys_file):
    client, _ = serve(ix, keys_file)
    groups = lambda: {  # noqa: E731
        d["id"]: d["groups"] for d in client.get("/v1/documents", headers=auth_header("admin")).json()["documents"]
    }

    def post(who, *docs, **kw):
        return client.post("/v1/documents", json={"documents": list(docs)}, headers=auth_header(who), **kw)

    doc = lambda i, **kw: {"id": i, "text": f"Zorblax note {i}.", **kw}  # noqa: E731
    for who in ("bob", "carol"):
        r = post(who, doc("x"))
        assert r.status_code == 403 and "may not write" in r.json()["detail"]
    assert post("alice", doc("a1")).status_code == 200
    assert post("alice", doc("a2", groups=["finance"])).status_code == 200
    assert post("alice", doc("a3", meta={"groups": "finance", "lang": "en"})).status_code == 200
    for bad in (doc("a4", groups=["hr"]), doc("a4", groups=["finance", "hr"]), doc("a4", meta={"groups": ["legal"]})):
        r = post("alice", bad)
        assert r.status_code == 403 and "not among this key's" in r.json()["detail"], bad
    # A document alice cannot read cannot be replaced by her either; one she reads she may.
    r = post("alice", doc("hr1"))
    assert r.status_code == 403 and "hr1" in r.json()["detail"]
    assert post("alice", doc("pub2")).status_code == 200
    # Uploaded files take the key's groups, or the ones named in the form, within the key's.
    r = client.post("/v1/documents", files=[("files", ("memo.txt", b"Zorblax memo."))], headers=auth_header("alice"))
    assert r.status_code == 200 and r.json()["added_ids"] == ["upload/memo.txt"]
    r = client.post(
        "/v1/documents",
        files=[("files", ("memo2.txt", b"Zorblax memo two."))],
        data={"groups": "hr"},
        headers=auth_header("alice"),
    )
    assert r.status_code == 403
    # The admin key reads every group: what it writes without groups is public.
    assert post("admin", doc("open")).status_code == 200
    assert post("admin", doc("legal", groups=["legal"])).status_code == 200
    r = client.post(
        "/v1/documents",
        files=[("files", ("hr.txt", b"Zorblax hr memo."))],
        data={"groups": "hr,finance"},
        headers=auth_header("admin"),
    )
    assert r.status_code == 200
    g = groups()
    assert g["a1"] == g["a2"] == g["a3"] == g["pub2"] == g["upload/memo.txt"] == ["finance"]
    assert g["open"] == [] and g["legal"] == ["legal"] and g["upload/hr.txt"] == ["finance", "hr"]
    assert g["hr1"] == ["hr"] and "a4" not in g and "upload/memo2.txt" not in g
    bob = {d["id"] for d in client.get("/v1/documents", headers=auth_header("bob")).json()["documents"]}
    assert "open" in bob and not {"a1", "a2", "a3", "pub2", "legal", "upload/memo.txt"} & bob
    # What alice wrote is answered to alice, not to bob.
    r = client.post("/v1/ask", json={"question": "zorblax note a1", "k": 10}, headers=auth_header("bob"))
    assert all(c["document_id"] != "a1" for c in r.json()["citations"])


def test_upload_group_fields_are_validated(ix, keys_file):
    client, _ = serve(ix, keys_file)
    post = lambda *docs: client.post(  # noqa: E731
        "/v1/documents", json={"documents": list(docs)}, headers=auth_header("admin")
    )
    r = post({"id": "x", "text": "t", "groups": ["a"], "meta": {"groups": ["b"]}})
    assert r.status_code == 422 and "differ" in json.dumps(r.json())
    for bad in ({"id": "x", "text": "t", "meta": {"groups": 5}}, {"id": "x", "text": "t", "meta": {"groups": [1]}}):
        r = post(bad)
        assert r.status_code == 422 and "groups" in json.dumps(r.json()), bad
    assert post({"id": "x", "text": "t", "groups": [1]}).status_code == 422


def test_missing_or_wrong_keys_are_refused_everywhere_but_the_open_routes(ix, keys_file):
    client, _ = serve(ix, keys_file)
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKENS['alice']}"}):
        for method, path in (("GET", "/v1/documents"), ("GET", "/v1/models"), ("POST", "/v1/ask"),
                             ("POST", "/v1/chat/completions"), ("DELETE", "/v1/documents/pub1"),
                             ("POST", "/v1/documents"), ("GET", "/metrics"), ("GET", "/no-such-route")):  # fmt: skip
            r = client.request(method, path, headers=headers, json={"question": "x"})
            assert r.status_code == 401, (method, path, headers)
            assert "nope" not in r.text and TOKENS["alice"] not in r.text  # tokens are never echoed
            assert r.headers["www-authenticate"] == "Bearer"
    for path in ("/healthz", "/", "/static/chat.js", "/static/chat.css"):
        assert client.get(path).status_code == 200, path
    assert client.get("/v1/models", headers=auth_header("bob")).status_code == 200


def test_env_api_key_is_an_all_groups_writer(ix, keys_file, monkeypatch):
    monkeypatch.setenv("RAGTUNE_API_KEY", "from-the-env")
    gen = ScriptedGenerator(echo)
    client = TestClient(create_app(ServeConfig(index=str(ix), keys_file=str(keys_file)), generators={"rag": gen}))
    env = {"Authorization": "Bearer from-the-env"}
    docs = client.get("/v1/documents", headers=env).json()["documents"]
    assert {d["id"] for d in docs} == set(DOCS)
    assert client.post("/v1/documents", json={"documents": [{"id": "e", "text": "x"}]}, headers=env).status_code == 200
    assert client.get("/v1/documents", headers=auth_header("alice")).status_code == 200


def test_without_keys_everyone_reads_and_writes_everything(ix):
    gen = ScriptedGenerator(echo)
    client = TestClient(create_app(ServeConfig(index=str(ix)), generators={"rag": gen}))
    assert {d["id"] for d in client.get("/v1/documents").json()["documents"]} == set(DOCS)
    r = client.post("/v1/ask", json={"question": QUESTION, "k": 10, "mode": "bm25"})
    assert shown(r.json()) == set(DOCS)
    assert client.delete("/v1/documents/hr1").status_code == 200


# -- the keys file -------------------------------------------------------------------------------


def test_keys_file_is_parsed_into_principals(keys_file):
    ring = KeyRing(load_keys(keys_file))
    assert ring.authenticate(TOKENS["alice"]) == Principal("alice", frozenset({"finance"}), True)
    assert ring.authenticate(TOKENS["bob"]) == Principal("bob", frozenset({"hr"}), False)  # upper-case hex is fine
    assert ring.authenticate(TOKENS["carol"]) == Principal("carol", frozenset(), False)
    assert ring.authenticate("") is None and ring.authenticate(TOKENS["alice"] + " ") is None
    assert KeyRing.build("", "") is None  # neither: an open server
    everyone = KeyRing.build("k", "").authenticate("k")
    assert everyone.groups is None and everyone.write


def test_tokens_are_compared_against_every_key_in_constant_time(keys_file, monkeypatch):
    ring = KeyRing(load_keys(keys_file))
    calls = []
    real = auth.hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: calls.append(len(a)) or real(a, b))
    for token in (TOKENS["alice"], "wrong", "x" * 1000):
        calls.clear()
        ring.authenticate(token)
        assert calls == [32, 32, 32]  # every key, no early exit, equal-length digests


def digest(token="t"):
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.mark.parametrize(
    "text, words",
    [
        ("[keys.a]\ngroups = []\n", ["[keys.a]", "sha256"]),
        ('[keys.a]\nsha256 = "my-secret-token"\ngroups = []\n', ["[keys.a]", "sha256", "15 characters"]),
        (f'[keys.a]\nsha256 = "{digest()}"\n', ["[keys.a]", "groups", "missing"]),
        (f'[keys.a]\nsha256 = "{digest()}"\ngroups = "finance"\n', ["[keys.a]", "groups", "list"]),
        (f'[keys.a]\nsha256 = "{digest()}"\ngroups = ["*", "hr"]\n', ["[keys.a]", "groups", "alone"]),
        (f'[keys.a]\nsha256 = "{digest()}"\ngroups = ["a,b"]\n', ["[keys.a]", "groups", "commas"]),
        (f'[keys.a]\nsha256 = "{digest()}"\ngroups = ["hr"]\nwrite = "yes"\n', ["[keys.a]", "write"]),
        (f'[keys.a]\nsha256 = "{digest()}"\ngroup = ["hr"]\n', ["[keys.a]", "unknown", "group"]),
        (f'[keys.a]\nsha256 = "{digest()}"\ngroups = []\nwrite = true\n', ["[keys.a]", "public"]),
        (
            f'[keys.a]\nsha256 = "{digest()}"\ngroups = ["x"]\n[keys.b]\nsha256 = "{digest()}"\ngroups = ["y"]\n',
            ["[keys.b]", "sha256", "[keys.a]"],
        ),  # fmt: skip
        ("[keys]\n", ["no keys"]),
        ("[users.a]\n", ["unknown", "users"]),
        ("[keys.a\n", ["not valid TOML"]),
        ("keys = 3\n", ["no keys"]),
        ("[keys]\na = 3\n", ["[keys.a]", "table"]),
    ],
)
def test_bad_keys_files_name_the_key_and_field(tmp_path, text, words):
    path = tmp_path / "keys.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_keys(path)
    for word in words:
        assert word in str(err.value), (word, str(err.value))
    assert "my-secret-token" not in str(err.value)  # a token pasted by mistake is not echoed


def test_a_bad_or_missing_keys_file_stops_the_server(ix, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        create_app(ServeConfig(index=str(ix), keys_file=str(tmp_path / "nope.toml")), generators={"rag": None})
    (tmp_path / "bad.toml").write_text("[keys.a]\ngroups = []\n")
    with pytest.raises(ConfigError, match="sha256"):
        create_app(ServeConfig(index=str(ix), keys_file=str(tmp_path / "bad.toml")), generators={"rag": None})
