"""Batch jobs in the CDK stack: the state machine (Distributed Map over the input object,
batched rows, the chunk function with retries, results written, the job's status set),
validated by an Amazon States Language validator, and IAM scoped to the job bucket."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from aws_cdk.assertions import Match

from tests.conftest import REPO
from tests.test_infra import synth

VALIDATOR = REPO / "node_modules" / ".bin" / "asl-validator"


@pytest.fixture(scope="module")
def stack_and_template():
    return synth(batch_chunk_rows="500", batch_max_concurrency="25")


@pytest.fixture(scope="module")
def template(stack_and_template):
    return stack_and_template[1]


def _resolved(value, placeholders: dict[str, str]):
    """The definition string with CloudFormation's tokens (Ref, GetAtt) replaced by
    plausible ARNs and names, as it would be after deployment."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(_resolved(p, placeholders) for p in parts)
    if "Ref" in value:
        ref = value["Ref"]
        return placeholders.get(ref, f"finmaas-dev-{ref.lower()}")
    if "Fn::GetAtt" in value:
        name = value["Fn::GetAtt"][0]
        return f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
    raise AssertionError(f"unexpected token {value}")


@pytest.fixture(scope="module")
def definition(template) -> dict:
    (machine,) = template.find_resources("AWS::StepFunctions::StateMachine").values()
    text = _resolved(machine["Properties"]["DefinitionString"],
                     {"AWS::Partition": "aws", "AWS::Region": "us-east-1",
                      "AWS::AccountId": "123456789012", "AWS::URLSuffix": "amazonaws.com"})
    return json.loads(text)


def _maps(definition: dict) -> dict[str, dict]:
    return {name: state for name, state in definition["States"].items()
            if state["Type"] == "Map"}


