"""Rollups from the usage table's stream: off the hot path, exactly once.

The usage table's stream (new images) feeds the ``rollups`` function through a Lambda
event source mapping with a tumbling window, which is what puts the stream shard's id in
each event. A shard's records arrive in order; redeliveries (a crash, a timeout, a lost
response) may repeat them and may cut the batch differently.

Exactly once rests on one checkpoint per stream shard, in the rollups table
(``pk = stream#<shard id>``, ``sk = checkpoint``): the sequence number of the last record
applied. A batch skips what the checkpoint covers, then applies the rest in order, in
chunks: each chunk is one ``TransactWriteItems`` that adds the chunk's counts, summed per
rollup item, and moves the checkpoint from the value it read to the chunk's last
sequence number. Either all of a chunk counts and the checkpoint says so, or none of it.
A chunk that cannot be written is reported as the batch's first failed item
(``batchItemFailures``), so Lambda retries from it and never from before it.

A chunk of ``B`` records that all roll into one day, model and version is 2 items, 4 WRU
for ``B`` calls. Rollups of one stream shard go to one rollup shard (a hash of the shard
id), so concurrent shards seldom contend for an item.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .base import UsageRecord
from .dynamodb import (
    RETRIABLE,
    ROLLUP_MARK,
    DynamoDBMeteringStore,
    rollup_increment,
    rollup_pk,
    rollup_sort_key,
)

log = logging.getLogger("finmaas.rollups")
MAX_ITEMS = 100  # TransactWriteItems' limit: the checkpoint and 99 rollup items
REREADS = 5  # a checkpoint that keeps moving under us: hand the batch back to Lambda
SEQUENCE_WIDTH = 48  # sequence numbers are decimal strings; padded, they sort as numbers
RETRIES = 4


class CheckpointMoved(Exception):
    """The checkpoint is not where this invocation read it: most often our own earlier
    attempt at the same chunk was written though its answer was lost. Re-read it."""


@dataclass
class Counts:
    """What a chunk adds to one rollup item."""

    first: UsageRecord  # names the item (tenant, day, model, version, kind)
    requests: int = 0
    units: int = 0
    amount: Decimal = Decimal(0)

    def add(self, usage: UsageRecord) -> None:
        self.requests += 1
        self.units += usage.units
        self.amount += usage.amount


@dataclass(frozen=True)
class StreamRecord:
    sequence: int
    raw_sequence: str  # as the stream wrote it: the batchItemFailures identifier
    usage: UsageRecord | None  # None: not a new usage record (a TTL removal, say)


def parse_records(event: dict[str, Any]) -> list[StreamRecord]:
    """The batch's records in order. Only a new usage record written to be rolled up from
    the stream counts; an image that cannot be read is logged with its key and skipped
    (it stays in the usage table), rather than stalling the shard for a day."""
    out = []
    for record in event.get("Records") or []:
        body = record["dynamodb"]
        image = body.get("NewImage") if record.get("eventName") == "INSERT" else None
        usage = None
        if image and ROLLUP_MARK in image:
            try:
                usage = DynamoDBMeteringStore.parse(image)
            except (KeyError, ValueError, TypeError, StopIteration, ArithmeticError) as exc:
                log.error("a usage record's image cannot be read; not rolled up",
                          extra={"sequence": body.get("SequenceNumber"),
                                 "pk": (image.get("pk") or {}).get("S"), "error": repr(exc)})
        out.append(StreamRecord(int(body["SequenceNumber"]), body["SequenceNumber"], usage))
    return sorted(out, key=lambda r: r.sequence)


def _padded(sequence: int) -> str:
    return f"{sequence:0{SEQUENCE_WIDTH}d}"


class RollupApplier:
    def __init__(self, client: Any, rollups_table: str, *, shards: int = 32) -> None:
        self.client = client
        self.table = rollups_table
        self.shards = shards

    def rollup_shard(self, stream_shard: str) -> int:
        return int(hashlib.sha256(stream_shard.encode()).hexdigest()[:8], 16) % self.shards

    def _checkpoint_key(self, stream_shard: str) -> dict[str, Any]:
        return {"pk": {"S": f"stream#{stream_shard}"}, "sk": {"S": "checkpoint"}}

    def checkpoint(self, stream_shard: str) -> str | None:
        """The stored sequence number of the last record applied, as stored."""
        item = self.client.get_item(TableName=self.table, ConsistentRead=True,
                                    Key=self._checkpoint_key(stream_shard)).get("Item")
        return item["sequence"]["S"] if item else None

    def handle(self, event: dict[str, Any]) -> dict[str, Any]:
        """The function's answer to one stream event: the tumbling window's (unused) state
        and the first record not applied, if any."""
        shard = event.get("shardId")
        if not isinstance(shard, str) or not shard:
            raise ValueError("a stream event without shardId: the event source mapping "
                             "needs a tumbling window (TumblingWindowInSeconds)")
        records = parse_records(event)
        failed = self.apply(shard, records)
        return {"state": {}, "batchItemFailures": [] if failed is None else [
            {"itemIdentifier": failed.raw_sequence}]}

    def apply(self, shard: str, records: list[StreamRecord]) -> StreamRecord | None:
        """Apply what the checkpoint does not cover; the first record not applied, or
        None when all are. A chunk whose write succeeded but whose answer was lost finds
        the checkpoint already moved: re-reading it skips what that write applied."""
        todo: list[StreamRecord] = []
        for _ in range(REREADS):
            stored = self.checkpoint(shard)
            done = int(stored) if stored is not None else None
            todo = [r for r in records if done is None or r.sequence > done]
            try:
                return self._apply_chunks(shard, stored, todo)
            except CheckpointMoved:
                log.info("checkpoint not where it was read; re-reading",
                         extra={"shard": shard})
        return todo[0] if todo else None

    def _apply_chunks(self, shard: str, stored: str | None, todo: list[StreamRecord]
                      ) -> StreamRecord | None:
        start = 0
        while start < len(todo):
            end, totals = self._chunk(shard, todo, start)
            if not totals:  # nothing to count (removals): seen again, it counts nothing
                start = end
                continue
            last = _padded(todo[end - 1].sequence)
            if not self._write(shard, stored, last, totals):
                return todo[start]
            stored, start = last, end
        return None

    def _chunk(self, shard: str, todo: list[StreamRecord], start: int
               ) -> tuple[int, dict[tuple[str, str], Counts]]:
        """The longest run of records from ``start`` whose rollups fit one transaction,
        and their counts per rollup item (keyed as the rollups table keys them)."""
        totals: dict[tuple[str, str], Counts] = {}
        rollup_shard = self.rollup_shard(shard)
        end = start
        while end < len(todo):
            usage = todo[end].usage
            if usage is not None:
                key = (rollup_pk(usage, rollup_shard), rollup_sort_key(usage))
                if key not in totals and len(totals) == MAX_ITEMS - 1:
                    break
                totals.setdefault(key, Counts(usage)).add(usage)
            end += 1
        return end, totals

    def _write(self, shard: str, stored: str | None, last: str,
               totals: dict[tuple[str, str], Counts]) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        move = {"Update": {
            "TableName": self.table, "Key": self._checkpoint_key(shard),
            "UpdateExpression": "SET #s = :new",
            "ExpressionAttributeNames": {"#s": "sequence"},
            "ExpressionAttributeValues": {":new": {"S": last}},
            "ConditionExpression": "attribute_not_exists(#s)",
        }}
        if stored is not None:
            move["Update"]["ConditionExpression"] = "#s = :done"
            move["Update"]["ExpressionAttributeValues"][":done"] = {"S": stored}
        rollup_shard = self.rollup_shard(shard)
        items = [move] + [rollup_increment(self.table, c.first, rollup_shard, c.requests,
                                           c.units, c.amount) for c in totals.values()]
        for attempt in range(RETRIES + 1):
            try:
                self.client.transact_write_items(TransactItems=items)
                return True
            except ClientError as exc:
                error = exc.response.get("Error", {})
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    raise CheckpointMoved from exc
                retriable = error.get("Code") in RETRIABLE or any(
                    r in ("TransactionConflict", "ThrottlingError") for r in reasons)
                if not retriable or attempt == RETRIES:
                    log.error("rollup chunk not written; Lambda retries from it",
                              extra={"shard": shard, "error": str(error)})
                    return False
            except BotoCoreError as exc:
                if attempt == RETRIES:
                    log.error("rollups table unreachable", extra={"error": str(exc)})
                    return False
            time.sleep(random.uniform(0, 0.02 * 2**attempt))
        return False  # pragma: no cover


def build_handler(client: Any = None) -> Any:
    """The ``rollups`` function's handler, its table and client built once per container."""
    from ..config import Settings

    settings = Settings.from_env()
    if not settings.rollups_table:
        raise ValueError("MAAS_ROLLUPS_TABLE is not set: the rollups function reads the "
                         "usage table's stream into it")
    if client is None:
        import boto3

        client = boto3.client("dynamodb")
    applier = RollupApplier(client, settings.rollups_table, shards=settings.rollup_shards)

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return applier.handle(event)

    return handler
