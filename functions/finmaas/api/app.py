"""``create_app``: the FastAPI application, built by a factory so tests build their own;
``LambdaApp``: the same routes as Lambda serves them, the paid ones first.

Routes are ``async def``: a sync route hops to a thread pool, which on Lambda costs more
than the inference itself.

FastAPI is imported only where its application is built: importing it costs about 0.25 s
here (its OpenAPI models alone ~0.1 s), a third of a cold start, and the routes a paying
caller hits (``/v1`` predict and explain, ``/v2``) are plain Starlette routes that never
needed it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request  # FastAPI's Request is this class
from starlette.responses import Response
from starlette.routing import Route

from .. import __version__, billing, console
from ..config import Settings
from ..errors import ApiError, NotFound, is_v2_path
from ..metering import MeteringStore, open_metering_store
from ..nowait import WOULD_WAIT, try_now
from ..plans import get_plan
from ..registry import ModelRegistry, open_registry
from ..service import Caller, PredictionService, PredictResult
from ..telemetry import NullTelemetry, Telemetry
from ..tenants import TenantStore, open_tenant_store
from . import batch, v2
from . import body as bodies
from .identity import RequestIdHeader, TenantDirectory, request_context, resolve_caller

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI
    from starlette.types import Receive, Scope, Send

log = logging.getLogger("finmaas.api")
T = TypeVar("T")
# Predictions of at most this many rows may be answered on the local server's event loop
# (``Services.serve``): well under a millisecond of work, less than a thread hop costs.
INLINE_ROWS = 16


@dataclass
class Services:
    settings: Settings
    registry: ModelRegistry
    metering: MeteringStore
    tenants: TenantStore
    telemetry: Telemetry = field(default_factory=NullTelemetry)
    today: Callable[[], date] = field(default=lambda: datetime.now(UTC).date())
    offload: bool = False  # True in the long-running local server (see ``run``)
    # AWS clients by service name (dynamodb, s3, stepfunctions): tests pass moto's
    clients: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.directory = TenantDirectory(self.tenants, ttl=self.settings.tenant_cache_seconds)
        self.predictions = PredictionService(self.registry, self.metering, self.telemetry)
        self._batch: Any = None
        self._batch_lock = threading.Lock()

    @property
    def batch(self) -> Any:
        """The batch jobs' control plane (``finmaas.batch.control.BatchJobs``), built on
        the first batch request: the predict path's cold start does not pay for it."""
        with self._batch_lock:
            if self._batch is None:
                self._batch = _build_batch(self)
            return self._batch

    async def serve(self, kind: str, caller: Caller, name: str, ref: str | None,
                    instances: list[Any], body: bytes, idempotency_key: str | None,
                    labels: Any = None) -> PredictResult:
        """``PredictionService.serve``, through ``run``; except that the local server
        answers a small prediction of a loaded tabular model on its event loop, where a
        thread hop would cost more than the work (about half a millisecond here). The
        stores are asked not to wait there: if one would (another writer, another
        process's lock), nothing was recorded and the call runs again in a thread."""
        args = (kind, caller, name, ref, instances, body, idempotency_key, labels)
        if (kind == "prediction" and labels is None and len(instances) <= INLINE_ROWS
                and self.metering.honours_no_wait and self.registry.in_memory(name, ref)):
            return await self.run_soon(self.predictions.serve, *args)
        return await self.run(self.predictions.serve, *args)

    async def caller(self, scope: dict[str, Any]) -> Caller:
        """Who is calling: from the directory's memory on the loop when it has the key
        (the usual case, and no thread hop), else from the tenant store in a thread."""
        return await self.run_soon(resolve_caller, scope, self.directory)

    async def run_soon(self, fn: Callable[..., T], *args: Any) -> T:
        """``run``, except that the local server first tries ``fn`` on the loop with the
        stores told not to wait (``nowait.try_now``), and hops only if it would."""
        if self.offload:
            result = try_now(fn, *args)
            if result is not WOULD_WAIT:
                return result
        return await self.run(fn, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Blocking store work, off the event loop where there is one to keep free.

        A Lambda container serves one request at a time on a loop of its own: a thread hop
        would only add latency. The local server's one loop serves every tenant and SQLite
        may wait on a lock, so there (``offload``) store work runs in worker threads and
        /health and the other tenants never freeze."""
        if not self.offload:
            return fn(*args)
        return await run_in_threadpool(fn, *args)


def build_services(settings: Settings | None = None, *, telemetry: Telemetry | None = None,
                   offload: bool = False, **clients: Any) -> Services:
    """Stores chosen by configuration: S3/DynamoDB in AWS, directory/SQLite locally."""
    settings = settings or Settings.from_env()
    telemetry = telemetry or NullTelemetry()
    registry = open_registry(settings, s3_client=clients.get("s3"),
                             on_load=telemetry.model_loaded)
    return Services(
        settings=settings,
        registry=registry,
        metering=open_metering_store(settings, dynamodb_client=clients.get("dynamodb")),
        tenants=open_tenant_store(settings, dynamodb_client=clients.get("dynamodb")),
        telemetry=telemetry,
        offload=offload,
        clients=dict(clients),
    )


def _build_batch(s: Services) -> Any:
    from ..batch import open_job_store
    from ..batch.control import BatchJobs

    jobs = open_job_store(s.settings, dynamodb_client=s.clients.get("dynamodb"))
    runner: Any
    inputs: Any = None
    if s.settings.batch_state_machine:
        from ..batch.aws import S3Inputs, StepFunctionsRunner

        runner = StepFunctionsRunner(s.settings.batch_state_machine,
                                     client=s.clients.get("stepfunctions"))
        inputs = S3Inputs(s.clients.get("s3"))
    else:
        from ..batch.local import LocalJobRunner
        from ..batch.sqlite import SQLiteJobStore

        if not isinstance(jobs, SQLiteJobStore):
            raise ValueError("batch jobs with a DynamoDB jobs table run on Step Functions: "
                             "set MAAS_BATCH_STATE_MACHINE too")
        runner = LocalJobRunner(s.predictions, jobs)
    return BatchJobs(s.predictions, jobs, runner, roots=s.settings.allowed_batch_roots,
                     chunk_rows=s.settings.batch_chunk_rows, inputs=inputs)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    try:  # numpy arrays (a text model's vectors) as their shortest round-trip decimals
        content = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:  # a lone surrogate echoed from the request: escape it, never a 500
        content = json.dumps(body, ensure_ascii=True, default=_plain).encode()
    return Response(content, status_code=status, media_type="application/json",
                    headers=headers)


def _plain(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _services(request: Request) -> Services:
    return request.app.state.services


def health_router() -> APIRouter:
    from fastapi import APIRouter

    router = APIRouter(tags=["health"])

    @router.head("/health", include_in_schema=False)  # load balancers and uptime probes
    @router.get("/health", summary="Liveness (no API key)")
    async def health() -> Response:
        return json_response({"status": "ok", "version": __version__})

    return router


def models_router() -> APIRouter:
    from fastapi import APIRouter

    router = APIRouter(prefix="/v1/models", tags=["models"])

    @router.get("", summary="The catalogue: models, versions, aliases, prices")
    async def catalogue(request: Request) -> Response:
        s = _services(request)

        def work() -> dict[str, Any]:
            resolve_caller(request.scope, s.directory)
            return {"models": s.registry.catalogue()}

        return json_response(await s.run(work))

    @router.get("/{name}", summary="A model card (production, or ?version= alias or version)")
    async def card(request: Request, name: str, version: str | None = None) -> Response:
        s = _services(request)

        def work() -> dict[str, Any]:
            resolve_caller(request.scope, s.directory)
            card = s.registry.card_of_alias(name, version, s.registry.resolve(name, version))
            agreement = s.predictions.shadows.of(name)
            return {**card.raw, "aliases": s.registry.aliases(name),
                    **({"shadow_agreement": agreement} if agreement else {})}

        return json_response(await s.run(work))

    return router


async def predict(request: Request) -> Response:
    """POST /v1/models/{name}/predict and /v1/models/{name}/versions/{version}/predict.

    A plain Starlette route: it parses its own body (to give precise errors and to keep
    the raw bytes for idempotency fingerprints), so FastAPI's per-request dependency
    solving would only add cost. ``openapi.py`` documents both paths by hand.
    """
    return await _serve(request, "prediction")


async def explain(request: Request) -> Response:
    """POST /v1/models/{name}/explain (and .../versions/{version}/explain): the same body,
    validation, idempotency and metering as predict; billed as explained rows."""
    return await _serve(request, "explanation")


async def _serve(request: Request, kind: str) -> Response:
    s = _services(request)
    name = request.path_params["name"]
    path_version = request.path_params.get("version")
    caller = await s.caller(request.scope)  # who, before what
    idem = bodies.idempotency_key(request)
    doc, raw = await bodies.read_json(request, s.settings.max_body_bytes)
    instances, body_version, labels = bodies.parse_predict(doc, s.settings.max_instances)
    if path_version and body_version and path_version != body_version:
        raise ApiError(f"version {body_version!r} in the body contradicts the path's "
                       f"{path_version!r}", status=422, code="version_conflict")

    result = await s.serve(kind, caller, name, path_version or body_version, instances,
                           bodies.fingerprint_source(doc, raw, idem), idem, labels)
    headers = {"x-request-id": result.body["request_id"]}
    if idem is not None:
        headers["Idempotent-Replayed"] = "true" if result.replayed else "false"
    return json_response(result.body, headers=headers)


PREDICT_ROUTES = [
    Route("/v1/models/{name}/predict", predict, methods=["POST"], include_in_schema=False),
    Route("/v1/models/{name}/versions/{version}/predict", predict, methods=["POST"],
          include_in_schema=False),
    Route("/v1/models/{name}/explain", explain, methods=["POST"], include_in_schema=False),
    Route("/v1/models/{name}/versions/{version}/explain", explain, methods=["POST"],
          include_in_schema=False),
]


def billing_router() -> APIRouter:
    from fastapi import APIRouter

    router = APIRouter(prefix="/v1", tags=["billing"])

    @router.get("/usage", summary="Your usage by day and model (rollups)")
    async def usage(request: Request, start: str | None = None, end: str | None = None
                    ) -> Response:
        s = _services(request)

        def work() -> dict[str, Any]:
            caller = resolve_caller(request.scope, s.directory)
            lo, hi = billing.parse_range(start, end, s.today())
            rows = _guarded(lambda: s.metering.daily_usage(caller.tenant, lo, hi))
            return billing.usage_report(caller.tenant, lo, hi, rows)

        return json_response(await s.run(work))

    @router.get("/account", summary="Your tenant, plan and this month's requests")
    async def account(request: Request) -> Response:
        s = _services(request)

        def work() -> dict[str, Any]:
            caller = resolve_caller(request.scope, s.directory)
            plan = get_plan(caller.plan)
            month = s.today().strftime("%Y-%m")
            rows = _guarded(lambda: s.metering.month_usage(caller.tenant, month))
            # billed calls; the plan's quota counts every call the gateway admits (reads
            # such as this one too), which only the gateway knows
            return {"tenant": caller.tenant, "plan": plan.as_dict(), "month": month,
                    "billed_requests_this_month": sum(r.requests for r in rows)}

        return json_response(await s.run(work))

    @router.get("/invoices/{month}", summary="Your invoice for a month (YYYY-MM)")
    async def invoice(request: Request, month: str) -> Response:
        s = _services(request)

        def work() -> dict[str, Any]:
            caller = resolve_caller(request.scope, s.directory)
            valid = billing.parse_month(month, s.today())
            rows = _guarded(lambda: s.metering.month_usage(caller.tenant, valid))
            return billing.build_invoice(caller.tenant, get_plan(caller.plan), valid, rows,
                                         s.today())

        return json_response(await s.run(work))

    return router


def _guarded(fn: Callable[[], Any]) -> Any:
    from ..errors import ServiceUnavailable
    from ..metering import MeteringUnavailable

    try:
        return fn()
    except MeteringUnavailable as exc:
        raise ServiceUnavailable("usage store unavailable; retry shortly",
                                 code="usage_unavailable") from exc


def error_handlers(services: Services) -> dict[Any, Callable[..., Any]]:
    """How an error becomes an answer, for both applications: the API's error body (V2's
    on ``/v2`` paths), the request id, the error counted once."""

    def error(request: Request, exc: ApiError) -> Response:
        services.telemetry.error(exc.code, exc.status)
        # set here too: a 500 is answered outside the RequestIdHeader middleware
        request_id = request_context(request.scope).get("requestId")
        if is_v2_path(request.url.path):
            return v2.error_response(exc, request_id if isinstance(request_id, str) else None)
        headers = dict(exc.headers)
        if isinstance(request_id, str) and request_id:
            headers["x-request-id"] = request_id
        return json_response(exc.body(), exc.status, headers)

    async def api_error(request: Request, exc: ApiError) -> Response:
        return error(request, exc)

    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "route_not_found", 405: "method_not_allowed"}.get(exc.status_code,
                                                                        "http_error")
        err = NotFound(str(exc.detail), code=code) if exc.status_code == 404 else ApiError(
            str(exc.detail), status=exc.status_code, code=code,
            headers=dict(exc.headers or {}))  # 405 keeps its Allow header
        return error(request, err)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error")
        return error(request, ApiError("internal error; it has been logged", status=500,
                                       code="internal_error"))

    return {ApiError: api_error, StarletteHTTPException: http_error, Exception: unexpected}


# The hot path first: Starlette tries routes in order.
PAID_ROUTES = PREDICT_ROUTES + v2.ROUTES


def create_app(services: Services | None = None) -> FastAPI:
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError

    from . import openapi

    services = services or build_services()
    app = FastAPI(
        title="FinMaaS",
        version=__version__,
        description="Financial models, paid per prediction. Every route but /health needs "
                    "an API key in x-api-key. Errors are "
                    '{"error": {"code", "message", "details"}}.',
    )
    app.state.services = services
    handlers = error_handlers(services)
    for kind, handler in handlers.items():
        app.add_exception_handler(kind, handler)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        details = [{"field": ".".join(str(p) for p in e.get("loc", ())), "code": e.get("type"),
                    "message": e.get("msg")} for e in exc.errors()]
        return await handlers[ApiError](request, ApiError(
            "the request is invalid", status=422, code="validation_error", details=details))

    app.router.routes[:0] = PAID_ROUTES
    app.include_router(health_router())
    app.include_router(models_router())
    app.include_router(billing_router())
    app.router.routes.extend(batch.ROUTES)
    app.router.routes.extend(console.routes())
    openapi.install(app, services.registry)
    app.add_middleware(RequestIdHeader)
    return app


class LambdaApp:
    """The application as the Lambda function serves it: the paid routes (``/v1``
    predict and explain, ``/v2``) in a Starlette application of their own, with the same
    error handlers and request-id header as ``create_app``'s; any other request goes to
    ``create_app``'s FastAPI application, built the first time one arrives (or before a
    SnapStart snapshot: ``openapi``), so a container's first prediction never imports
    FastAPI, about a third of a cold start."""

    def __init__(self, services: Services) -> None:
        from starlette.applications import Starlette
        from starlette.middleware import Middleware

        self.services = services
        self._full: FastAPI | None = None
        self._lock = threading.Lock()
        self.app = Starlette(routes=PAID_ROUTES, middleware=[Middleware(RequestIdHeader)],
                             exception_handlers=error_handlers(services))
        self.app.state.services = services
        self.app.router.default = self._rest

    @property
    def built(self) -> bool:
        """Whether a request (or ``openapi``) has needed the FastAPI application yet."""
        return self._full is not None

    def fastapi_app(self) -> FastAPI:
        """``create_app``'s application, built by the first caller (about 0.25 s); a build
        that raises is not kept, so the next request tries again."""
        if self._full is not None:
            return self._full
        with self._lock:
            if self._full is None:
                self._full = create_app(self.services)
            return self._full

    def openapi(self) -> dict[str, Any]:
        return self.fastapi_app().openapi()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    async def _rest(self, scope: Scope, receive: Receive, send: Send) -> None:
        answered = False

        async def watch(message: dict[str, Any]) -> None:
            nonlocal answered
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        full = self.fastapi_app()
        # Starlette's router keeps a "router" already in the scope: without this, url_for in
        # a FastAPI route would look among the paid routes only.
        scope = {**scope, "router": full.router}
        try:
            await full(scope, receive, watch)
        except Exception:
            # The FastAPI application answered it with a logged, counted 500 and re-raised,
            # as Starlette does: answering it again here would count it twice.
            if not answered:
                raise
