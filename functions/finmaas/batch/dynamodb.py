"""Batch jobs in DynamoDB: one table keyed ``pk``/``sk``.

- the job: ``pk = JOB#<id>``, ``sk = JOB``, with its counters (the state machine's last
  step sets its status the same way ``finish`` does);
- a marker per counted chunk: ``pk = JOB#<id>``, ``sk = CHUNK#<chunk id>``, put in the
  same transaction that adds the chunk to the counters, on condition that it is new;
- the ``by-tenant`` index (``tenant``, ``created_at``), which only job items populate,
  lists a tenant's jobs.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from ..metering.base import from_nanos, to_nanos
from .jobs import LIST_LIMIT, BatchJob, JobStore, now_iso

TENANT_INDEX = "by-tenant"
JOB_SK = "JOB"
_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


def job_key(job_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"JOB#{job_id}"}, "sk": {"S": JOB_SK}}


class DynamoDBJobStore(JobStore):
    def __init__(self, table: str, *, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("dynamodb")
        self.client = client
        self.table = table

    def create(self, job: BatchJob) -> None:
        doc = {k: v for k, v in vars(job).items() if k != "amount" and v is not None}
        item = {**job_key(job.job_id), **{k: _SERIALIZER.serialize(v) for k, v in doc.items()},
                "amount_nanos": {"N": str(to_nanos(job.amount))}}
        self.client.put_item(TableName=self.table, Item=item,
                             ConditionExpression="attribute_not_exists(pk)")

    @staticmethod
    def _job(item: dict[str, Any]) -> BatchJob:
        doc = {k: _DESERIALIZER.deserialize(v) for k, v in item.items()
               if k not in ("pk", "sk")}
        amount = from_nanos(int(doc.pop("amount_nanos", 0)))
        ints = ("chunk_rows", "chunks", "rows_done", "rows_failed")
        return BatchJob(**{k: int(v) if k in ints else v for k, v in doc.items()},
                        amount=amount)

    def get(self, job_id: str) -> BatchJob | None:
        item = self.client.get_item(TableName=self.table, Key=job_key(job_id),
                                    ConsistentRead=True).get("Item")
        return self._job(item) if item else None

    def list_for(self, tenant: str, limit: int = LIST_LIMIT) -> list[BatchJob]:
        page = self.client.query(
            TableName=self.table, IndexName=TENANT_INDEX,
            KeyConditionExpression="tenant = :t",
            ExpressionAttributeValues={":t": {"S": tenant}},
            ScanIndexForward=False, Limit=limit)
        return [self._job(item) for item in page.get("Items", [])]

    def add_chunk(self, job_id: str, chunk_id: str, rows_done: int, rows_failed: int,
                  amount: Decimal) -> bool:
        from botocore.exceptions import ClientError

        marker = {"pk": {"S": f"JOB#{job_id}"}, "sk": {"S": f"CHUNK#{chunk_id}"}}
        try:
            self.client.transact_write_items(TransactItems=[
                {"Put": {"TableName": self.table, "Item": marker,
                         "ConditionExpression": "attribute_not_exists(pk)"}},
                {"Update": {
                    "TableName": self.table, "Key": job_key(job_id),
                    "UpdateExpression": "ADD chunks :one, rows_done :d, rows_failed :f, "
                                        "amount_nanos :a SET updated_at = :u",
                    "ConditionExpression": "attribute_exists(pk)",
                    "ExpressionAttributeValues": {
                        ":one": {"N": "1"}, ":d": {"N": str(rows_done)},
                        ":f": {"N": str(rows_failed)}, ":a": {"N": str(to_nanos(amount))},
                        ":u": {"S": now_iso()}}}},
            ])
        except ClientError as exc:
            reasons = exc.response.get("CancellationReasons") or []
            if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                return False  # counted by an earlier attempt
            raise
        return True

    def finish(self, job_id: str, status: str, error: str | None = None) -> None:
        self.check_status(status)
        values = {":s": {"S": status}, ":u": {"S": now_iso()}}
        expression = "SET #s = :s, updated_at = :u"
        if error is not None:
            values[":e"] = {"S": error}
            expression += ", #e = :e"
        self.client.update_item(
            TableName=self.table, Key=job_key(job_id), UpdateExpression=expression,
            ExpressionAttributeNames={"#s": "status", **({"#e": "error"} if error else {})},
            ExpressionAttributeValues=values)
