"""What an operator watches: one dashboard and alarms on 5xx rate, p99 latency and
metering failures (a metering failure is a request refused to stay billable)."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from .settings import StageSettings

NAMESPACE = "FinMaaS"  # finmaas.telemetry.PowertoolsTelemetry.NAMESPACE
SERVICE_DIMENSION = {"service": "inference"}


def per_version(metric: str, statistic: str, label: str) -> cw.MathExpression:
    """Every (model, version) line of an application metric: versions appear as they are
    published and rolled out, so the graph searches for them instead of naming them."""
    return cw.MathExpression(
        expression=f"SEARCH('{{{NAMESPACE},model,service,version}} "
                   f"MetricName=\"{metric}\"', '{statistic}', 60)",
        label=label, period=cdk.Duration.minutes(1))


def per_version_errors() -> cw.MathExpression:
    return cw.MathExpression(
        expression=f"SEARCH('{{{NAMESPACE},model,service,status,version}} "
                   f"MetricName=\"Errors\"', 'Sum', 60)",
        label="errors", period=cdk.Duration.minutes(1))


def app_metric(name: str, statistic: str = "Sum", dimensions: dict | None = None) -> cw.Metric:
    return cw.Metric(namespace=NAMESPACE, metric_name=name, statistic=statistic,
                     dimensions_map=dimensions or SERVICE_DIMENSION,
                     period=cdk.Duration.minutes(1))


class Operations(Construct):
    def __init__(self, scope: Construct, id: str, *, settings: StageSettings,
                 api: apigw.RestApi, function: lambda_.Function) -> None:
        super().__init__(scope, id)
        minute = cdk.Duration.minutes(1)
        requests = api.metric_count(period=minute, statistic="Sum")
        errors_4xx = api.metric_client_error(period=minute, statistic="Sum")
        errors_5xx = api.metric_server_error(period=minute, statistic="Sum")
        p50 = api.metric_latency(period=minute, statistic="p50")
        p99 = api.metric_latency(period=minute, statistic="p99")
        cold_starts = app_metric(
            "ColdStart", dimensions={"service": "inference",
                                     "function_name": function.function_name})
        # rows, summed over the model and version dimensions they are published with
        rows = cw.MathExpression(
            expression="SUM(rows)", label="rows predicted", period=minute,
            using_metrics={"rows": per_version("RowsPredicted", "Sum", "rows")})
        metering_failures = app_metric("MeteringFailures")
        throttles = function.metric_throttles(period=minute, statistic="Sum")

        rate_5xx = cw.MathExpression(
            expression="100 * errors / MAX([requests, 1])",
            using_metrics={"errors": errors_5xx.with_(period=cdk.Duration.minutes(5)),
                           "requests": requests.with_(period=cdk.Duration.minutes(5))},
            label="5xx rate (%)", period=cdk.Duration.minutes(5))
        self.alarm_5xx = rate_5xx.create_alarm(
            self, "ServerErrorRate",
            alarm_description=f"5xx responses above {settings.alarm_5xx_rate_percent}% "
                              "of requests for 3 of 3 five-minute periods",
            threshold=settings.alarm_5xx_rate_percent, evaluation_periods=3,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING)
        self.alarm_latency = api.metric_latency(
            period=cdk.Duration.minutes(5), statistic="p99").create_alarm(
            self, "LatencyP99",
            alarm_description=f"p99 latency above {settings.alarm_p99_latency_ms} ms "
                              "for 3 of 3 five-minute periods",
            threshold=settings.alarm_p99_latency_ms, evaluation_periods=3,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING)
        self.alarm_metering = metering_failures.with_(period=cdk.Duration.minutes(5)) \
            .create_alarm(
            self, "MeteringFailures",
            alarm_description="usage records failed to write: callers got 503s",
            threshold=1, evaluation_periods=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING)

        self.dashboard = cw.Dashboard(
            self, "Dashboard", dashboard_name=f"finmaas-{settings.stage}",
            default_interval=cdk.Duration.hours(3))
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Requests", left=[requests], width=8),
            cw.GraphWidget(title="4xx / 5xx", left=[errors_4xx, errors_5xx], width=8),
            cw.GraphWidget(title="Latency p50 / p99 (ms)", left=[p50, p99], width=8),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Cold starts", left=[cold_starts], width=6),
            cw.GraphWidget(title="Rows predicted", left=[rows], width=6),
            cw.GraphWidget(title="Metering failures", left=[metering_failures], width=6),
            cw.GraphWidget(title="Lambda throttles", left=[throttles], width=6),
        )
        # a canary against its primary, a new version against the old
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Requests per model version",
                           left=[per_version("Requests", "Sum", "requests")], width=8),
            cw.GraphWidget(title="Latency p99 per model version (ms, in the function)",
                           left=[per_version("Latency", "p99", "p99")], width=8),
            cw.GraphWidget(title="Errors per model version (4xx / 5xx)",
                           left=[per_version_errors()], width=8),
        )
        self.dashboard.add_widgets(cw.AlarmStatusWidget(
            title="Alarms", width=24,
            alarms=[self.alarm_5xx, self.alarm_latency, self.alarm_metering]))
