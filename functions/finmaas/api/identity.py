"""Who is calling. In AWS, API Gateway has validated the key and put its id in
``requestContext.identity.apiKeyId``; the local gateway puts the same there. Client
headers are never trusted for identity."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..errors import Forbidden, ServiceUnavailable, Unauthorized
from ..nowait import NO_WAIT, WouldWait
from ..service import Caller
from ..tenants import ApiKey, Tenant, TenantStore


class TenantDirectory:
    """key id -> (key, tenant), cached briefly: a revoked key or a suspended tenant stops
    within the TTL (``MAAS_TENANT_CACHE_SECONDS``, 5 s; API Gateway stops it about as fast,
    since revocation and suspension also disable the gateway key)."""

    def __init__(self, store: TenantStore, ttl: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.ttl = ttl
        self._clock = clock
        self._cache: dict[str, tuple[float, ApiKey | None, Tenant | None]] = {}

    def lookup(self, key_id: str) -> tuple[ApiKey | None, Tenant | None]:
        now = self._clock()
        hit = self._cache.get(key_id)
        if hit and now - hit[0] <= self.ttl:
            return hit[1], hit[2]
        if NO_WAIT.get():  # on the event loop: the store is read in a thread
            raise WouldWait("the key is not in the directory's memory")
        try:
            key = self.store.get_key(key_id)
            tenant = self.store.get_tenant(key.tenant) if key else None
        except Exception as exc:
            raise ServiceUnavailable("tenant directory unavailable; retry shortly",
                                     code="tenants_unavailable") from exc
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key_id] = (now, key, tenant)
        return key, tenant

    def clear(self) -> None:
        """Forget every key and tenant (a restored snapshot starts from the store)."""
        self._cache.clear()


def request_context(scope: dict[str, Any]) -> dict[str, Any]:
    event = scope.get("aws.event") or {}
    return event.get("requestContext") or {}


class RequestIdHeader:
    """ASGI middleware: every response carries ``x-request-id`` (API Gateway's request
    id, or the local gateway's), so any answer, success or error, can be traced."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        request_id = request_context(scope).get("requestId") if scope["type"] == "http" else None
        if not isinstance(request_id, str) or not request_id:
            await self.app(scope, receive, send)
            return
        header = (b"x-request-id", request_id.encode("latin-1", "replace"))

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    message = {**message, "headers": [*headers, header]}
            await send(message)

        await self.app(scope, receive, send_with_id)


def resolve_caller(scope: dict[str, Any], directory: TenantDirectory) -> Caller:
    ctx = request_context(scope)
    key_id = (ctx.get("identity") or {}).get("apiKeyId")
    request_id = ctx.get("requestId")
    if not key_id or not request_id:
        raise Unauthorized("an API key is required: send it in the x-api-key header",
                           code="missing_api_key")
    key, tenant = directory.lookup(key_id)
    if key is None or not key.active or tenant is None:
        raise Unauthorized("this API key is not valid", code="invalid_api_key")
    if not tenant.active:
        raise Forbidden(f"tenant {tenant.name} is {tenant.status}", code="tenant_suspended")
    return Caller(tenant=tenant.name, plan=tenant.plan, key_id=key_id, request_id=request_id)
