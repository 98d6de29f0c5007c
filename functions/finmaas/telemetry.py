"""Operational signals. Lambda emits CloudWatch metrics as EMF through Powertools; the
local server and tests use ``NullTelemetry`` (or a recorder) so nothing prints EMF."""

from __future__ import annotations

from typing import Any, Protocol


class Telemetry(Protocol):
    def model_loaded(self, model: str, version: str, ms: float) -> None: ...
    def predicted(self, model: str, version: str, rows: int,
                  kind: str = "prediction") -> None: ...
    def error(self, code: str, status: int) -> None: ...
    def metering_failed(self) -> None: ...
    def shadowed(self, model: str, shadow: str, rows: int, mean_abs_diff: float | None,
                 flip_rate: float | None) -> None: ...


class NullTelemetry:
    def model_loaded(self, model: str, version: str, ms: float) -> None:
        pass

    def predicted(self, model: str, version: str, rows: int,
                  kind: str = "prediction") -> None:
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
                  kind: str = "prediction") -> None:
        from aws_lambda_powertools.metrics import MetricUnit

        # One metric per call: request counts come from API Gateway's Count metric.
        name = "RowsExplained" if kind == "explanation" else "RowsPredicted"
        self.metrics.add_metric(name=name, unit=MetricUnit.Count, value=rows)

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
