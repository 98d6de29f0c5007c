"""The rollups function: the usage table's stream, summed into the rollups that usage and
invoices read, exactly once (``finmaas.metering.stream``), off the inference hot path."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from .api import ARCH, function_code, retention
from .settings import StageSettings


class RollupsFunction(Construct):
    def __init__(self, scope: Construct, id: str, *, settings: StageSettings,
                 usage: dynamodb.Table, rollups: dynamodb.Table) -> None:
        super().__init__(scope, id)
        self.log_group = logs.LogGroup(
            self, "FunctionLogs", retention=retention(settings.log_retention_days),
            removal_policy=cdk.RemovalPolicy.DESTROY)
        self.function = lambda_.Function(
            self, "Rollups",
            description="FinMaaS rollups: the usage table's stream, summed exactly once",
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=ARCH[settings.architecture],
            handler="rollups/handler.handler",
            code=function_code(settings),  # the inference function's asset, built once
            memory_size=256,
            timeout=cdk.Duration.seconds(60),
            log_group=self.log_group,
            environment={
                "MAAS_STAGE": settings.stage,
                "MAAS_USAGE_TABLE": usage.table_name,
                "MAAS_ROLLUPS_TABLE": rollups.table_name,
                "POWERTOOLS_SERVICE_NAME": "finmaas-rollups",
            },
        )
        # Where a batch goes if its records outlive the stream's 24 hours unapplied: its
        # usage records stay in the usage table, the rollups are rebuilt from them by
        # hand, and an alarm says so. Until then retries are unlimited: the shard waits,
        # the iterator-age alarm rings.
        self.dead_letters = sqs.Queue(
            self, "ExpiredBatches", encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True, retention_period=cdk.Duration.days(14))
        self.function.add_event_source(sources.DynamoEventSource(
            usage,
            starting_position=lambda_.StartingPosition.TRIM_HORIZON,
            batch_size=100,
            max_batching_window=cdk.Duration.seconds(5),  # fuller batches: fewer writes
            # the window is what puts the shard id in each event: the checkpoint's key
            tumbling_window=cdk.Duration.seconds(60),
            report_batch_item_failures=True,
            parallelization_factor=1,  # one invocation per shard: the checkpoint's order
            on_failure=sources.SqsDlq(self.dead_letters),
        ))
        rollups.grant_read_write_data(self.function)
        self.iterator_age = cw.Metric(
            namespace="AWS/Lambda", metric_name="IteratorAge", statistic="Maximum",
            dimensions_map={"FunctionName": self.function.function_name},
            period=cdk.Duration.minutes(1))
        self.alarm_expired = self.dead_letters.metric_approximate_number_of_messages_visible(
            period=cdk.Duration.minutes(5)).create_alarm(
            self, "RollupsExpired",
            alarm_description="a stream batch outlived the stream's 24 hours unapplied: "
                               "rebuild its rollups from the usage table's records",
            threshold=0, evaluation_periods=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING)
        self.alarm_lag = self.iterator_age.with_(period=cdk.Duration.minutes(5)).create_alarm(
            self, "RollupsLag",
            alarm_description="rollups lag the usage table's stream by over 5 minutes: "
                              "usage and invoices are behind (nothing is lost)",
            threshold=5 * 60 * 1000, evaluation_periods=1,
            comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cw.TreatMissingData.NOT_BREACHING)
