"""The inference function and the REST API in front of it, with one usage plan per plan
in ``functions/finmaas/plans.json``, and API Gateway's own error answers shaped like the
function's."""

from __future__ import annotations

import json
from dataclasses import dataclass

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct
from finmaas.plans import load_plans

from .bundling import FUNCTIONS, PipLocalBundling, source_hash
from .settings import StageSettings

ARCH = {"arm64": lambda_.Architecture.ARM_64, "x86_64": lambda_.Architecture.X86_64}
OPEN_PATHS = ("health", "docs", "openapi.json")
# the web console's pages and files: open like /docs; their data calls need the key
SAM_FUNCTION_ID = "InferenceFunction"
RETENTION = {1: "ONE_DAY", 3: "THREE_DAYS", 5: "FIVE_DAYS", 7: "ONE_WEEK", 14: "TWO_WEEKS",
             30: "ONE_MONTH", 60: "TWO_MONTHS", 90: "THREE_MONTHS", 180: "SIX_MONTHS",
             365: "ONE_YEAR", 731: "TWO_YEARS", 1827: "FIVE_YEARS", 3653: "TEN_YEARS"}


@dataclass(frozen=True)
class GatewayError:
    """An answer API Gateway gives without calling the function, in the API's error body.

    ``status`` None keeps API Gateway's own status (the DEFAULT_4XX/5XX fallbacks cover
    several response types with different statuses). ``message`` None passes API
    Gateway's own message (``$context.error.messageString``, which comes JSON-quoted).
    """

    type: apigw.ResponseType
    status: str | None
    code: str
    message: str | None
    retry_after: str | None = None

    def template(self) -> str:
        message = json.dumps(self.message) if self.message else "$context.error.messageString"
        code = json.dumps(self.code)
        return f'{{"error":{{"code":{code},"message":{message},"details":[]}}}}'

    def headers(self) -> dict[str, str]:
        # Values are mapping expressions: static values in single quotes.
        headers = {"content-type": "'application/json'", "x-request-id": "context.requestId"}
        if self.retry_after:
            headers["Retry-After"] = f"'{self.retry_after}'"
        return headers


# API Gateway cannot tell a missing x-api-key from a wrong one (both are INVALID_API_KEY),
# so both answer invalid_api_key. QUOTA_EXCEEDED has no Retry-After: a static header
# cannot count the seconds to the next month, so the message says when the quota resets.
GATEWAY_ERRORS = (
    GatewayError(apigw.ResponseType.INVALID_API_KEY, "401", "invalid_api_key",
                 "missing or invalid API key: send a valid key in the x-api-key header"),
    GatewayError(apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN, "404", "route_not_found",
                 "no such route: check the method and the path"),
    GatewayError(apigw.ResponseType.RESOURCE_NOT_FOUND, "404", "route_not_found",
                 "no such route: check the method and the path"),
    GatewayError(apigw.ResponseType.THROTTLED, "429", "rate_limited",
                 "rate limit exceeded: retry after the seconds in Retry-After",
                 retry_after="1"),
    GatewayError(apigw.ResponseType.QUOTA_EXCEEDED, "429", "quota_exceeded",
                 "the monthly request quota of your plan is used up; it resets on the first "
                 "day of next month (UTC)"),
    GatewayError(apigw.ResponseType.REQUEST_TOO_LARGE, "413", "body_too_large",
                 "the request is larger than API Gateway accepts (10 MB)"),
    GatewayError(apigw.ResponseType.INTEGRATION_TIMEOUT, "504", "upstream_timeout",
                 "the prediction service did not answer in time; retry"),
    GatewayError(apigw.ResponseType.DEFAULT_4_XX, None, "request_rejected", None),
    GatewayError(apigw.ResponseType.DEFAULT_5_XX, None, "gateway_error", None),
)


def retention(days: int) -> logs.RetentionDays:
    if days not in RETENTION:
        raise ValueError(f"log_retention_days must be one of {sorted(RETENTION)}")
    return getattr(logs.RetentionDays, RETENTION[days])


def function_code(settings: StageSettings) -> lambda_.Code:
    if settings.bundling == "skip":  # synth-only tests: the source, no dependencies
        return lambda_.Code.from_asset(str(FUNCTIONS), exclude=["**/__pycache__"])
    return lambda_.Code.from_asset(
        str(FUNCTIONS),
        asset_hash_type=cdk.AssetHashType.CUSTOM,
        asset_hash=source_hash(settings.architecture),
        bundling=cdk.BundlingOptions(
            # Only used if local bundling declined, which it never does: no Docker needed.
            image=lambda_.Runtime.PYTHON_3_12.bundling_image,
            local=PipLocalBundling(settings.architecture),
            command=["false"],
        ),
    )


