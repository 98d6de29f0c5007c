"""Batch jobs as AWS runs them, against moto: the chunk function with its results in S3,
its usage in the DynamoDB usage table and its progress in the jobs table, delivered twice
and retried after a fault; and /v1/batch-jobs starting a Step Functions execution."""

from __future__ import annotations

import copy
import json
from decimal import Decimal

import boto3
import pytest
from finmaas.batch.aws import ChunkFunction, ChunkRetryable, execution_input
from finmaas.batch.dynamodb import DynamoDBJobStore
from finmaas.batch.jobs import BatchJob
from finmaas.errors import ApiError
from finmaas.service import Caller, PredictionService
from moto import mock_aws

from tests.aws import (
    JOBS,
    ROLLUPS,
    TENANTS,
    USAGE,
    StreamedMeteringStore,
    create_jobs_table,
    create_tables,
)
from tests.conftest import MODEL_STORE, load_event

BUCKET = "finmaas-test-batch"
RESULTS = f"s3://{BUCKET}/tenants/demo/scores/bj-aws/"


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        ddb, s3 = boto3.client("dynamodb"), boto3.client("s3")
        create_tables(ddb)
        create_jobs_table(ddb)
        yield ddb, s3


@pytest.fixture
def chunk_function(aws, settings):
    from finmaas.registry import open_registry

    ddb, s3 = aws
    metering = StreamedMeteringStore(USAGE, ROLLUPS, client=ddb)
    service = PredictionService(open_registry(settings), metering)
    jobs = DynamoDBJobStore(JOBS, client=ddb)
    event = load_event("batch-chunk-credit-risk.json")
    job = event["BatchInput"]["job"]
    job["results"] = RESULTS
    jobs.create(BatchJob(
        job_id=job["job_id"], tenant=job["tenant"], key_id=job["key_id"],
        model=job["model"], version=job["version"], kind=job["kind"],
        input=f"s3://{BUCKET}/tenants/demo/book.csv", output=RESULTS.rsplit("bj-aws/")[0],
        results=RESULTS, format=job["format"], chunk_rows=1000))
    return ChunkFunction(service, jobs, s3), event


def usage_items(ddb) -> list[dict]:
    return ddb.scan(TableName=USAGE)["Items"]


def output_lines(s3) -> list[dict]:
    body = s3.get_object(Bucket=BUCKET, Key="tenants/demo/scores/bj-aws/rows/"
                                            "chunk-0000000000.jsonl")["Body"].read()
    return [json.loads(line) for line in body.splitlines()]


def test_a_chunk_delivered_twice_is_billed_and_counted_once(aws, chunk_function):
    ddb, s3 = aws
    s3.create_bucket(Bucket=BUCKET)
    fn, event = chunk_function
    items = event["Items"]
    first = fn(copy.deepcopy(event))
    second = fn(copy.deepcopy(event))  # Step Functions retried a chunk that had finished
    assert (first["billed_before"], second["billed_before"]) == (False, True)
    assert {k: v for k, v in first.items() if k != "billed_before"} == {
        k: v for k, v in second.items() if k != "billed_before"}
    lines = output_lines(s3)
    assert [line["row_id"] for line in lines] == [i["row"]["row_id"] for i in items]
    good = sum("prediction" in line for line in lines)
    assert good == first["rows_done"] and len(lines) - good == first["rows_failed"] >= 1
    assert first["output"] == f"{RESULTS}rows/chunk-0000000000.jsonl"

    records = usage_items(ddb)
    assert len(records) == 1  # one record for the chunk, whatever was redelivered
    assert int(records[0]["units"]["N"]) == good
    assert records[0]["kind"]["S"] == "batch_prediction"
    job = DynamoDBJobStore(JOBS, client=ddb).get(event["BatchInput"]["job"]["job_id"])
    assert (job.chunks, job.rows_done, job.rows_failed) == (1, good, len(lines) - good)
    assert job.amount == Decimal("0.0005") * good
    assert first["amount_usd"] == "0.001"  # two good rows at the card's price


def test_a_chunk_whose_results_cannot_be_written_is_retryable_and_the_retry_bills_nothing_more(
        aws, chunk_function):
    ddb, s3 = aws
    fn, event = chunk_function  # the results bucket does not exist yet
    with pytest.raises(ChunkRetryable) as caught:
        fn(copy.deepcopy(event))
    assert "NoSuchBucket" in str(caught.value)
    assert len(usage_items(ddb)) == 1  # billed before the write failed

    s3.create_bucket(Bucket=BUCKET)
    again = fn(copy.deepcopy(event))  # the state machine's retry of ChunkRetryable
    assert again["billed_before"] is True
    assert len(usage_items(ddb)) == 1 and len(output_lines(s3)) == len(event["Items"])
    job = DynamoDBJobStore(JOBS, client=ddb).get(event["BatchInput"]["job"]["job_id"])
    assert job.chunks == 1 and job.rows_done == again["rows_done"]


def test_a_usage_store_fault_is_retryable_and_bills_nothing(aws, chunk_function):
    ddb, s3 = aws
    s3.create_bucket(Bucket=BUCKET)
    fn, event = chunk_function
    ddb.delete_table(TableName=USAGE)
    with pytest.raises(ChunkRetryable):
        fn(copy.deepcopy(event))
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
    assert DynamoDBJobStore(JOBS, client=ddb).get(
        event["BatchInput"]["job"]["job_id"]).chunks == 0


