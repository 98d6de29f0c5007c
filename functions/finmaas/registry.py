"""The model registry: names, aliases and versions from a store, cards and onnxruntime
sessions cached in memory.

- Versions are immutable, so cards are cached for the life of the container.
- Aliases move (``production`` flips to a new version), so they are cached for
  ``alias_ttl`` seconds: a flip in the bucket takes effect without a redeploy.
- Sessions are loaded lazily and kept in a bounded LRU; an artifact whose sha256 does not
  match its card is refused, logged and never served.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .cards import NAME_RE, VERSION_RE, CardError, ModelCard
from .errors import IntegrityError, NotFound, ServiceUnavailable, StoreError
from .modelstore import CorruptObject, ModelStore, ObjectNotFound
from .nowait import NO_WAIT, WouldWait
from .rollout import AliasRoute, RouteError
from .runtime import LoadedModel, ServableModel, VersionRejected, open_version

log = logging.getLogger("finmaas.registry")
DEFAULT_ALIAS = "production"
# A version that failed to open is refused for this long before it is tried again: a
# broken version must not be re-hashed and re-opened, under the registry's lock, on
# every request for it.
REFUSAL_TTL = 10.0


class ModelRegistry:
    def __init__(
        self,
        store: ModelStore,
        *,
        alias_ttl: float = 30.0,
        session_cache_size: int = 8,
        ort_threads: int = 1,
        clock: Callable[[], float] = time.monotonic,
        on_load: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self.store = store
        self.alias_ttl = alias_ttl
        self.session_cache_size = session_cache_size
        self.ort_threads = ort_threads
        self._clock = clock
        self._on_load = on_load
        self._aliases: dict[str, tuple[float, dict[str, Any], dict[str, AliasRoute]]] = {}
        self._names: tuple[float, list[str]] | None = None
        self._versions: dict[str, tuple[float, list[str]]] = {}
        self._cards: dict[tuple[str, str], ModelCard] = {}
        self._models: OrderedDict[tuple[str, str], ServableModel] = OrderedDict()
        self._refused: dict[tuple[str, str], tuple[float, ServiceUnavailable]] = {}
        self._lock = threading.RLock()

    # -- names, aliases, versions ------------------------------------------------------
    def names(self) -> list[str]:
        now = self._clock()
        if self._names is None or now - self._names[0] > self.alias_ttl:
            names = [n for n in self._guard(self.store.list_dirs) if NAME_RE.match(n)]
            self._names = (now, names)
        return self._names[1]

    def aliases(self, name: str) -> dict[str, Any]:
        """The model's aliases as stored: a version, or a route (weights, shadow)."""
        return self._routes(name)[0]

    def _routes(self, name: str) -> tuple[dict[str, Any], dict[str, AliasRoute]]:
        if not NAME_RE.match(name):
            raise NotFound(f"no model named {name!r}", code="model_not_found")
        now = self._clock()
        hit = self._aliases.get(name)
        if hit and now - hit[0] <= self.alias_ttl:
            return hit[1], hit[2]
        if NO_WAIT.get():  # on the event loop: the store is read in a thread
            raise WouldWait(f"{name}'s aliases are not in memory")
        try:
            doc = self._guard(self.store.read_json, f"{name}/aliases.json")
        except NotFound:
            raise NotFound(f"no model named {name!r}", code="model_not_found") from None
        try:
            if not isinstance(doc, dict) or not all(isinstance(k, str) for k in doc):
                raise RouteError("aliases.json must be an object of aliases")
            routes = {alias: AliasRoute.parse(value) for alias, value in doc.items()}
        except RouteError as exc:
            log.error("malformed aliases", extra={"model": name, "error": str(exc)})
            raise ServiceUnavailable(f"{name}/aliases.json is malformed",
                                     code="store_corrupt") from None
        self._aliases[name] = (now, doc, routes)
        return doc, routes

    def versions(self, name: str) -> list[str]:
        self.aliases(name)  # 404 for unknown models
        now = self._clock()
        hit = self._versions.get(name)
        if hit and now - hit[0] <= self.alias_ttl:
            return hit[1]
        found = [v for v in self._guard(self.store.list_dirs, name) if VERSION_RE.match(v)]
        versions = sorted(found, key=lambda v: (len(v), v))
        self._versions[name] = (now, versions)
        return versions

    def resolve(self, name: str, ref: str | None = None, *, assign: str | None = None
                ) -> str:
        """A version or alias (default ``production``) to a concrete version string. An
        alias that splits traffic picks by ``assign`` (a stable key of the request), or
        gives its primary version when there is none (the card route, the CLI)."""
        routes = self._routes(name)[1]
        ref = ref or DEFAULT_ALIAS
        if ref in routes:
            return routes[ref].pick(assign)
        if not VERSION_RE.match(ref):
            raise NotFound(f"{name} has no version or alias {ref!r}", code="version_not_found")
        return ref  # an explicit version; existence is checked when its card is read

    def shadow(self, name: str, ref: str | None = None) -> str | None:
        """The shadow version of the alias a request named, if any (never of a version
        named explicitly: a caller who pins a version gets exactly that)."""
        route = self._routes(name)[1].get(ref or DEFAULT_ALIAS)
        return route.shadow if route is not None else None

    def in_memory(self, name: str, ref: str | None) -> bool:
        """Whether serving ``ref`` of ``name`` needs nothing from the store: its route is
        cached, and every version it may pick (and its shadow) is a loaded tabular model.
        The local server answers such small requests on its event loop."""
        hit = self._aliases.get(name)
        if hit is None or self._clock() - hit[0] > self.alias_ttl:
            return False
        route = hit[2].get(ref or DEFAULT_ALIAS)
        if route is None:
            return False
        versions = [v for v, _ in route.weights] + ([route.shadow] if route.shadow else [])
        # no lock: a thread loading a model holds it, and a dict read is atomic
        return all(isinstance(self._models.get((name, v)), LoadedModel) for v in versions)

    # -- cards and models --------------------------------------------------------------
    def card(self, name: str, version: str) -> ModelCard:
        key = (name, version)
        card = self._cards.get(key)
        if card is not None:
            return card
        if not NAME_RE.match(name) or not VERSION_RE.match(version):
            raise NotFound(f"{name} has no version {version!r}", code="version_not_found")
        try:
            doc = self._guard(self.store.read_json, f"{name}/{version}/card.json")
        except NotFound:
            self.aliases(name)  # unknown model beats unknown version
            raise NotFound(f"{name} has no version {version!r}",
                           code="version_not_found") from None
        try:
            card = ModelCard.parse(doc)
        except CardError as exc:
            log.error("invalid card", extra={"model": name, "version": version,
                                             "problems": exc.problems})
            raise ServiceUnavailable(f"{name} v{version} has an invalid model card",
                                     code="model_unavailable") from exc
        if (card.name, card.version) != key:
            raise ServiceUnavailable(f"{name}/{version}/card.json names another model",
                                     code="model_unavailable")
        self._cards[key] = card
        return card

    def model(self, name: str, version: str) -> ServableModel:
        key = (name, version)
        if NO_WAIT.get():  # on the event loop: a loaded model, or go to a thread
            return self._loaded_now(key)
        with self._lock:
            loaded = self._models.get(key)
            if loaded is not None:
                self._models.move_to_end(key)
                return loaded
            refused = self._refused.get(key)
            if refused is not None and self._clock() - refused[0] < REFUSAL_TTL:
                raise refused[1]  # not re-hashed and re-opened on every request
            card = self.card(name, version)
            started = time.perf_counter()
            try:
                loaded = self._load(card)
            except ServiceUnavailable as exc:
                if exc.code == "model_unavailable":  # the version itself; not a bad copy
                    self._refused[key] = (self._clock(), exc)  # (evicted) or an outage
                raise
            self._refused.pop(key, None)
            if self._on_load:
                self._on_load(name, version, (time.perf_counter() - started) * 1000)
            self._models[key] = loaded
            while len(self._models) > self.session_cache_size:
                self._models.popitem(last=False)
            return loaded

    def _loaded_now(self, key: tuple[str, str]) -> ServableModel:
        """A loaded model without waiting: WouldWait if it is not loaded or another
        thread holds the lock (it may be loading one, which takes a while)."""
        if not self._lock.acquire(blocking=False):
            raise WouldWait("the registry is busy loading a model")
        try:
            loaded = self._models.get(key)
            if loaded is None:
                raise WouldWait(f"{key[0]} v{key[1]} is not loaded")
            self._models.move_to_end(key)
            return loaded
        finally:
            self._lock.release()

    def model_of_alias(self, name: str, ref: str | None, version: str) -> ServableModel:
        """The model a request resolved (see ``_named``)."""
        return self._named(self.model, name, ref, version)

    def card_of_alias(self, name: str, ref: str | None, version: str) -> ModelCard:
        return self._named(self.card, name, ref, version)

    def _named(self, get: Callable[[str, str], Any], name: str, ref: str | None,
               version: str) -> Any:
        """A version its caller named that does not exist is the caller's 404; one an
        alias names that does not exist is the store's fault (503)."""
        try:
            return get(name, version)
        except NotFound as exc:
            if ref == version:
                raise
            log.error("alias names a missing version", extra={"model": name,
                                                                "version": version})
            raise ServiceUnavailable(f"{name}'s aliases name version {version}, which is "
                                     "not published", code="store_corrupt",
                                     retry_after=60) from exc

    def _load(self, card: ModelCard) -> ServableModel:
        key = f"{card.name}/{card.version}/{card.artifact_file}"
        try:
            path = self._guard(self.store.artifact_path, key, card.sha256)
            files = {f.file: self._guard(self.store.artifact_path,
                                         f"{card.name}/{card.version}/{f.file}", f.sha256)
                     for f in card.files}
        except NotFound as exc:  # a card without its graph or files: the store is at fault
            log.error("artifact missing", extra={"model": card.name, "version": card.version,
                                                 "key": key})
            raise ServiceUnavailable(f"{card.name} v{card.version} is not available",
                                     code="model_unavailable", retry_after=60) from exc
        try:
            return open_version(card, path, files=files, threads=self.ort_threads,
                                serving=True)
        except VersionRejected as exc:
            if exc.integrity:
                self.store.evict(key, card.sha256)
                for f in card.files:
                    self.store.evict(f"{card.name}/{card.version}/{f.file}", f.sha256)
                log.error("artifact sha256 mismatch: refusing to serve",
                          extra={"model": card.name, "version": card.version,
                                 "expected": card.sha256, "problems": exc.problems})
                raise ServiceUnavailable(
                    f"{card.name} v{card.version} failed its integrity check and is not served",
                    code="model_integrity_error", retry_after=60,
                ) from IntegrityError(key)
            log.error("model failed to load", extra={"model": card.name,
                                                      "version": card.version,
                                                      "problems": exc.problems})
            raise ServiceUnavailable(f"{card.name} v{card.version} could not be loaded",
                                     code="model_unavailable", retry_after=60) from exc

    def _guard(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Store faults become 503s; a missing object becomes NotFound for the caller.
        Store paths and bucket names stay in the logs, never in an answer."""
        try:
            return fn(*args)
        except ObjectNotFound as exc:
            raise NotFound("not found") from exc
        except CorruptObject as exc:  # a damaged store, not a passing fault
            log.error("store object unreadable", extra={"key": exc.key, "error": str(exc)})
            raise ServiceUnavailable(f"{exc.key} in the model store is damaged",
                                     code="store_corrupt", retry_after=60) from exc
        except StoreError as exc:
            log.warning("model store unavailable", extra={"error": str(exc)})
            raise ServiceUnavailable("the model store is unavailable; retry shortly",
                                     code="model_store_unavailable", retry_after=2) from exc

    def forget_moving_parts(self) -> None:
        """Drop what expires by time (names, aliases, versions, refusals): a restored
        SnapStart snapshot may be days old. Opened versions stay (their bytes do not
        change under a version)."""
        self._names = None
        self._aliases.clear()
        self._versions.clear()
        self._refused.clear()

    # -- catalogue ---------------------------------------------------------------------
    def catalogue(self) -> list[dict[str, Any]]:
        entries = []
        for name in self.names():
            try:
                aliases = self.aliases(name)
                card = self.card(name, self.resolve(name) if DEFAULT_ALIAS in aliases
                                 else self.versions(name)[-1])
            except (NotFound, ServiceUnavailable, IndexError):
                continue  # a half-published model is not listed
            entries.append({
                "name": name,
                "task": card.task,
                "description": card.description,
                "versions": self.versions(name),
                "aliases": aliases,
                "default_version": card.version,
                "pricing": {**card.pricing, "currency": "USD"},
            })
        return entries


def open_registry(settings: Any, *, s3_client: Any = None,
                  on_load: Callable[[str, str, float], None] | None = None) -> ModelRegistry:
    """The registry over the configured model store (a directory, or ``s3://``), as every
    entry point builds it: the API, the batch chunk function, the CLI."""
    from .modelstore import open_store

    store = open_store(settings.model_store, cache_dir=str(settings.cache_dir),
                       s3_client=s3_client)
    return ModelRegistry(store, alias_ttl=settings.alias_ttl_seconds,
                         session_cache_size=settings.session_cache_size,
                         ort_threads=settings.ort_threads, on_load=on_load)
