"""Open registries of embedders, generators and stores, fed by entry points.

A package adds models or stores without editing ragtune by declaring an entry point in the
group `ragtune.plugins` whose value is a function `register(registry)`; ragtune's own models
and stores are registered by the same hook (`ragtune.bundled:register`), as simonw/llm's
default plugins are::

    [project.entry-points."ragtune.plugins"]
    my_models = "my_package.ragtune_plugin:register"

    def register(reg):
        reg.add_generator("my-model", lambda name, adapter=None, **opts: MyGenerator(**opts),
                          description="my model")
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import DEFAULT_EMBEDDER, DEFAULT_GENERATOR
from .errors import ConfigError, ModelNotFoundError, RagtuneError

GROUP = "ragtune.plugins"


@dataclass(frozen=True)
class Entry:
    """One registered thing: its name, kind, factory, and which package provided it."""

    name: str
    kind: str  # embedder | generator | reranker | store
    factory: Any  # embedder/reranker: f(name, **opts); generator: f(name, adapter=None, **opts); store: f() -> backend
    description: str = ""
    source: str = ""  # the distribution that registered it ("ragtune" for the bundled ones)


class Registry:
    """Names -> factories. Local paths (a model folder, a .gguf) go to the `fallback` of their kind."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Entry]] = {"embedder": {}, "generator": {}, "reranker": {}, "store": {}}
        self.fallbacks: dict[str, Callable] = {}
        self._source = ""
        self.errors: list[str] = []  # plugins that failed to load, with why

    def _add(self, kind: str, name: str, factory: Any, description: str) -> None:
        self.entries[kind][name] = Entry(name, kind, factory, description, self._source)

    def add_embedder(self, name: str, factory: Callable, description: str = "") -> None:
        self._add("embedder", name, factory, description)

    def add_generator(self, name: str, factory: Callable, description: str = "") -> None:
        """A generator by `name`; a name ending in ':' is a scheme that takes every name starting with
        it (`openai:` takes `openai:http://host:8000/v1#model`), the factory getting the whole name."""
        self._add("generator", name, factory, description)

    def add_reranker(self, name: str, factory: Callable, description: str = "") -> None:
        """A reranker: an object with `score(query, texts) -> list[float]` (higher = more relevant)."""
        self._add("reranker", name, factory, description)

    def add_store(self, scheme: str, backend: Callable[[], Any], description: str = "") -> None:
        """`scheme` is what precedes ':' in an index URL (`pg`, `postgresql`, `s3`); '' is the default.
        `backend()` returns the StoreBackend (called on use, so heavy drivers import late)."""
        self._add("store", scheme, backend, description)

    def set_fallback(self, kind: str, factory: Callable) -> None:
        """What handles a name no entry knows (a local path); raises ModelNotFoundError if it cannot."""
        self.fallbacks[kind] = factory

    # -- lookups -----------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def lookup(self, kind: str, name: str) -> Entry | None:
        """The entry for `name`: registered under that name, else the longest scheme (a registered
        name ending in ':', matched case-insensitively) it starts with."""
        entry = self.entries[kind].get(name)
        if entry is not None:
            return entry
        schemes = [e for n, e in self.entries[kind].items() if len(n) > 2 and n.endswith(":")]  # not a drive letter
        matching = [e for e in schemes if name.lower().startswith(e.name.lower())]
        return max(matching, key=lambda e: len(e.name), default=None)

    def make(self, kind: str, name: str, **options) -> Any:
        entry = self.lookup(kind, name)
        if entry is not None:
            return entry.factory(name, **options)
        fallback = self.fallbacks.get(kind)
        if fallback is not None:
            return fallback(name, known=self.names(kind), **options)
        raise ModelNotFoundError(f"unknown {kind} {name!r}; registered: {self.names(kind)}")

    def store_backend(self, url: str):
        scheme = url_scheme(url)
        entry = self.entries["store"].get(scheme.lower()) or self.entries["store"].get("")
        if entry is None:
            raise ConfigError(f"no store backend for {url!r}; registered schemes: {self.names('store')}")
        return entry.factory()


def url_scheme(url: str) -> str:
    """An index URL's scheme ("pg", "s3", "postgresql"), or "" for a local path (a Windows drive included)."""
    return url.split(":", 1)[0] if ":" in url and not _windows_drive(url) else ""


def _windows_drive(url: str) -> bool:
    return len(url) > 1 and url[1] == ":" and url[0].isalpha() and (len(url) == 2 or url[2] in "\\/")


_REGISTRY: list[Registry] = []


def registry(reload: bool = False) -> Registry:
    """The registry, built once per process from every `ragtune.plugins` entry point."""
    if _REGISTRY and not reload:
        return _REGISTRY[0]
    reg = Registry()
    eps = list(importlib.metadata.entry_points(group=GROUP))
    if not any(ep.value.startswith("ragtune.bundled") for ep in eps):
        # Running from a source tree that was never installed: the bundled plugin still loads first.
        from . import bundled

        reg._source = "ragtune"
        bundled.register(reg)
    for ep in sorted(eps, key=lambda e: (not e.value.startswith("ragtune."), e.name)):
        reg._source = ep.dist.name if ep.dist is not None else ep.name
        try:
            ep.load()(reg)
        except Exception as exc:  # a broken plugin must not take ragtune down; `ragtune models` shows it
            reg.errors.append(f"{ep.name} ({ep.value}): {type(exc).__name__}: {exc}")
    reg._source = ""
    _REGISTRY[:] = [reg]
    return reg


def make_embedder(name: str | None = None, **options):
    """An embedder by registered name or local sentence-transformers folder (default: the bundled MiniLM)."""
    return registry().make("embedder", name or DEFAULT_EMBEDDER, **options)


def make_reranker(name: str, **options):
    """A reranker by registered name or local sentence-transformers CrossEncoder folder."""
    return registry().make("reranker", name, **options)


def make_generator(name: str | None = None, adapter=None, **options):
    """A generator by registered name, local model folder or .gguf (default: the bundled SmolLM2).

    `adapter` is a fine-tuning run folder (or its adapter/ or model/ folder); with no `name`,
    the run's own base model is used."""
    run = None
    if adapter:
        from .finetune.run import RunFolder

        run = RunFolder.open(adapter)
        name = name or run.base_model
    gen = registry().make("generator", name or DEFAULT_GENERATOR, adapter=run.weights if run else None, **options)
    if gen is None:
        raise RagtuneError(f"the factory for generator {name!r} returned nothing")
    return gen
