"""Builds a Lambda handler around the app: Powertools logger and EMF metrics around
Mangum. Built once per container at import; Mangum's lifespan is off (it would run on
every invocation).

Metrics are published by ``MetricsPublisher``, not Powertools' ``log_metrics`` decorator:
the decorator warns "No application metrics to publish" on every invocation that measured
nothing (reads, and every error, whose count goes out on its own EMF line), which is most
of them. Publishing only a non-empty batch says the same to CloudWatch with no noise.

The handler's edge accepts API Gateway REST API proxy events (payload format 1.0) only.
Anything else is answered before Mangum, and so before any usage record, with a 400 in
the API's error body: ``unsupported_event`` for an HTTP API (payload 2.0) or ALB event,
``invalid_event`` for an event missing or mistyping a field the app reads. Through the
REST API a client cannot produce either; they come from direct invokes, test harnesses or
a miswired integration, so they are the caller's problem (4xx), counted by code in the
``ClientErrors`` metric, not a server fault that pages anyone.
"""

from __future__ import annotations

import binascii
import os
from base64 import b64decode
from typing import Any

import orjson

from .config import Settings
from .errors import ApiError, BadRequest

REST_API_ONLY = ("only API Gateway REST API proxy events (payload format 1.0) are supported: "
                 "put the function behind the REST API that infra/ deploys")


def _other_event_kind(event: dict[str, Any]) -> str | None:
    """What the event is, if it is a well-known event that is not a REST proxy event."""
    ctx = event.get("requestContext")
    if isinstance(ctx, dict) and "elb" in ctx:
        return "an Application Load Balancer event"
    if event.get("version") == "2.0" or (isinstance(ctx, dict) and "http" in ctx):
        return "an HTTP API or function URL event (payload format 2.0)"
    return None


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _field_problems(event: dict[str, Any]) -> tuple[list[dict[str, str]], bytes | None]:
    """The fields Mangum or the app read that are missing or of the wrong type (a field
    they never read may be anything), and a base64 body's bytes, decoded once here."""
    problems: list[dict[str, str]] = []
    decoded = None

    def bad(field: str, value: Any, message: str) -> None:
        problems.append({"field": field, "code": "missing" if value is None else "wrong_type",
                         "message": message})

    for field in ("resource", "httpMethod", "path"):
        if not isinstance(event.get(field), str) or not event[field]:
            bad(field, event.get(field), "must be a non-empty string")
    ctx = event.get("requestContext")
    if not isinstance(ctx, dict):
        bad("requestContext", ctx, "must be an object")
    else:
        request_id, identity = ctx.get("requestId"), ctx.get("identity")
        if not isinstance(request_id, str) or not request_id:
            bad("requestContext.requestId", request_id, "must be a non-empty string")
        if not isinstance(identity, dict):
            bad("requestContext.identity", identity, "must be an object")
        elif not isinstance(identity.get("apiKeyId"), str | None):
            bad("requestContext.identity.apiKeyId", identity["apiKeyId"],
                "must be a string or null")
    for field, valid, message in (
        ("headers", lambda v: isinstance(v, str), "must be null or an object of strings"),
        ("multiValueHeaders", _is_str_list, "must be null or an object of lists of strings"),
        ("queryStringParameters", lambda v: True, "must be null or an object"),
        ("multiValueQueryStringParameters", lambda v: True, "must be null or an object"),
    ):
        value = event.get(field)
        if value is not None and not (isinstance(value, dict)
                                      and all(valid(v) for v in value.values())):
            bad(field, value, message)
    body, encoded = event.get("body"), event.get("isBase64Encoded", False)
    if not isinstance(body, str | None):
        bad("body", body, "must be a string or null")
    if not isinstance(encoded, bool):
        bad("isBase64Encoded", encoded, "must be true or false")
    elif encoded and isinstance(body, str):
        try:
            decoded = b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            problems.append({"field": "body", "code": "not_base64",
                             "message": "isBase64Encoded is true but the body is not base64"})
    if not problems:
        problems += [{"field": field, "code": "not_unicode",
                      "message": "holds a lone UTF-16 surrogate, which is not a Unicode "
                                 "character"} for field in _unencodable(event)]
    return problems, decoded


def _unencodable(event: dict[str, Any]) -> list[str]:
    """The fields Mangum encodes to UTF-8 that cannot be: a direct invoke can carry lone
    surrogates (``"\ud800"``) that API Gateway itself never sends."""
    strings: list[tuple[str, Any]] = [("path", event.get("path")), ("body", event.get("body"))]
    for field in ("headers", "queryStringParameters"):
        strings += [(f"{field}.{k}", f"{k}{v}") for k, v in (event.get(field) or {}).items()]
    for field in ("multiValueHeaders", "multiValueQueryStringParameters"):
        strings += [(f"{field}.{k}", k + "".join(map(str, v or [])))
                    for k, v in (event.get(field) or {}).items()]
    bad = []
    for field, value in strings:
        text = "" if value is None else str(value)
        if text.isascii():  # the usual event (a base64 body is ASCII): no copy made
            continue
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            bad.append(field)
    return bad


