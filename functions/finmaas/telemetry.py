"""Operational signals. Lambda emits CloudWatch metrics as EMF through Powertools; the
local server and tests use ``NullTelemetry`` (or a recorder) so nothing prints EMF."""

from __future__ import annotations

from typing import Any, Protocol


class Telemetry(Protocol):
    def model_loaded(self, model: str, version: str, ms: float) -> None: ...
    def predicted(self, model: str, version: str, rows: int,
                  kind: str = "prediction", ms: float = 0.0) -> None: ...
    def failed(self, model: str, version: str, status: int) -> None: ...
    def error(self, code: str, status: int) -> None: ...
    def metering_failed(self) -> None: ...
    def shadowed(self, model: str, shadow: str, rows: int, mean_abs_diff: float | None,
                 flip_rate: float | None) -> None: ...


class NullTelemetry:
    def model_loaded(self, model: str, version: str, ms: float) -> None:
        pass

    def predicted(self, model: str, version: str, rows: int,
                  kind: str = "prediction", ms: float = 0.0) -> None:
        pass

    def failed(self, model: str, version: str, status: int) -> None:
        pass

    def error(self, code: str, status: int) -> None:
        pass

    def metering_failed(self) -> None:
        pass

    def shadowed(self, model: str, shadow: str, rows: int, mean_abs_diff: float | None,
                 flip_rate: float | None) -> None:
        pass


class PowertoolsTelemetry:
    """Metric names match the CDK dashboard and alarms (``infra``)."""

    NAMESPACE = "FinMaaS"

    def __init__(self, metrics: Any) -> None:
        self.metrics = metrics

    def model_loaded(self, model: str, version: str, ms: float) -> None:
        from aws_lambda_powertools.metrics import MetricUnit

        self.metrics.add_metric(name="ModelLoadTime", unit=MetricUnit.Milliseconds, value=ms)

    def predicted(self, model: str, version: str, rows: int,
                  kind: str = "prediction", ms: float = 0.0) -> None:
        """Rows, one request and its latency, per model and version served (a canary is
        watched against its primary). A Lambda invocation serves one request, so the
        invocation's batch takes the model and version as dimensions: no extra EMF line."""
        from aws_lambda_powertools.metrics import MetricUnit

        self.metrics.add_dimension(name="model", value=model)
        self.metrics.add_dimension(name="version", value=version)
        name = {"explanation": "RowsExplained", "token": "TokensRead"}.get(
            kind.removeprefix("batch_"), "RowsPredicted")
        self.metrics.add_metric(name=name, unit=MetricUnit.Count, value=rows)
        self.metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
        self.metrics.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=ms)

    def failed(self, model: str, version: str, status: int) -> None:
        """A call refused after its version was chosen (a field failing the card, the
        usage store down): counted per version on a line of its own, so the batch's
        service-level metrics (MeteringFailures, watched by an alarm) keep their
        dimensions."""
        from aws_lambda_powertools.metrics import MetricUnit, single_metric

        with single_metric(name="Errors", unit=MetricUnit.Count, value=1,
                           namespace=self.NAMESPACE,
                           default_dimensions={"service": "inference"}) as metric:
            metric.add_dimension(name="model", value=model)
            metric.add_dimension(name="version", value=version)
            metric.add_dimension(name="status", value=f"{status // 100}xx")

    def error(self, code: str, status: int) -> None:
        """Errors by code: a separate EMF line per error, with the code as a dimension
        (errors are rare enough that the extra line costs nothing on the hot path)."""
        from aws_lambda_powertools.metrics import MetricUnit, single_metric

        name = "ClientErrors" if status < 500 else "ServerErrors"
        with single_metric(name=name, unit=MetricUnit.Count, value=1,
                           namespace=self.NAMESPACE,
                           default_dimensions={"service": "inference"}) as metric:
            metric.add_dimension(name="code", value=code)

    def metering_failed(self) -> None:
        from aws_lambda_powertools.metrics import MetricUnit

        self.metrics.add_metric(name="MeteringFailures", unit=MetricUnit.Count, value=1)

    def shadowed(self, model: str, shadow: str, rows: int, mean_abs_diff: float | None,
                 flip_rate: float | None) -> None:
        """A shadow's agreement, per model and shadow version (one EMF line: shadows are
        a deliberate, temporary cost)."""
        from aws_lambda_powertools.metrics import MetricUnit, single_metric

        values = {"ShadowRows": float(rows), "ShadowFailures": float(mean_abs_diff is None)}
        if mean_abs_diff is not None:
            values["ShadowAbsDiff"] = mean_abs_diff
        if flip_rate is not None:
            values["ShadowFlipRate"] = flip_rate
        for metric, value in values.items():
            with single_metric(name=metric, unit=MetricUnit.Count if "Rows" in metric
                               or "Failures" in metric else MetricUnit.NoUnit, value=value,
                               namespace=self.NAMESPACE,
                               default_dimensions={"service": "inference"}) as line:
                line.add_dimension(name="model", value=model)
                line.add_dimension(name="version", value=shadow)
