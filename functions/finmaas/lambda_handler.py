"""Builds a Lambda handler around the app: Powertools logger and EMF metrics around
Mangum. Built once per container at import; Mangum's lifespan is off (it would run on
every invocation)."""

from __future__ import annotations

from typing import Any

from .config import Settings


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

    from .api import build_services, create_app
    from .telemetry import PowertoolsTelemetry

    logger = Logger(service="finmaas")
    metrics = Metrics(namespace=PowertoolsTelemetry.NAMESPACE, service="inference")
    if services is None:
        services = build_services(settings or Settings.from_env(),
                                  telemetry=PowertoolsTelemetry(metrics))
    asgi = Mangum(StagePrefix(create_app(services)), lifespan="off")

    @metrics.log_metrics(capture_cold_start_metric=True)
    @logger.inject_lambda_context(log_event=False, clear_state=True)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return asgi(event, context)

    handler.services = services  # type: ignore[attr-defined]
    return handler