class InferenceApi(Construct):
    def __init__(self, scope: Construct, id: str, *, settings: StageSettings,
                 environment: dict[str, str]) -> None:
        super().__init__(scope, id)
        self.log_group = logs.LogGroup(
            self, "FunctionLogs", retention=retention(settings.log_retention_days),
            removal_policy=cdk.RemovalPolicy.DESTROY)
        self.function = lambda_.Function(
            self, "Inference",
            description="FinMaaS inference API (FastAPI + Mangum + onnxruntime)",
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=ARCH[settings.architecture],
            handler="inference/handler.handler",
            code=function_code(settings),
            memory_size=settings.memory_mb,
            ephemeral_storage_size=cdk.Size.mebibytes(settings.ephemeral_storage_mb),
            timeout=cdk.Duration.seconds(settings.timeout_seconds),
            reserved_concurrent_executions=settings.reserved_concurrency,
            snap_start=lambda_.SnapStartConf.ON_PUBLISHED_VERSIONS if settings.snap_start
            else None,
            log_group=self.log_group,
            environment={
                **environment,
                "MAAS_STAGE": settings.stage,
                "MAAS_CACHE_DIR": "/tmp/finmaas-models",
                "MAAS_ORT_THREADS": str(settings.vcpus),
                "MAAS_USAGE_RETENTION_DAYS": str(settings.usage_retention_days),
                "POWERTOOLS_SERVICE_NAME": "finmaas",
                "POWERTOOLS_METRICS_NAMESPACE": "FinMaaS",
                "POWERTOOLS_LOG_LEVEL": "INFO",
            },
        )
        # A fixed logical id, so `sam local invoke -t cdk.out/... InferenceFunction` works.
        self.function.node.default_child.override_logical_id(  # type: ignore[union-attr]
            SAM_FUNCTION_ID)
        # API Gateway invokes the alias of the published version: SnapStart snapshots
        # published versions only, and a deploy moves the alias once the new one is ready.
        self.alias = self.function.add_alias(
            "live", provisioned_concurrent_executions=settings.provisioned_concurrency or None)
        target: lambda_.IFunction = self.alias
        self.target = target

        self.access_logs = logs.LogGroup(
            self, "AccessLogs", retention=retention(settings.log_retention_days),
            removal_policy=cdk.RemovalPolicy.DESTROY)
        integration = apigw.LambdaIntegration(target, proxy=True)
        self.api = apigw.RestApi(
            self, "Api",
            rest_api_name=f"finmaas-{settings.stage}",
            description="FinMaaS: financial models, paid per prediction",
            api_key_source_type=apigw.ApiKeySourceType.HEADER,
            # every body passes as bytes (base64 to the function, which Mangum decodes):
            # clients of V2's binary tensors send neither a binary Content-Type nor Accept
            binary_media_types=["*/*"],
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=cdk.RemovalPolicy.DESTROY,
            endpoint_types=[apigw.EndpointType.REGIONAL],
            deploy_options=apigw.StageOptions(
                stage_name=settings.stage,
                throttling_rate_limit=settings.stage_rate_limit,
                throttling_burst_limit=settings.stage_burst_limit,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=False, http_method=True, ip=True, protocol=True,
                    request_time=True, resource_path=True, response_length=True,
                    status=True, user=True),
                logging_level=apigw.MethodLoggingLevel.ERROR,
                metrics_enabled=True,
            ),
        )
        # Open: liveness and the API's own docs. Everything else needs a key.
        for path in OPEN_PATHS:
            self.api.root.add_resource(path).add_method(
                "GET", integration, api_key_required=False)
        console = self.api.root.add_resource("console")
        console.add_method("GET", integration, api_key_required=False)
        console.add_proxy(default_integration=integration, any_method=False).add_method(
            "GET", integration, api_key_required=False)
        for error in GATEWAY_ERRORS:
            self.api.add_gateway_response(
                f"Gateway{error.type.response_type}", type=error.type,
                status_code=error.status, response_headers=error.headers(),
                templates={"application/json": error.template()})
        v1 = self.api.root.add_resource("v1")
        v1.add_proxy(default_integration=integration, any_method=True,
                     default_method_options=apigw.MethodOptions(api_key_required=True))
        # Open Inference Protocol V2: server metadata and health open (as /health), the
        # models' metadata and infer behind the same keys and usage plans as /v1
        v2 = self.api.root.add_resource("v2")
        v2.add_method("GET", integration, api_key_required=False)
        v2.add_resource("health").add_proxy(
            default_integration=integration, any_method=False).add_method(
            "GET", integration, api_key_required=False)
        v2.add_resource("models").add_proxy(
            default_integration=integration, any_method=True,
            default_method_options=apigw.MethodOptions(api_key_required=True))

        self.usage_plans: dict[str, apigw.UsagePlan] = {}
        for name, plan in load_plans().items():
            self.usage_plans[name] = self.api.add_usage_plan(
                f"Plan{name.capitalize()}",
                name=f"finmaas-{settings.stage}-{name}",
                description=plan.description,
                throttle=apigw.ThrottleSettings(rate_limit=plan.rate_limit_rps,
                                                burst_limit=plan.burst),
                quota=apigw.QuotaSettings(limit=plan.quota_limit, period=apigw.Period.MONTH)
                if plan.quota_limit else None,
                api_stages=[apigw.UsagePlanPerApiStage(api=self.api,
                                                       stage=self.api.deployment_stage)],
            )
