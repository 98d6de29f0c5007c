"""Batch jobs: the bucket tenants' inputs and results live in (``tenants/<tenant>/``),
the jobs table, the chunk function, and the state machine whose Distributed Map reads a
job's input object, batches its rows, scores each batch with the chunk function and
writes the map's results; a job ends with its status set in the jobs table.

The state machine's input is ``finmaas.batch.aws.execution_input``: ``job`` (what the
chunk function needs), ``input`` (bucket, key) and ``results`` (bucket, prefix).
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from .api import ARCH, function_code, retention
from .settings import StageSettings

TENANTS_PREFIX = "tenants"
CHUNK_TIMEOUT_SECONDS = 300
# A child execution's input (and so the chunk function's event) is at most 256 KiB, Step
# Functions' payload limit; a 1,000-row credit-risk CSV batch is ~297 KB as JSON. Capping
# the batch's bytes makes Step Functions cut batches short of the row count instead of
# failing them; the rest of the 262,144 bytes is room for BatchInput and the envelope.
MAX_BATCH_BYTES = 240_000


def _job_key() -> dict[str, tasks.DynamoAttributeValue]:
    return {"pk": tasks.DynamoAttributeValue.from_string(
                sfn.JsonPath.format("JOB#{}", sfn.JsonPath.string_at("$.job.job_id"))),
            "sk": tasks.DynamoAttributeValue.from_string("JOB")}


class BatchJobs(Construct):
    def __init__(self, scope: Construct, id: str, *, settings: StageSettings,
                 access_logs: s3.IBucket, environment: dict[str, str]) -> None:
        super().__init__(scope, id)
        removal = cdk.RemovalPolicy.RETAIN if settings.is_prod else cdk.RemovalPolicy.DESTROY
        self.bucket = s3.Bucket(
            self, "Data",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="batch-bucket/",
            removal_policy=removal,
            auto_delete_objects=not settings.is_prod,
        )
        self.jobs = dynamodb.Table(
            self, "Jobs",
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True),
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            removal_policy=removal,
            deletion_protection=settings.is_prod,
        )
        self.jobs.add_global_secondary_index(  # finmaas.batch.dynamodb.TENANT_INDEX
            index_name="by-tenant",
            partition_key=dynamodb.Attribute(name="tenant",
                                             type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="created_at",
                                        type=dynamodb.AttributeType.STRING))
        self.log_group = logs.LogGroup(
            self, "ChunkLogs", retention=retention(settings.log_retention_days),
            removal_policy=cdk.RemovalPolicy.DESTROY)
        self.function = lambda_.Function(
            self, "Chunk",
            description="FinMaaS batch chunk: one batch of a job's rows, scored and billed once",
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=ARCH[settings.architecture],
            handler="batch/handler.handler",
            code=function_code(settings),  # the inference function's asset, built once
            memory_size=settings.memory_mb,
            timeout=cdk.Duration.seconds(CHUNK_TIMEOUT_SECONDS),
            log_group=self.log_group,
            environment={
                **environment,
                "MAAS_STAGE": settings.stage,
                "MAAS_JOBS_TABLE": self.jobs.table_name,
                "MAAS_CACHE_DIR": "/tmp/finmaas-models",
                "MAAS_ORT_THREADS": str(settings.vcpus),
                "MAAS_USAGE_RETENTION_DAYS": str(settings.usage_retention_days),
                "POWERTOOLS_SERVICE_NAME": "finmaas-batch",
            },
        )
        self.jobs.grant_read_write_data(self.function)
        self.bucket.grant_put(self.function, f"{TENANTS_PREFIX}/*")
        self.state_machine = self._state_machine(settings)

    @property
    def roots(self) -> str:
        """``MAAS_BATCH_ROOTS`` for the inference function: each tenant gets
        ``tenants/<tenant>/`` of the batch bucket."""
        return f"s3://{self.bucket.bucket_name}/{TENANTS_PREFIX}/"

    def _state_machine(self, settings: StageSettings) -> sfn.StateMachine:
        def score(fmt: str) -> tasks.LambdaInvoke:
            task = tasks.LambdaInvoke(
                self, f"Score{fmt}Chunk", lambda_function=self.function,
                payload_response_only=True, retry_on_service_exceptions=True)
            # the usage store or S3 faltered: the chunk is scored again and billed once
            task.add_retry(errors=["ChunkRetryable"], interval=cdk.Duration.seconds(2),
                           backoff_rate=2, max_attempts=6, jitter_strategy=sfn.JitterType.FULL)
            task.add_retry(errors=["States.Timeout", "States.TaskFailed"],
                           interval=cdk.Duration.seconds(5), backoff_rate=2, max_attempts=2)
            return task

        mark_failed = tasks.DynamoUpdateItem(
            self, "MarkFailed", table=self.jobs, key=_job_key(),
            update_expression="SET #s = :s, #e = :e, updated_at = :u",
            expression_attribute_names={"#s": "status", "#e": "error"},
            expression_attribute_values={
                ":s": tasks.DynamoAttributeValue.from_string("failed"),
                ":e": tasks.DynamoAttributeValue.from_string(sfn.JsonPath.format(
                    "{}: {}", sfn.JsonPath.string_at("$.failure.Error"),
                    sfn.JsonPath.string_at("$.failure.Cause"))),
                ":u": tasks.DynamoAttributeValue.from_string(
                    sfn.JsonPath.string_at("$$.State.EnteredTime"))},
            result_path=sfn.JsonPath.DISCARD,
        ).next(sfn.Fail(self, "JobFailed", error="BatchJobFailed",
                        cause="a chunk failed after its retries; see the job's error"))
        mark_succeeded = tasks.DynamoUpdateItem(
            self, "MarkSucceeded", table=self.jobs, key=_job_key(),
            update_expression="SET #s = :s, updated_at = :u",
            expression_attribute_names={"#s": "status"},
            expression_attribute_values={
                ":s": tasks.DynamoAttributeValue.from_string("succeeded"),
                ":u": tasks.DynamoAttributeValue.from_string(
                    sfn.JsonPath.string_at("$$.State.EnteredTime"))},
            result_path=sfn.JsonPath.DISCARD,
        )

        def rows_map(fmt: str, reader: sfn.IItemReader) -> sfn.DistributedMap:
            scored = sfn.DistributedMap(
                self, f"Score{fmt}Rows",
                item_reader=reader,
                item_selector={"index.$": "$$.Map.Item.Index", "row.$": "$$.Map.Item.Value"},
                item_batcher=sfn.ItemBatcher(max_items_per_batch=settings.batch_chunk_rows,
                                             max_input_bytes_per_batch=MAX_BATCH_BYTES,
                                             batch_input={"job.$": "$.job"}),
                max_concurrency=settings.batch_max_concurrency,
                tolerated_failure_percentage=0,  # bad rows fail alone; a bad chunk fails all
                result_writer=sfn.ResultWriter(
                    bucket=self.bucket,
                    prefix=sfn.JsonPath.string_at("$.results.prefix")),
                result_path="$.map",
            )
            scored.item_processor(score(fmt))
            scored.add_catch(mark_failed, result_path="$.failure")
            return scored.next(mark_succeeded)

        key = sfn.JsonPath.string_at("$.input.key")
        by_format = sfn.Choice(self, "ByFormat").when(
            sfn.Condition.string_equals("$.job.format", "csv"),
            rows_map("Csv", sfn.S3CsvItemReader(
                bucket=self.bucket, key=key,
                csv_headers=sfn.CsvHeaders.use_first_row()))).otherwise(
            rows_map("Jsonl", sfn.S3JsonLItemReader(bucket=self.bucket, key=key)))
        self.state_log = logs.LogGroup(
            self, "StateMachineLogs", retention=retention(settings.log_retention_days),
            removal_policy=cdk.RemovalPolicy.DESTROY)
        return sfn.StateMachine(
            self, "StateMachine",
            comment="FinMaaS batch job: score every row of an input object, billed per chunk",
            definition_body=sfn.DefinitionBody.from_chainable(by_format),
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=self.state_log, level=sfn.LogLevel.ALL,
                                include_execution_data=False),
        )
