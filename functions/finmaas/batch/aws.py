"""Batch jobs in AWS: the job starts a Step Functions execution (``infra/``'s state
machine: a Distributed Map reads the input object, batches its rows and invokes the chunk
function), and the chunk function scores one batch of rows.

The chunk function's event is what the Map's ItemBatcher sends: ``BatchInput`` (the
job, from the execution's input) and ``Items`` (``{"index": <0-based row>, "row":
<the row>}``, the row an object of strings for CSV, the parsed line for JSON Lines). Its
chunk id is its first row's index, the same on every retry and redrive of that batch.
It bills, counts, then writes ``<results>rows/chunk-<first index>.jsonl``, and returns
a summary (the ResultWriter's manifest holds them all).
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import ApiError
from ..metering import format_usd
from ..service import Caller, PredictionService
from .jobs import BatchJob, JobStore
from .locations import Location, parse_location
from .rows import chunk_rows, output_line


class ChunkRetryable(Exception):
    """A fault worth retrying (the usage store, S3): the state machine retries this name
    with backoff. Its class name is the ``Error`` Step Functions matches."""


def execution_input(job: BatchJob) -> dict[str, Any]:
    source = parse_location(job.input, "input")
    results = parse_location(job.results, "results")
    return {
        "job": {k: getattr(job, k) for k in ("job_id", "tenant", "key_id", "model",
                                             "version", "kind", "format", "results")},
        "input": {"bucket": source.bucket, "key": source.key},
        "results": {"bucket": results.bucket, "prefix": results.key},
    }


class StepFunctionsRunner:
    def __init__(self, state_machine_arn: str, *, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("stepfunctions")
        self.client = client
        self.arn = state_machine_arn

    def start(self, job: BatchJob) -> None:
        """One execution per job, named by it: starting it again with the same input is
        Step Functions' own no-op while it runs, and ExecutionAlreadyExists once it has
        ended (it was started: nothing to do)."""
        from botocore.exceptions import ClientError

        try:
            self.client.start_execution(stateMachineArn=self.arn, name=job.job_id,
                                        input=json.dumps(execution_input(job)))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
                raise


class S3Inputs:
    """Whether a job's input object exists (HeadObject), so a typo is a 404 at submit."""

    def __init__(self, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("s3")
        self.client = client

    def exists(self, loc: Location) -> bool:
        from botocore.exceptions import ClientError

        if loc.scheme != "s3":
            return False
        try:
            self.client.head_object(Bucket=loc.bucket, Key=loc.key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True


def _event_job(event: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    try:
        job = event["BatchInput"]["job"]
        items = event["Items"]
        if not isinstance(job, dict) or not isinstance(items, list) or not items or not all(
                isinstance(i, dict) and isinstance(i.get("index"), int) for i in items):
            raise TypeError
    except (KeyError, TypeError) as exc:
        raise ValueError("not a batch chunk event: expected BatchInput.job and Items of "
                         "{index, row} (the state machine's ItemBatcher)") from exc
    return job, items


class ChunkFunction:
    """The chunk function's work, with its clients injected (tests use moto). Results go
    to S3, or under a ``file://`` prefix when the event names one (``maas invoke batch``
    replays an event with no AWS at all)."""

    def __init__(self, service: PredictionService, jobs: JobStore, s3: Any = None) -> None:
        self.service = service
        self.jobs = jobs
        self._s3 = s3

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            import boto3

            self._s3 = boto3.client("s3")
        return self._s3

    def _write(self, results: Location, name: str, body: bytes) -> str:
        target = results.child(name)
        if target.scheme == "file":
            from .local import write_whole

            target.path.parent.mkdir(parents=True, exist_ok=True)
            write_whole(target.path, body)
        else:
            self.s3.put_object(Bucket=target.bucket, Key=target.key, Body=body,
                               ContentType="application/x-ndjson")
        return target.url

    def __call__(self, event: Any, context: Any = None) -> dict[str, Any]:
        job, items = _event_job(event)
        chunk_id = f"{items[0]['index']:010d}"
        caller = Caller(job["tenant"], "batch", job["key_id"], job["job_id"])
        try:
            card = self.service.registry.card(job["model"], job["version"])
            rows = chunk_rows(card, job["format"],
                              ((i["index"] + 1, i.get("row")) for i in items))
            result = self.service.score_chunk(caller, job["job_id"], chunk_id, job["model"],
                                              job["version"], job["kind"], rows)
        except ApiError as exc:
            if exc.status >= 500:
                raise ChunkRetryable(f"{exc.code}: {exc.message}") from exc
            raise
        results = parse_location(job["results"], "results")
        try:
            self.jobs.add_chunk(job["job_id"], chunk_id, result.good, result.failed,
                                result.amount)
            written = self._write(results, f"rows/chunk-{chunk_id}.jsonl",
                                  b"".join(map(output_line, result.lines)))
        except Exception as exc:
            if type(exc).__module__.split(".")[0] in ("botocore", "boto3"):
                raise ChunkRetryable(str(exc)) from exc
            raise
        return {"chunk": chunk_id, "rows": len(rows), "rows_done": result.good,
                "rows_failed": result.failed, "amount_usd": format_usd(result.amount),
                "billed_before": result.replayed, "output": written}


def build_chunk_handler() -> ChunkFunction:
    """The chunk function of ``functions/batch/handler.py``: stores from the environment,
    built once per container."""
    from ..config import Settings
    from ..metering import open_metering_store
    from ..registry import open_registry
    from . import open_job_store

    settings = Settings.from_env()
    service = PredictionService(open_registry(settings), open_metering_store(settings))
    return ChunkFunction(service, open_job_store(settings))