def test_an_event_that_is_not_a_chunk_is_refused_before_anything_runs(chunk_function):
    fn, event = chunk_function
    for broken in ({}, {"BatchInput": event["BatchInput"], "Items": []},
                   {"BatchInput": event["BatchInput"], "Items": [{"row": {}}]}):
        with pytest.raises(ValueError, match="not a batch chunk event"):
            fn(broken)


# -- /v1/batch-jobs in AWS mode: a Step Functions execution per job ---------------------
@pytest.fixture
def aws_batch(aws, tmp_path):
    from finmaas.api.app import build_services
    from finmaas.config import Settings

    ddb, s3 = aws
    sfn = boto3.client("stepfunctions")
    arn = sfn.create_state_machine(
        name="finmaas-test-batch", roleArn="arn:aws:iam::123456789012:role/sfn",
        definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}),
    )["stateMachineArn"]
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="tenants/acme/book.csv", Body=b"row_id,age\n1,30\n")
    settings = Settings.from_env(env={
        "MAAS_HOME": str(tmp_path / "home"), "MAAS_MODEL_STORE": str(MODEL_STORE),
        "MAAS_USAGE_TABLE": USAGE, "MAAS_ROLLUPS_TABLE": ROLLUPS,
        "MAAS_TENANTS_TABLE": TENANTS, "MAAS_JOBS_TABLE": JOBS,
        "MAAS_BATCH_STATE_MACHINE": arn, "MAAS_BATCH_ROOTS": f"s3://{BUCKET}/tenants/"})
    services = build_services(settings, dynamodb=ddb, s3=s3, stepfunctions=sfn)
    return services, sfn, arn


ACME = Caller("acme", "standard", "key-acme", "req-1")


def test_a_job_submitted_in_aws_starts_one_execution_named_by_the_job(aws_batch):
    services, sfn, arn = aws_batch
    doc = {"model": "credit-risk", "input": f"s3://{BUCKET}/tenants/acme/book.csv",
           "output": f"s3://{BUCKET}/tenants/acme/scores/"}
    job, new = services.batch.submit(ACME, doc, "monthly-2026-12")
    again, new_again = services.batch.submit(ACME, doc, "monthly-2026-12")  # a retry
    assert (again.job_id, new, new_again) == (job.job_id, True, False)

    executions = sfn.list_executions(stateMachineArn=arn)["executions"]
    assert [e["name"] for e in executions] == [job.job_id]
    started = json.loads(sfn.describe_execution(
        executionArn=executions[0]["executionArn"])["input"])
    assert started == execution_input(job)
    assert started["input"] == {"bucket": BUCKET, "key": "tenants/acme/book.csv"}
    assert started["job"]["results"].startswith(f"s3://{BUCKET}/tenants/acme/scores/")
    assert (started["job"]["tenant"], started["job"]["version"]) == ("acme", "1")

    assert services.batch.get(ACME, job.job_id).status == "running"
    assert [j.job_id for j in services.batch.list(ACME)] == [job.job_id]
    other = Caller("globex", "standard", "key-globex", "req-2")
    assert services.batch.list(other) == []
    with pytest.raises(ApiError) as caught:
        services.batch.get(other, job.job_id)
    assert caught.value.status == 404


def test_a_missing_input_or_a_foreign_location_starts_no_execution(aws_batch):
    services, sfn, arn = aws_batch
    cases = [
        ({"input": f"s3://{BUCKET}/tenants/acme/nosuch.csv"}, 404, "input_not_found"),
        ({"input": f"s3://{BUCKET}/tenants/globex/book.csv"}, 403, "location_not_allowed"),
        ({"input": "s3://elsewhere/tenants/acme/book.csv"}, 403, "location_not_allowed"),
        ({"output": f"s3://{BUCKET}/tenants/globex/out/"}, 403, "location_not_allowed"),
    ]
    for change, status, code in cases:
        doc = {"model": "credit-risk", "input": f"s3://{BUCKET}/tenants/acme/book.csv",
               "output": f"s3://{BUCKET}/tenants/acme/scores/", **change}
        with pytest.raises(ApiError) as caught:
            services.batch.submit(ACME, doc)
        assert (caught.value.status, caught.value.code) == (status, code), change
    assert sfn.list_executions(stateMachineArn=arn)["executions"] == []
    assert services.batch.list(ACME) == []


def test_a_submit_that_died_before_starting_its_job_is_started_by_its_retry(aws_batch):
    """The process died between writing the job and starting its execution: the job
    says running and nothing runs. The client's retry with the same Idempotency-Key
    starts it, once."""
    services, sfn, arn = aws_batch
    doc = {"model": "credit-risk", "input": f"s3://{BUCKET}/tenants/acme/book.csv",
           "output": f"s3://{BUCKET}/tenants/acme/scores/"}
    runner = services.batch.runner
    start = runner.start

    def die(job):
        raise SystemExit("killed")  # not an error the submit handles: the process ends

    runner.start = die
    with pytest.raises(SystemExit):
        services.batch.submit(ACME, doc, "nightly-2026-12-06")
    job_id = services.batch.list(ACME)[0].job_id
    assert services.batch.get(ACME, job_id).status == "running"
    assert sfn.list_executions(stateMachineArn=arn)["executions"] == []

    runner.start = start
    for _ in range(2):  # the retry, and one more
        again, new = services.batch.submit(ACME, doc, "nightly-2026-12-06")
        assert (again.job_id, new) == (job_id, False)
    assert [e["name"] for e in sfn.list_executions(stateMachineArn=arn)["executions"]] == [
        job_id]
