"""The data plane's storage: the models bucket (with the bundled model_store deployed into
it) and the DynamoDB tables for usage records, rollups and tenants."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from constructs import Construct

from .settings import StageSettings

MODEL_STORE = Path(__file__).resolve().parents[2] / "model_store"
MODELS_PREFIX = "models"


class ModelBucket(Construct):
    """Versioned, encrypted, private, TLS-only, access-logged; bundled models under
    ``models/`` (the same layout as ``model_store/``)."""

    def __init__(self, scope: Construct, id: str, *, settings: StageSettings) -> None:
        super().__init__(scope, id)
        removal = cdk.RemovalPolicy.RETAIN if settings.is_prod else cdk.RemovalPolicy.DESTROY
        self.access_logs = s3.Bucket(
            self, "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            lifecycle_rules=[s3.LifecycleRule(expiration=cdk.Duration.days(365))],
            removal_policy=removal,
            auto_delete_objects=not settings.is_prod,
        )
        self.bucket = s3.Bucket(
            self, "Models",
            versioned=True,
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="models-bucket/",
            lifecycle_rules=[s3.LifecycleRule(
                noncurrent_version_expiration=cdk.Duration.days(90))],
            removal_policy=removal,
            auto_delete_objects=not settings.is_prod,
        )
        # prune=False: models published later with `maas models publish` survive deploys.
        self.deployment = s3deploy.BucketDeployment(
            self, "BundledModels",
            sources=[s3deploy.Source.asset(
                str(MODEL_STORE), exclude=["recipes", "recipes/*", "**/__pycache__"])],
            destination_bucket=self.bucket,
            destination_key_prefix=f"{MODELS_PREFIX}/",
            prune=False,
            memory_limit=512,
        )

    @property
    def store_url(self) -> str:
        return f"s3://{self.bucket.bucket_name}/{MODELS_PREFIX}"


class MeteringTables(Construct):
    """Usage records (TTL), rollups (kept) and tenants; on-demand, PITR, KMS-encrypted.

    Key schemas match ``finmaas.metering.dynamodb`` and ``finmaas.tenants.dynamodb``.
    """

    def __init__(self, scope: Construct, id: str, *, settings: StageSettings) -> None:
        super().__init__(scope, id)
        removal = cdk.RemovalPolicy.RETAIN if settings.is_prod else cdk.RemovalPolicy.DESTROY
        common = {
            "billing_mode": dynamodb.BillingMode.PAY_PER_REQUEST,
            "point_in_time_recovery_specification":
                dynamodb.PointInTimeRecoverySpecification(point_in_time_recovery_enabled=True),
            "encryption": dynamodb.TableEncryption.AWS_MANAGED,
            "removal_policy": removal,
            "deletion_protection": settings.is_prod,
        }
        pk = dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING)
        # the stream feeds the rollups function (new images: a record is never changed)
        self.usage = dynamodb.Table(self, "Usage", partition_key=pk,
                                    time_to_live_attribute="expires_at",
                                    stream=dynamodb.StreamViewType.NEW_IMAGE, **common)
        self.rollups = dynamodb.Table(
            self, "Rollups", partition_key=pk,
            sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
            **common)
        self.tenants = dynamodb.Table(self, "Tenants", partition_key=pk, **common)
