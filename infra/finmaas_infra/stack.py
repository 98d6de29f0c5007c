"""The FinMaaS stack: composes the constructs, does the grants, names the outputs and
records every cdk-nag suppression with its reason."""

from __future__ import annotations

import aws_cdk as cdk
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from .api import InferenceApi
from .batch import TENANTS_PREFIX, BatchJobs
from .data import MODELS_PREFIX, MeteringTables, ModelBucket
from .operations import Operations
from .rollups import RollupsFunction
from .settings import StageSettings

S3_READ_ACTIONS = ["Action::s3:GetObject*", "Action::s3:GetBucket*", "Action::s3:List*"]
MODELS_RESOURCE = {"regex": "/^Resource::<ModelStoreModels.*\\.Arn>/models/\\*$/g"}
BATCH_DATA_RESOURCE = {"regex": "/^Resource::<BatchData.*\\.Arn>/tenants/\\*$/g"}
JOBS_INDEX_RESOURCE = {"regex": "/^Resource::<BatchJobs.*\\.Arn>/index/\\*$/g"}
CDK_PROVIDER_PREFIXES = ("Custom::CDKBucketDeployment", "Custom::S3AutoDeleteObjects")
# What every function of the stack is granted and runs on, accepted once
FUNCTION_SUPPRESSIONS = [
    NagPackSuppression(
        id="AwsSolutions-IAM4",
        reason="AWSLambdaBasicExecutionRole only lets the function write its own CloudWatch "
               "logs",
        applies_to=["Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                    "AWSLambdaBasicExecutionRole"]),
    NagPackSuppression(
        id="AwsSolutions-L1",
        reason="Python 3.12 is the runtime this project is built and tested for"),
]


class FinMaaSStack(cdk.Stack):
    def __init__(self, scope: Construct, id: str, *, settings: StageSettings,
                 **kwargs: object) -> None:
        super().__init__(scope, id, **kwargs)
        self.settings = settings
        self.models = ModelBucket(self, "ModelStore", settings=settings)
        self.tables = MeteringTables(self, "Metering", settings=settings)
        data_plane = {
            "MAAS_MODEL_STORE": self.models.store_url,
            "MAAS_USAGE_TABLE": self.tables.usage.table_name,
            "MAAS_ROLLUPS_TABLE": self.tables.rollups.table_name,
        }
        self.batch = BatchJobs(self, "Batch", settings=settings,
                               access_logs=self.models.access_logs, environment=data_plane)
        self.inference = InferenceApi(self, "Inference", settings=settings, environment={
            **data_plane,
            "MAAS_TENANTS_TABLE": self.tables.tenants.table_name,
            "MAAS_JOBS_TABLE": self.batch.jobs.table_name,
            "MAAS_BATCH_STATE_MACHINE": self.batch.state_machine.state_machine_arn,
            "MAAS_BATCH_ROOTS": self.batch.roots,
            "MAAS_BATCH_CHUNK_ROWS": str(settings.batch_chunk_rows),
        })
        fn = self.inference.function
        # Least privilege: read the models prefix; write and read back usage (one put per
        # call, duplicates); read rollups (usage and invoice routes: the rollups function
        # writes them) and tenants.
        self.models.bucket.grant_read(fn, f"{MODELS_PREFIX}/*")
        self.tables.usage.grant_read_write_data(fn)
        self.tables.rollups.grant_read_data(fn)
        self.tables.tenants.grant_read_data(fn)
        # batch jobs: submit (a job item, an execution, a HeadObject on the input) and
        # follow them; the chunk function bills each chunk as the inference function does
        self.batch.jobs.grant_read_write_data(fn)
        self.batch.state_machine.grant_start_execution(fn)
        self.batch.bucket.grant_read(fn, f"{TENANTS_PREFIX}/*")
        chunk = self.batch.function
        self.models.bucket.grant_read(chunk, f"{MODELS_PREFIX}/*")
        self.tables.usage.grant_read_write_data(chunk)
        self.tables.rollups.grant_read_data(chunk)
        self.rollups = RollupsFunction(self, "Rollups", settings=settings,
                                       usage=self.tables.usage, rollups=self.tables.rollups)
        self.operations = Operations(self, "Operations", settings=settings,
                                     api=self.inference.api, function=fn)

        outputs = {
            "ApiUrl": self.inference.api.url,
            "ModelsBucketName": self.models.bucket.bucket_name,
            "ModelStoreUrl": self.models.store_url,
            "UsageTableName": self.tables.usage.table_name,
            "RollupsTableName": self.tables.rollups.table_name,
            "TenantsTableName": self.tables.tenants.table_name,
            "FunctionName": fn.function_name,
            "RollupsFunctionName": self.rollups.function.function_name,
            "DashboardName": self.operations.dashboard.dashboard_name,
            "BatchBucketName": self.batch.bucket.bucket_name,
            "BatchStateMachineArn": self.batch.state_machine.state_machine_arn,
            "JobsTableName": self.batch.jobs.table_name,
        }
        for name, value in outputs.items():
            cdk.CfnOutput(self, name, value=value)
        self._suppressions()

    def _suppressions(self) -> None:
        """Each finding we accept, with why. Everything else cdk-nag reports fails tests."""
        NagSuppressions.add_resource_suppressions(self.inference.function, [
            *FUNCTION_SUPPRESSIONS,
            NagPackSuppression(
                id="AwsSolutions-IAM5",
                reason="grant_read on the models/ prefix and on the batch bucket's tenants/ "
                       "prefix (a job's input is checked at submit): objects are addressed by "
                       "key under those prefixes, and S3 read actions are listed as "
                       "GetObject*/List*; the jobs table's by-tenant index lists a tenant's "
                       "jobs (grant_read_write_data names the table's indexes as index/*)",
                applies_to=[*S3_READ_ACTIONS, MODELS_RESOURCE, BATCH_DATA_RESOURCE,
                            JOBS_INDEX_RESOURCE]),
        ], apply_to_children=True)
        NagSuppressions.add_resource_suppressions(self.batch.function, [
            *FUNCTION_SUPPRESSIONS,
            NagPackSuppression(
                id="AwsSolutions-IAM5",
                reason="the chunk function reads the models/ prefix and writes results under "
                       "the batch bucket's tenants/ prefix (grant_put lists s3:Abort* for "
                       "multipart uploads); the jobs table's index comes with "
                       "grant_read_write_data",
                applies_to=[*S3_READ_ACTIONS, "Action::s3:Abort*", MODELS_RESOURCE,
                            BATCH_DATA_RESOURCE, JOBS_INDEX_RESOURCE]),
        ], apply_to_children=True)
        NagSuppressions.add_resource_suppressions(self.batch.state_machine, [
            NagPackSuppression(
                id="AwsSolutions-IAM5",
                reason="what a Distributed Map needs, as CDK grants it: its child executions "
                       "(execution:<machine>:*), invoking the chunk function's versions "
                       "(<arn>:*), reading inputs and writing results anywhere in the batch "
                       "bucket (the API checks each job's keys against the tenant's prefix), "
                       "and X-Ray and log delivery, which have no resource-level permissions",
                applies_to=["Resource::*",
                            {"regex": "/^Resource::<BatchChunk.*\\.Arn>:\\*$/g"},
                            {"regex": "/^Resource::arn:<AWS::Partition>:s3:::<BatchData.*>/\\*$/g"},
                            {"regex": "/^Resource::arn:<AWS::Partition>:states:.*:execution:"
                                      ".*$/g"}]),
        ], apply_to_children=True)
        NagSuppressions.add_resource_suppressions(self.rollups.function, [
            *FUNCTION_SUPPRESSIONS,
            NagPackSuppression(
                id="AwsSolutions-IAM5",
                reason="dynamodb:ListStreams has no resource-level permissions (the event "
                       "source mapping's grant); every other action names the table or "
                       "its stream",
                applies_to=["Resource::*"]),
        ], apply_to_children=True)
        NagSuppressions.add_resource_suppressions(self.rollups.dead_letters, [
            NagPackSuppression(
                id="AwsSolutions-SQS3",
                reason="this queue is the dead-letter destination of the rollups event "
                       "source mapping; it needs none of its own"),
        ])
        NagSuppressions.add_resource_suppressions(self.models.access_logs, [
            NagPackSuppression(id="AwsSolutions-S1",
                               reason="this is the access-log bucket; logging it to itself "
                                      "would loop"),
        ])
        api = self.inference.api
        NagSuppressions.add_resource_suppressions(api, [
            NagPackSuppression(
                id="AwsSolutions-APIG2",
                reason="bodies are validated by the function against the model card, which "
                       "returns precise 4xx errors API Gateway models could not"),
            NagPackSuppression(
                id="AwsSolutions-APIG4",
                reason="tenants authenticate with API keys bound to usage plans; /health, "
                       "/docs and /openapi.json are public on purpose"),
            NagPackSuppression(
                id="AwsSolutions-COG4",
                reason="machine-to-machine API: API keys and usage plans, not Cognito users"),
            NagPackSuppression(
                id="AwsSolutions-APIG3",
                reason="a WAF web ACL is an account-level choice; attach one to the stage ARN "
                       "(see README)"),
            NagPackSuppression(
                id="AwsSolutions-IAM4",
                reason="API Gateway's CloudWatch role uses the AWS-managed push-to-logs "
                       "policy, the documented way to enable execution logs",
                applies_to=["Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                            "AmazonAPIGatewayPushToCloudWatchLogs"]),
        ], apply_to_children=True)
        # Custom-resource providers that CDK itself adds (bucket deployment, auto-delete).
        cdk_providers = [c for c in self.node.children
                         if c.node.id.startswith(CDK_PROVIDER_PREFIXES)]
        for provider in cdk_providers:
            NagSuppressions.add_resource_suppressions(provider, [
                NagPackSuppression(
                    id="AwsSolutions-IAM4",
                    reason="CDK-provided custom resources use the basic execution role for "
                           "their own logs",
                    applies_to=["Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                                "AWSLambdaBasicExecutionRole"]),
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason="CDK's BucketDeployment copies the bundled model store from the CDK "
                           "asset bucket into the models bucket: object wildcards on both"),
                NagPackSuppression(
                    id="AwsSolutions-L1",
                    reason="the runtime of CDK-provided custom-resource functions is CDK's"),
            ], apply_to_children=True)
