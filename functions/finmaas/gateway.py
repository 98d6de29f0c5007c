"""The local stand-in for API Gateway, as ASGI middleware in front of the app.

It does what API Gateway does in AWS, in the same order: checks ``x-api-key`` (against
sha256 hashes in the embedded store), applies the key's usage plan (token-bucket rate
limit with burst, then the monthly request quota) and hands the app the request context
API Gateway would (``requestContext.requestId`` and ``identity.apiKeyId``).

A suspended tenant's keys are refused (403) before any limit is counted, read from the
store on every request; in AWS, suspension disables the tenant's gateway keys instead.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool

from .errors import V2_ERROR_CODE_HEADER, ApiError, is_v2_path, v2_error_body
from .nowait import WOULD_WAIT, WouldWait, try_now
from .plans import Plan, get_plan
from .tenants import TenantStore
from .tenants.base import hash_key

Rejection = tuple[int, str, str, dict[str, str]]  # status, code, message, headers
OPEN_PATHS = frozenset({"/health", "/docs", "/redoc", "/openapi.json",
                        "/docs/oauth2-redirect", "/console",
                        "/v2", "/v2/health/live", "/v2/health/ready"})
OPEN_PREFIXES = ("/console/",)  # the console's pages: open, as in AWS; their data is not


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


@dataclass
class TokenBucket:
    rate: float
    burst: int
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """0 if a request may pass now, else the seconds until one may."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


def _seconds_to_next_month(now: datetime) -> int:
    nxt = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    return max(1, int((nxt - now).total_seconds()))


class LocalGateway:
    def __init__(self, app: Any, tenants: TenantStore, *,
                 quota_seed: Callable[[str, str], int] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wallclock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.app = app
        self.tenants = tenants
        self.quota_seed = quota_seed or (lambda _key, _month: 0)
        self.clock = clock
        self.wallclock = wallclock
        self.buckets: dict[str, TokenBucket] = {}
        self.quota_used: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    async def _reject(self, send: Any, status: int, code: str, message: str,
                      headers: dict[str, str] | None = None, *, v2: bool = False) -> None:
        error = ApiError(message, code=code, status=status)
        if v2:  # the Open Inference Protocol's error body, FinMaaS's code in a header
            body = orjson.dumps(v2_error_body(message))
            headers = {**(headers or {}), V2_ERROR_CODE_HEADER: code}
        else:
            body = orjson.dumps(error.body())
        raw = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
        raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    def _identify(self, key: str) -> tuple[str | None, Plan | None, Rejection | None]:
        """The key's id and its tenant's plan, or why the request is turned away. Reads
        the key store, which never waits on a writer (WAL: readers see the last commit):
        on the event loop, under NO_WAIT, unless the store is busy (WouldWait)."""
        try:
            record = self.tenants.find_key_by_hash(hash_key(key))
            tenant = self.tenants.get_tenant(record.tenant) if record else None
        except WouldWait:
            raise  # on the loop, the store busy: the caller reads it from a thread
        except Exception:  # the key store is down: a retryable fault, not a 500
            return None, None, (503, "tenants_unavailable",
                                "the key store is unavailable; retry shortly",
                                {"Retry-After": "1"})
        if record is None or not record.active or tenant is None:
            return None, None, (401, "invalid_api_key", "this API key is not valid", {})
        if not tenant.active:  # read on every request: a suspension applies at once
            return None, None, (403, "tenant_suspended",
                                f"tenant {tenant.name} is {tenant.status}", {})
        return record.key_id, get_plan(tenant.plan), None

    def _count(self, key_id: str, month: str) -> Rejection | None:
        """Read the key's requests this month from the usage store, once per key and
        month, without holding the gateway's lock (the read may wait on a writer: it runs
        in a worker thread). A 503 if the store cannot be read."""
        try:
            count = self.quota_seed(key_id, month)
        except Exception:  # the usage store is down or locked: retry, not a 500
            return (503, "usage_unavailable", "the usage store is unavailable; retry shortly",
                    {"Retry-After": "1"})
        with self._lock:
            self.quota_used.setdefault((key_id, month), count)
        return None

    def _admit(self, key_id: str, plan: Plan, month: str) -> Rejection | None:
        """None if the request may pass, else the rejection: 429 with ``Retry-After`` and
        the IETF draft's ``RateLimit-*`` headers. Memory only (a quota's count for
        ``month`` is read first, by ``_count``), so it runs on the event loop."""
        now = self.clock()
        with self._lock:
            bucket = self.buckets.get(key_id)
            if bucket is None or (bucket.rate, bucket.burst) != (plan.rate_limit_rps, plan.burst):
                bucket = TokenBucket(plan.rate_limit_rps, plan.burst, plan.burst, now)
                self.buckets[key_id] = bucket
            wait = bucket.take(now)
            if wait:
                reset = str(max(1, math.ceil(wait)))
                return (429, "rate_limited",
                        f"rate limit of the {plan.name} plan exceeded "
                        f"({plan.rate_limit_rps:g}/s, burst {plan.burst})",
                        {"Retry-After": reset, "RateLimit-Limit": str(plan.burst),
                         "RateLimit-Remaining": "0", "RateLimit-Reset": reset})
            if plan.quota_limit is not None:
                slot = (key_id, month)
                if self.quota_used[slot] >= plan.quota_limit:
                    reset = str(_seconds_to_next_month(self.wallclock()))
                    return (429, "quota_exceeded",
                            f"monthly quota of {plan.quota_limit} requests of the {plan.name} "
                            "plan is used up",
                            {"Retry-After": reset, "RateLimit-Limit": str(plan.quota_limit),
                             "RateLimit-Remaining": "0", "RateLimit-Reset": reset})
                self.quota_used[slot] += 1
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = str(uuid.uuid4())
        context: dict[str, Any] = {"requestId": request_id, "stage": "local",
                                   "identity": {"sourceIp": (scope.get("client") or ("",))[0]}}
        if not is_open(scope["path"]):
            async def reject(status: int, code: str, message: str,
                             headers: dict[str, str] | None = None) -> None:
                await self._reject(send, status, code, message,
                                   {**(headers or {}), "x-request-id": request_id},
                                   v2=is_v2_path(scope["path"]))

            headers = dict(scope.get("headers") or [])
            key = headers.get(b"x-api-key", b"").decode("latin-1")
            if not key:
                await reject(401, "missing_api_key",
                             "an API key is required: send it in the x-api-key header")
                return
            # The usage store's first count of a key's month may wait on a writer's lock:
            # that runs off the event loop, so a locked database never freezes /health or
            # other tenants. Everything else here is memory and WAL reads.
            identified = try_now(self._identify, key)
            if identified is WOULD_WAIT:  # the key store is busy: read it in a thread
                identified = await run_in_threadpool(self._identify, key)
            key_id, plan, rejected = identified
            if key_id is not None and plan is not None:
                month = self.wallclock().strftime("%Y-%m")
                if plan.quota_limit is not None and (key_id, month) not in self.quota_used:
                    rejected = await run_in_threadpool(self._count, key_id, month)
                rejected = rejected or self._admit(key_id, plan, month)
            if rejected:
                await reject(*rejected)
                return
            context["identity"]["apiKeyId"] = key_id
        scope = {**scope, "aws.event": {"requestContext": context}}
        await self.app(scope, receive, send)
