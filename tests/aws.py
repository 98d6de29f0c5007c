"""DynamoDB tables as the CDK app defines them, for moto-backed tests."""

from __future__ import annotations

from datetime import date
from typing import Any

from finmaas.metering.base import DailyUsage
from finmaas.metering.dynamodb import DynamoDBMeteringStore
from finmaas.metering.stream import RollupApplier

USAGE, ROLLUPS, TENANTS = "finmaas-test-usage", "finmaas-test-rollups", "finmaas-test-tenants"
JOBS = "finmaas-test-jobs"


def create_tables(client: Any) -> None:
    for name, keys in ((USAGE, ["pk"]), (ROLLUPS, ["pk", "sk"]), (TENANTS, ["pk"])):
        stream = {"StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
                  } if name == USAGE else {}
        client.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": k, "KeyType": t}
                       for k, t in zip(keys, ["HASH", "RANGE"], strict=False)],
            AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in keys],
            BillingMode="PAY_PER_REQUEST",
            **stream,
        )


def create_jobs_table(client: Any, name: str = JOBS) -> None:
    """The batch jobs table: pk/sk, and the by-tenant index (newest first)."""
    client.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                   {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"}
                              for n in ("pk", "sk", "tenant", "created_at")],
        GlobalSecondaryIndexes=[{
            "IndexName": "by-tenant", "Projection": {"ProjectionType": "ALL"},
            "KeySchema": [{"AttributeName": "tenant", "KeyType": "HASH"},
                          {"AttributeName": "created_at", "KeyType": "RANGE"}]}])


def stream_records(client: Any) -> list[dict[str, Any]]:
    """Every record of the usage table's stream (moto keeps one shard), in order."""
    import boto3

    region = client.meta.region_name
    streams = boto3.client("dynamodbstreams", region_name=region,
                           endpoint_url=f"https://streams.dynamodb.{region}.amazonaws.com")
    arn = client.describe_table(TableName=USAGE)["Table"]["LatestStreamArn"]
    out = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")
        page = streams.get_records(ShardIterator=iterator["ShardIterator"], Limit=1000)
        out += page["Records"]
    return out


def stream_event(shard: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """What Lambda's event source mapping hands the rollups function (tumbling window)."""
    return {"Records": records, "shardId": shard, "eventSourceARN": "arn:stream",
            "window": {"start": "2026-10-30T00:00:00Z", "end": "2026-10-30T00:01:00Z"},
            "state": {}, "isFinalInvokeForWindow": False, "isWindowTerminatedEarly": False}


class StreamPump:
    """Plays Lambda's event source mapping: hands the rollups function the stream records
    it has not seen yet, in batches of one shard."""

    def __init__(self, client: Any, shards: int, *, batch: int = 100) -> None:
        self.client = client
        self.applier = RollupApplier(client, ROLLUPS, shards=shards)
        self.batch = batch
        self.seen = 0

    def drain(self) -> None:
        records = stream_records(self.client)[self.seen:]
        for start in range(0, len(records), self.batch):
            answer = self.applier.handle(stream_event("shardId-test-0",
                                                      records[start:start + self.batch]))
            assert answer["batchItemFailures"] == [], answer
        self.seen += len(records)


class StreamedMeteringStore(DynamoDBMeteringStore):
    """The DynamoDB store as AWS runs it: rollups follow the usage table's stream. Its
    reads first let the rollups function catch up, as a second's wait does in AWS."""

    def __init__(self, *args: Any, client: Any, shards: int = 32, **kwargs: Any) -> None:
        super().__init__(*args, client=client, shards=shards, **kwargs)
        self.pump = StreamPump(client, shards)

    def daily_usage(self, tenant: str, start: date, end: date) -> list[DailyUsage]:
        self.pump.drain()
        return super().daily_usage(tenant, start, end)