def test_the_definition_is_valid_amazon_states_language(definition, tmp_path: Path):
    path = tmp_path / "batch.asl.json"
    path.write_text(json.dumps(definition))
    run = subprocess.run([str(VALIDATOR), "--json-path", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "✓" in run.stdout or "valid" in run.stdout.lower(), run.stdout
    broken = dict(definition, StartAt="NoSuchState")  # the validator can say no
    path.write_text(json.dumps(broken))
    assert subprocess.run([str(VALIDATOR), "--json-path", str(path)], capture_output=True,
                          timeout=60).returncode != 0


def test_a_distributed_map_per_input_format_reads_batches_and_writes(definition):
    maps = _maps(definition)
    readers = {}
    for state in maps.values():
        assert state["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
        reader = state["ItemReader"]
        assert reader["Resource"] == "arn:aws:states:::s3:getObject"
        assert reader["Parameters"]["Key.$"] == "$.input.key"
        readers[reader["ReaderConfig"]["InputType"]] = reader["ReaderConfig"]
        assert state["ItemBatcher"]["MaxItemsPerBatch"] == 500  # -c batch_chunk_rows
        # under Step Functions' 256 KiB payload limit, whatever the rows' width
        assert state["ItemBatcher"]["MaxInputBytesPerBatch"] == 240_000 < 256 * 1024
        assert state["ItemBatcher"]["BatchInput"] == {"job.$": "$.job"}
        assert state["MaxConcurrency"] == 25  # -c batch_max_concurrency
        assert state["ItemSelector"] == {"index.$": "$$.Map.Item.Index",
                                         "row.$": "$$.Map.Item.Value"}
        assert state["ResultWriter"]["Resource"] == "arn:aws:states:::s3:putObject"
        assert state["ResultWriter"]["Parameters"]["Prefix.$"] == "$.results.prefix"
        # no chunk may fail (a bad row fails alone, inside its chunk): 0 is ASL's default
        assert state.get("ToleratedFailurePercentage", 0) == 0
        assert "ToleratedFailureCount" not in state
        assert state["Catch"][0]["Next"] == "MarkFailed"
        assert state["Next"] == "MarkSucceeded"
    assert readers == {"CSV": {"InputType": "CSV", "CSVHeaderLocation": "FIRST_ROW"},
                       "JSONL": {"InputType": "JSONL"}}
    choice = definition["States"][definition["StartAt"]]
    assert choice["Type"] == "Choice"
    assert choice["Choices"][0]["Variable"] == "$.job.format"


def test_chunks_are_retried_and_the_job_ends_with_its_status(definition):
    for state in _maps(definition).values():
        (task,) = state["ItemProcessor"]["States"].values()
        assert task["Type"] == "Task"
        retries = {tuple(r["ErrorEquals"]): r for r in task["Retry"]}
        assert retries[("ChunkRetryable",)]["MaxAttempts"] == 6
        assert ("States.Timeout", "States.TaskFailed") in retries
        assert any("Lambda.ServiceException" in r for r in retries)
    for name, status in (("MarkSucceeded", "succeeded"), ("MarkFailed", "failed")):
        state = definition["States"][name]
        assert state["Resource"] == "arn:aws:states:::dynamodb:updateItem"
        assert state["Parameters"]["ExpressionAttributeValues"][":s"] == {"S": status}
        assert state["Parameters"]["Key"]["sk"] == {"S": "JOB"}  # finmaas.batch.dynamodb
    assert definition["States"]["MarkFailed"]["Next"] == "JobFailed"


def test_the_state_machine_logs_and_traces_without_row_data(template):
    template.has_resource_properties("AWS::StepFunctions::StateMachine", {
        "TracingConfiguration": {"Enabled": True},
        "LoggingConfiguration": Match.object_like({"Level": "ALL",
                                                   "IncludeExecutionData": False})})


def test_the_chunk_function_writes_only_under_tenants_and_reads_only_models(template):
    policies = template.find_resources("AWS::IAM::Policy")
    (chunk,) = [p for name, p in policies.items() if name.startswith("BatchChunkServiceRole")]
    s3_statements = [s for s in chunk["Properties"]["PolicyDocument"]["Statement"]
                     if any(a.startswith("s3:") for a in _list(s["Action"]))]
    resources = [json.dumps(s["Resource"]) for s in s3_statements]
    assert any("/tenants/*" in r for r in resources)
    assert any("/models/*" in r for r in resources)
    for statement, resource in zip(s3_statements, resources, strict=True):
        writes = [a for a in _list(statement["Action"]) if a.startswith("s3:Put")]
        if writes:
            assert "/tenants/*" in resource and "Models" not in resource


def test_the_api_starts_jobs_and_is_told_where_tenants_may_read_and_write(template):
    template.has_resource_properties("AWS::Lambda::Function", {
        "Handler": "inference/handler.handler",
        "Environment": {"Variables": Match.object_like({
            "MAAS_JOBS_TABLE": Match.any_value(),
            "MAAS_BATCH_STATE_MACHINE": Match.any_value(),
            "MAAS_BATCH_CHUNK_ROWS": "500",
            "MAAS_BATCH_ROOTS": {"Fn::Join": ["", ["s3://", Match.any_value(),
                                                   "/tenants/"]]}})}})
    policies = template.find_resources("AWS::IAM::Policy")
    (api,) = [p for name, p in policies.items()
              if name.startswith("InferenceServiceRole")]
    actions = {a for s in api["Properties"]["PolicyDocument"]["Statement"]
               for a in _list(s["Action"])}
    assert "states:StartExecution" in actions
    template.has_resource_properties("AWS::Lambda::Function", {
        "Handler": "batch/handler.handler", "Timeout": 300,
        "Environment": {"Variables": Match.object_like({
            "MAAS_JOBS_TABLE": Match.any_value(), "MAAS_USAGE_TABLE": Match.any_value()})}})


def test_the_jobs_table_lists_a_tenants_jobs_by_an_index(template):
    template.has_resource_properties("AWS::DynamoDB::Table", {
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"},
                      {"AttributeName": "sk", "KeyType": "RANGE"}],
        "GlobalSecondaryIndexes": [Match.object_like({
            "IndexName": "by-tenant",
            "KeySchema": [{"AttributeName": "tenant", "KeyType": "HASH"},
                          {"AttributeName": "created_at", "KeyType": "RANGE"}]})]})


def _list(value):
    return value if isinstance(value, list) else [value]