def checked_event(event: Any) -> ApiError | dict[str, Any]:
    """Why ``event`` is not a REST API proxy event the app can serve, or the event as
    Mangum is to read it: a base64 body (binary media: V2's binary tensors) already
    decoded, which Mangum passes on as bytes, so its body is decoded once, not twice."""
    if not isinstance(event, dict):
        return BadRequest(f"the Lambda event is not a JSON object; {REST_API_ONLY}",
                          code="invalid_event",
                          details=[{"field": "", "code": "wrong_type",
                                    "message": "must be an object"}])
    kind = _other_event_kind(event)
    if kind:
        return BadRequest(f"this is {kind}; {REST_API_ONLY}", code="unsupported_event")
    problems, decoded = _field_problems(event)
    if problems:
        return BadRequest(f"the Lambda event is not a valid REST API proxy event; "
                          f"{REST_API_ONLY}", code="invalid_event", details=problems)
    if decoded is not None:
        return {**event, "body": decoded, "isBase64Encoded": False}
    return event


def event_request_id(event: Any) -> str | None:
    ctx = event.get("requestContext") if isinstance(event, dict) else None
    request_id = ctx.get("requestId") if isinstance(ctx, dict) else None
    return request_id if isinstance(request_id, str) and request_id else None


def error_response(error: ApiError, request_id: str | None) -> dict[str, Any]:
    """An API Gateway proxy response (valid for payload 1.0 and 2.0) with the error body."""
    headers = {"content-type": "application/json", **error.headers}
    if request_id:
        headers["x-request-id"] = request_id
    return {"statusCode": error.status, "headers": headers,
            "body": orjson.dumps(error.body()).decode(), "isBase64Encoded": False}


class MetricsPublisher:
    """Ends each invocation's EMF batch: ``ColdStart`` on the container's first invocation
    (as Powertools counts it: not under provisioned concurrency), then the invocation's
    metrics if it added any. An empty batch is skipped quietly, not flushed with a warning.
    """

    def __init__(self, metrics: Any) -> None:
        self.metrics = metrics
        self.cold = os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") != "provisioned-concurrency"

    def __call__(self, context: Any) -> None:
        if self.cold:
            self.cold = False
            self.metrics.provider.add_cold_start_metric(context=context)
        if self.metrics.metric_set:
            self.metrics.flush_metrics()


class StagePrefix:
    """On API Gateway's default domain the public URL carries the stage (``/dev/docs``)
    but the event's path does not. Setting ``root_path`` from ``requestContext.path``
    lets /docs link to ``/dev/openapi.json``; with a custom domain it stays empty."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        ctx = (scope.get("aws.event") or {}).get("requestContext") or {}
        stage, public = ctx.get("stage"), ctx.get("path") or ""
        if scope.get("type") == "http" and stage and public.startswith(f"/{stage}/"):
            scope = {**scope, "root_path": f"/{stage}"}
        await self.app(scope, receive, send)


def build_handler(settings: Settings | None = None, services: Any = None) -> Any:
    from aws_lambda_powertools import Logger, Metrics
    from mangum import Mangum

    from . import snapstart
    from .api import LambdaApp, build_services
    from .telemetry import PowertoolsTelemetry

    logger = Logger(service="finmaas")
    metrics = Metrics(namespace=PowertoolsTelemetry.NAMESPACE, service="inference")
    if services is None:
        services = build_services(settings or Settings.from_env(),
                                  telemetry=PowertoolsTelemetry(metrics))
    app = LambdaApp(services)  # FastAPI is imported on the first request that needs it
    asgi = Mangum(StagePrefix(app), lifespan="off")
    snapstart.register(services, app)  # Lambda SnapStart's hooks, where the runtime has them

    telemetry = services.telemetry
    publish_metrics = MetricsPublisher(metrics)

    @logger.inject_lambda_context(log_event=False, clear_state=True)
    def handler(event: Any, context: Any) -> dict[str, Any]:
        try:
            return respond(event, context)
        finally:
            publish_metrics(context)

    def respond(event: Any, context: Any) -> dict[str, Any]:
        checked = checked_event(event)
        if isinstance(checked, ApiError):
            # Never log the event itself: its headers carry the caller's API key.
            logger.warning("refused a Lambda event", code=checked.code,
                           problems=checked.details)
            telemetry.error(checked.code, checked.status)
            return error_response(checked, event_request_id(event))
        try:
            return asgi(checked, context)  # the event, its base64 body decoded
        except Exception:
            # Mangum runs the app and answers its errors itself; what escapes is the adapter
            # failing on an event that passed the checks above: our fault, so a 500.
            logger.exception("the Lambda adapter failed")
            error = ApiError("internal error; it has been logged", status=500,
                             code="internal_error")
            telemetry.error(error.code, error.status)
            return error_response(error, event_request_id(event))

    handler.services = services  # type: ignore[attr-defined]
    handler.app = app  # type: ignore[attr-defined]
    return handler
