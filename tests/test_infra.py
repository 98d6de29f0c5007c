"""The CDK stack, asserted on its synthesized template (bundling skipped: see
test_infra_bundle.py for the real Docker-free bundle)."""

from __future__ import annotations

import json

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Annotations, Capture, Match, Template
from finmaas.plans import load_plans

DATA_ACTION_PREFIXES = ("s3:", "dynamodb:", "kms:")


def synth(**context):
    from app import build_app  # infra/app.py, importable as the CDK app module

    app = cdk.App(context={"bundling": "skip", **context})
    _, stack = build_app(app)
    return stack, Template.from_stack(stack)


@pytest.fixture(scope="module")
def dev():
    return synth()


@pytest.fixture(scope="module")
def template(dev):
    return dev[1]


def test_models_bucket_is_versioned_encrypted_private_and_logged(template):
    template.has_resource_properties("AWS::S3::Bucket", {
        "VersioningConfiguration": {"Status": "Enabled"},
        "BucketEncryption": {"ServerSideEncryptionConfiguration": [
            {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
        "PublicAccessBlockConfiguration": {
            "BlockPublicAcls": True, "BlockPublicPolicy": True,
            "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
        "LoggingConfiguration": {"DestinationBucketName": Match.any_value(),
                                 "LogFilePrefix": "models-bucket/"},
    })


def test_every_bucket_denies_plain_http(template):
    policies = template.find_resources("AWS::S3::BucketPolicy")
    assert len(policies) == 3  # models, their access logs, batch data
    for policy in policies.values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert any(s["Effect"] == "Deny" and s["Condition"] == {
            "Bool": {"aws:SecureTransport": "false"}} for s in statements)


def test_bundled_model_store_is_deployed_under_models_without_pruning(template):
    template.has_resource_properties("Custom::CDKBucketDeployment", {
        "DestinationBucketKeyPrefix": "models/", "Prune": False})


def test_tables_are_on_demand_with_pitr_encryption_and_ttl_on_usage(template):
    tables = template.find_resources("AWS::DynamoDB::Table")
    assert len(tables) == 4  # usage, rollups, tenants, batch jobs
    for table in tables.values():
        props = table["Properties"]
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["PointInTimeRecoverySpecification"] == {
            "PointInTimeRecoveryEnabled": True}
        assert props["SSESpecification"] == {"SSEEnabled": True}
    template.has_resource_properties("AWS::DynamoDB::Table", {
        "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}]})
    template.has_resource_properties("AWS::DynamoDB::Table", {
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"},
                      {"AttributeName": "sk", "KeyType": "RANGE"}]})


def test_function_runtime_architecture_and_environment(template):
    env = Capture()
    template.has_resource_properties("AWS::Lambda::Function", {
        "Runtime": "python3.12",
        "Architectures": ["arm64"],
        "Handler": "inference/handler.handler",
        "MemorySize": 1769,
        "EphemeralStorage": {"Size": 512},
        "Timeout": 15,
        "LoggingConfig": Match.object_like({"LogGroup": Match.any_value()}),
        "Environment": {"Variables": env},
    })
    variables = env.as_object()
    assert {"MAAS_MODEL_STORE", "MAAS_USAGE_TABLE", "MAAS_ROLLUPS_TABLE",
            "MAAS_TENANTS_TABLE", "MAAS_STAGE", "MAAS_ORT_THREADS"} <= set(variables)
    assert variables["MAAS_STAGE"] == "dev" and variables["MAAS_ORT_THREADS"] == "1"
    assert "models" in json.dumps(variables["MAAS_MODEL_STORE"])


def test_snapstart_on_published_versions_behind_the_alias_api_gateway_invokes(template):
    template.has_resource_properties("AWS::Lambda::Function", {
        "Handler": "inference/handler.handler",
        "SnapStart": {"ApplyOn": "PublishedVersions"},
        "EphemeralStorage": {"Size": 512}})
    (alias_id, alias), = template.find_resources("AWS::Lambda::Alias").items()
    assert alias["Properties"]["Name"] == "live"
    assert "ProvisionedConcurrencyConfig" not in alias["Properties"]
    version = alias["Properties"]["FunctionVersion"]["Fn::GetAtt"][0]
    assert template.find_resources("AWS::Lambda::Version")[version]
    # every proxy integration calls the alias, not $LATEST
    methods = template.find_resources("AWS::ApiGateway::Method")
    uris = [json.dumps(m["Properties"]["Integration"]["Uri"]) for m in methods.values()
            if m["Properties"].get("Integration", {}).get("Type") == "AWS_PROXY"]
    assert uris and all(alias_id in uri for uri in uris)


def test_snapstart_refuses_what_it_cannot_combine_with():
    with pytest.raises(ValueError, match="provisioned concurrency"):
        synth(provisioned_concurrency="2")
    with pytest.raises(ValueError, match="512 MB"):
        synth(ephemeral_storage_mb="1024")


def test_context_parameters_size_the_function():
    _, t = synth(architecture="x86_64", memory_mb="3008", ephemeral_storage_mb="2048",
                 timeout_seconds="20", reserved_concurrency="50", provisioned_concurrency="2",
                 snap_start="false")
    t.has_resource_properties("AWS::Lambda::Function", {
        "Architectures": ["x86_64"], "MemorySize": 3008, "EphemeralStorage": {"Size": 2048},
        "Timeout": 20, "ReservedConcurrentExecutions": 50})
    t.has_resource_properties("AWS::Lambda::Alias", {
        "ProvisionedConcurrencyConfig": {"ProvisionedConcurrentExecutions": 2}})
    with pytest.raises(ValueError, match="architecture"):
        synth(architecture="sparc")


def test_every_route_but_the_open_ones_requires_an_api_key(template):
    methods = template.find_resources("AWS::ApiGateway::Method")
    keyed = [m["Properties"] for m in methods.values()
             if m["Properties"]["HttpMethod"] != "OPTIONS"]
    open_methods = [m for m in keyed if not m.get("ApiKeyRequired")]
    # /health, /docs, /openapi.json, /console, /console/*, /v2, /v2/health/*
    assert len(open_methods) == 7
    assert all(m["HttpMethod"] == "GET" for m in open_methods)
    template.has_resource_properties("AWS::ApiGateway::Method", {
        "HttpMethod": "ANY", "ApiKeyRequired": True})
    template.has_resource_properties("AWS::ApiGateway::RestApi", {
        "ApiKeySourceType": "HEADER", "BinaryMediaTypes": ["*/*"]})


def test_stage_has_throttling_access_logs_and_metrics(template):
    template.has_resource_properties("AWS::ApiGateway::Stage", {
        "StageName": "dev",
        "AccessLogSetting": {"DestinationArn": Match.any_value(), "Format": Match.any_value()},
        "MethodSettings": [Match.object_like({
            "ThrottlingRateLimit": 1000, "ThrottlingBurstLimit": 2000,
            "LoggingLevel": "ERROR", "MetricsEnabled": True})],
    })


def test_usage_plans_match_the_plans_file(template):
    plans = load_plans()
    found = template.find_resources("AWS::ApiGateway::UsagePlan")
    by_name = {p["Properties"]["UsagePlanName"]: p["Properties"] for p in found.values()}
    assert sorted(by_name) == sorted(f"finmaas-dev-{n}" for n in plans)
    for name, plan in plans.items():
        props = by_name[f"finmaas-dev-{name}"]
        assert props["Throttle"] == {"RateLimit": plan.rate_limit_rps, "BurstLimit": plan.burst}
        if plan.quota_limit:
            assert props["Quota"] == {"Limit": plan.quota_limit, "Period": "MONTH"}
        else:
            assert "Quota" not in props
        assert props["ApiStages"][0]["Stage"]


def test_grants_are_least_privilege_with_no_star_resource_on_data_actions(template):
    fn = template.find_resources("AWS::Lambda::Function",
                                 {"Properties": {"Handler": "inference/handler.handler"}})
    (role,) = [f["Properties"]["Role"]["Fn::GetAtt"][0] for f in fn.values()]
    policies = [p for p in template.find_resources("AWS::IAM::Policy").values()
                if {"Ref": role} in p["Properties"]["Roles"]]
    assert len(policies) == 1
    statements = policies[0]["Properties"]["PolicyDocument"]["Statement"]
    for st in statements:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        if any(a.startswith(DATA_ACTION_PREFIXES) for a in actions):
            assert "*" not in resources, st
    text = json.dumps(statements)
    assert "dynamodb:PutItem" in text and "dynamodb:Query" in text
    assert "/models/*" in text
    # tenants: read only
    tenants = [st for st in statements if "Tenants" in json.dumps(st["Resource"])]
    assert tenants and all(not any(a in json.dumps(st["Action"]) for a in
                                   ("PutItem", "UpdateItem", "DeleteItem")) for st in tenants)


def test_dashboard_alarms_and_log_retention(template):
    template.resource_count_is("AWS::CloudWatch::Dashboard", 1)
    alarms = template.find_resources("AWS::CloudWatch::Alarm")
    descriptions = " ".join(a["Properties"]["AlarmDescription"] for a in alarms.values())
    assert len(alarms) == 5
    assert "5xx" in descriptions and "p99" in descriptions and "usage records" in descriptions
    assert "rollups lag" in descriptions and "outlived the stream" in descriptions
    body = json.dumps(template.find_resources("AWS::CloudWatch::Dashboard"))
    for metric in ("ColdStart", "RowsPredicted", "MeteringFailures", "Throttles", "Latency",
                   "5XXError", "4XXError"):
        assert metric in body
    for group in template.find_resources("AWS::Logs::LogGroup").values():
        assert group["Properties"]["RetentionInDays"] == 30


def test_the_dashboard_shows_requests_latency_and_errors_per_model_version(template):
    (dashboard,) = template.find_resources("AWS::CloudWatch::Dashboard").values()
    parts = dashboard["Properties"]["DashboardBody"]["Fn::Join"][1]
    body = "".join(p for p in parts if isinstance(p, str)).replace('\\"', '"')
    for metric, schema in (("Requests", "model,service,version"),
                           ("Latency", "model,service,version"),
                           ("Errors", "model,service,status,version"),
                           ("RowsPredicted", "model,service,version")):
        assert f"SEARCH('{{FinMaaS,{schema}}} MetricName=\"{metric}\"'" in body, metric
    assert "per model version" in body


def test_rollups_follow_the_usage_tables_stream_off_the_hot_path(template):
    # the usage table streams new images to the rollups function
    template.has_resource_properties("AWS::DynamoDB::Table", {
        "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
        "StreamSpecification": {"StreamViewType": "NEW_IMAGE"}})
    template.has_resource_properties("AWS::Lambda::Function", {
        "Handler": "rollups/handler.handler", "Runtime": "python3.12",
        "Architectures": ["arm64"]})
    # a tumbling window (its events carry the shard id the checkpoint is keyed by),
    # partial batch failures, one invocation per shard, unlimited retries, a DLQ
    template.has_resource_properties("AWS::Lambda::EventSourceMapping", {
        "StartingPosition": "TRIM_HORIZON", "BatchSize": 100, "TumblingWindowInSeconds": 60,
        "FunctionResponseTypes": ["ReportBatchItemFailures"], "ParallelizationFactor": 1,
        "DestinationConfig": {"OnFailure": {"Destination": Match.any_value()}}})
    (mapping,) = template.find_resources("AWS::Lambda::EventSourceMapping").values()
    assert "MaximumRetryAttempts" not in mapping["Properties"]
    # the inference function writes usage but only reads rollups
    (fn,) = template.find_resources("AWS::Lambda::Function",
                                    {"Properties": {"Handler": "inference/handler.handler"}})
    role = template.find_resources("AWS::Lambda::Function")[fn]["Properties"]["Role"][
        "Fn::GetAtt"][0]
    (policy,) = [p for p in template.find_resources("AWS::IAM::Policy").values()
                 if {"Ref": role} in p["Properties"]["Roles"]]
    rollups_table = next(rid for rid, t in template.find_resources(
        "AWS::DynamoDB::Table").items() if "StreamSpecification" not in t["Properties"]
        and len(t["Properties"]["KeySchema"]) == 2)  # the one keyed by pk and sk
    on_rollups = [st for st in policy["Properties"]["PolicyDocument"]["Statement"]
                  if rollups_table in json.dumps(st["Resource"])]
    assert on_rollups, "the inference function cannot read the rollups"
    actions = json.dumps([st["Action"] for st in on_rollups])
    assert "dynamodb:Query" in actions
    assert "PutItem" not in actions and "UpdateItem" not in actions and "Write" not in actions
    # every body reaches the function as bytes: V2's binary tensors survive the gateway
    template.has_resource_properties("AWS::ApiGateway::RestApi",
                                     {"BinaryMediaTypes": ["*/*"]})


def test_the_console_is_open_like_the_docs_and_its_data_is_not(template):
    resources = template.find_resources("AWS::ApiGateway::Resource")
    parts = {rid: r["Properties"]["PathPart"] for rid, r in resources.items()}
    console = next(rid for rid, part in parts.items() if part == "console")
    proxy = next(rid for rid, r in resources.items() if r["Properties"]["PathPart"] ==
                 "{proxy+}" and r["Properties"]["ParentId"] == {"Ref": console})
    methods = template.find_resources("AWS::ApiGateway::Method")
    for rid in (console, proxy):
        (method,) = [m["Properties"] for m in methods.values()
                     if m["Properties"]["ResourceId"] == {"Ref": rid}]
        assert method["HttpMethod"] == "GET" and method["ApiKeyRequired"] is False
    # the data the console shows comes from /v1, which needs the key
    v1 = next(rid for rid, part in parts.items() if part == "v1")
    v1_proxy = next(rid for rid, r in resources.items() if r["Properties"]["PathPart"] ==
                    "{proxy+}" and r["Properties"]["ParentId"] == {"Ref": v1})
    assert all(m["Properties"]["ApiKeyRequired"] for m in methods.values()
               if m["Properties"]["ResourceId"] == {"Ref": v1_proxy})


def test_v2_models_are_behind_the_same_keys_and_usage_plans_as_v1(template):
    resources = template.find_resources("AWS::ApiGateway::Resource")

    def child(parent: str | None, part: str) -> str:
        return next(rid for rid, r in resources.items() if r["Properties"]["PathPart"] == part
                    and (parent is None or r["Properties"]["ParentId"] == {"Ref": parent}))

    models_proxy = child(child(child(None, "v2"), "models"), "{proxy+}")
    methods = [m["Properties"] for m in template.find_resources(
        "AWS::ApiGateway::Method").values()
        if m["Properties"]["ResourceId"] == {"Ref": models_proxy}]
    assert methods and all(m["ApiKeyRequired"] for m in methods)
    assert {m["HttpMethod"] for m in methods} == {"ANY"}
    # one stage, so the usage plans that meter /v1 meter /v2 too
    template.resource_count_is("AWS::ApiGateway::Stage", 1)


def test_outputs_name_the_api_bucket_and_tables(template):
    outputs = template.find_outputs("*")
    assert {"ApiUrl", "ModelsBucketName", "UsageTableName", "RollupsTableName",
            "TenantsTableName", "FunctionName"} <= set(outputs)


def test_prod_retains_data_and_dev_does_not(template):
    _, prod = synth(stage="prod")
    for t, policy in ((prod, "Retain"), (template, "Delete")):
        for kind in ("AWS::DynamoDB::Table", "AWS::S3::Bucket"):
            for resource in t.find_resources(kind).values():
                assert resource["DeletionPolicy"] == policy
    prod.has_resource_properties("AWS::DynamoDB::Table", {"DeletionProtectionEnabled": True})
    prod.has_resource_properties("AWS::ApiGateway::UsagePlan",
                                 {"UsagePlanName": "finmaas-prod-free"})


def test_cdk_nag_reports_no_unsuppressed_finding(dev):
    stack, _ = dev
    errors = Annotations.from_stack(stack).find_error(
        "*", Match.string_like_regexp("AwsSolutions-.*"))
    warnings = Annotations.from_stack(stack).find_warning(
        "*", Match.string_like_regexp("AwsSolutions-.*"))
    assert errors == [] and warnings == [], [e.entry.data for e in errors + warnings]


def test_every_nag_suppression_gives_a_reason(template):
    found = 0
    for resource in template.to_json()["Resources"].values():
        rules = resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])
        for rule in rules:
            found += 1
            assert len(rule["reason"]) > 20, rule
    assert found > 0


def test_cfn_lint_finds_no_errors(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from app import build_app

    app = cdk.App(context={"bundling": "skip"}, outdir=str(tmp_path))
    build_app(app)
    app.synth()
    templates = list(Path(tmp_path).glob("*.template.json"))
    assert templates
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    result = subprocess.run([str(cfn_lint), *map(str, templates)], capture_output=True,
                            text=True)
    # cfn-lint's exit code is a bit mask: 2 = errors, 4 = warnings, 8 = informational
    assert result.returncode & 2 == 0, result.stdout


def test_function_has_the_stable_logical_id_sam_users_pass(template):
    functions = template.find_resources("AWS::Lambda::Function",
                                        {"Properties": {"Handler": "inference/handler.handler"}})
    assert list(functions) == ["InferenceFunction"]


# -- API Gateway's own answers (gateway responses) --------------------------------------
# response type -> (status it answers with, error code); None keeps API Gateway's status.
GATEWAY_ERRORS = {
    "INVALID_API_KEY": ("401", "invalid_api_key"),
    "MISSING_AUTHENTICATION_TOKEN": ("404", "route_not_found"),
    "RESOURCE_NOT_FOUND": ("404", "route_not_found"),
    "THROTTLED": ("429", "rate_limited"),
    "QUOTA_EXCEEDED": ("429", "quota_exceeded"),
    "REQUEST_TOO_LARGE": ("413", "body_too_large"),
    "INTEGRATION_TIMEOUT": ("504", "upstream_timeout"),
    "DEFAULT_4XX": (None, "request_rejected"),
    "DEFAULT_5XX": (None, "gateway_error"),
}


def rendered(template_text: str) -> dict:
    """A gateway response template as a client receives it: API Gateway substitutes
    ``$context`` variables (``messageString`` comes already quoted)."""
    import re

    text = template_text.replace("$context.error.messageString", '"Forbidden"')
    return json.loads(re.sub(r"\$context\.[A-Za-z.]+", "x", text))


@pytest.mark.parametrize(("response_type", "status", "code"),
                         [(t, s, c) for t, (s, c) in GATEWAY_ERRORS.items()])
def test_gateway_responses_answer_the_api_error_body(template, response_type, status, code):
    body = Capture()
    template.has_resource_properties("AWS::ApiGateway::GatewayResponse", {
        "ResponseType": response_type,
        "StatusCode": status if status else Match.absent(),
        "ResponseParameters": Match.object_like({
            "gatewayresponse.header.content-type": "'application/json'",
            "gatewayresponse.header.x-request-id": "context.requestId",
        }),
        "ResponseTemplates": {"application/json": body},
    })
    error = rendered(body.as_string())["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code and error["message"] and error["details"] == []


def test_throttling_tells_the_client_when_to_retry(template):
    template.has_resource_properties("AWS::ApiGateway::GatewayResponse", {
        "ResponseType": "THROTTLED",
        "ResponseParameters": Match.object_like({"gatewayresponse.header.Retry-After": "'1'"}),
    })


def test_quota_exceeded_says_when_the_quota_resets(template):
    # A static header cannot count the seconds to the next month, so the message says it.
    body = Capture()
    template.has_resource_properties("AWS::ApiGateway::GatewayResponse", {
        "ResponseType": "QUOTA_EXCEEDED",
        "ResponseParameters": Match.not_(Match.object_like(
            {"gatewayresponse.header.Retry-After": Match.any_value()})),
        "ResponseTemplates": {"application/json": body},
    })
    assert "month" in rendered(body.as_string())["error"]["message"]


def test_every_gateway_response_is_json_with_a_request_id(template):
    responses = template.find_resources("AWS::ApiGateway::GatewayResponse")
    assert {r["Properties"]["ResponseType"] for r in responses.values()} == set(GATEWAY_ERRORS)
    for resource in responses.values():
        props = resource["Properties"]
        assert list(props["ResponseTemplates"]) == ["application/json"]
        assert set(rendered(props["ResponseTemplates"]["application/json"])) == {"error"}
