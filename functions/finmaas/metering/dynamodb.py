"""DynamoDB metering store, built for one busy tenant as much as for many small ones.

Two tables:

- usage (partition key ``pk`` = record id): one item per successful call. Record ids are
  unique per request, so writes spread over every partition whatever the tenant's rate.
  ``expires_at`` is the table's TTL attribute: raw records age out after the retention.
- rollups (``pk`` = ``<tenant>#<YYYY-MM>#<shard>``, ``sk`` = ``<day>#<model>#<version>``
  for predictions, ``...#<kind>`` for other kinds such as explanations and tokens):
  per-day counters, read by usage and invoices. The shard (``rollup_shards`` of them)
  spreads one tenant's counters over many partition keys.

The hot path is one write: a ``PutItem`` of the usage record (under 1 KB: 1 WRU),
conditional on the record id being new, so a retried request never bills twice; a
duplicate comes back in the same call (``ReturnValuesOnConditionCheckFailure``). If the
write fails the caller gets 503 and no prediction. The rollups follow from the usage
table's stream, off the hot path, exactly once: ``finmaas.metering.stream``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from .base import DailyUsage, MeteringStore, MeteringUnavailable, UsageRecord

RETRIES = 4
ROLLUP_MARK = "rollup"
RETRIABLE = ("ProvisionedThroughputExceededException", "ThrottlingException",
             "InternalServerError", "RequestLimitExceeded", "TransactionConflictException")


def _s(v: str) -> dict[str, str]:
    return {"S": v}


def _n(v: int | Decimal) -> dict[str, str]:
    return {"N": str(v)}


def rollup_sort_key(rec: UsageRecord) -> str:
    """Predictions keep the sort key they always had; other kinds add theirs."""
    base = f"{rec.day}#{rec.model}#{rec.version}"
    return base if rec.kind == "prediction" else f"{base}#{rec.kind}"


def rollup_pk(rec: UsageRecord, shard: int) -> str:
    return f"{rec.tenant}#{rec.month}#{shard:03d}"


def rollup_increment(table: str, rec: UsageRecord, shard: int, requests: int, units: int,
                     amount: Decimal) -> dict[str, Any]:
    """The ``Update`` (for ``TransactWriteItems``) adding counts to the rollup of ``rec``'s
    tenant, day, model, version and kind."""
    return {"Update": {
        "TableName": table,
        "Key": {"pk": _s(rollup_pk(rec, shard)), "sk": _s(rollup_sort_key(rec))},
        "UpdateExpression": "ADD requests :r, units :u, amount :a "
                            "SET tenant = :t, #d = :d, model = :m, version = :v, #k = :k",
        "ExpressionAttributeNames": {"#d": "day", "#k": "kind"},
        "ExpressionAttributeValues": {
            ":r": _n(requests), ":u": _n(units), ":a": _n(amount),
            ":t": _s(rec.tenant), ":d": _s(rec.day), ":m": _s(rec.model),
            ":v": _s(rec.version), ":k": _s(rec.kind)},
    }}


class DynamoDBMeteringStore(MeteringStore):
    def __init__(self, usage_table: str, rollups_table: str, *, client: Any = None,
                 shards: int = 32, retention_days: int = 400) -> None:
        if client is None:
            import boto3

            client = boto3.client("dynamodb")
        self.client = client
        self.usage_table = usage_table
        self.rollups_table = rollups_table
        self.shards = shards
        self.retention = timedelta(days=retention_days)

    def _item(self, rec: UsageRecord) -> dict[str, Any]:
        item = {
            "pk": _s(rec.record_id), "request_id": _s(rec.request_id), "tenant": _s(rec.tenant),
            "key_id": _s(rec.key_id), "model": _s(rec.model), "version": _s(rec.version),
            "units": _n(rec.units), "unit_price": _n(rec.unit_price), "amount": _n(rec.amount),
            "latency_ms": _n(rec.latency_ms), "ts": _s(rec.timestamp.isoformat()),
            "month": _s(rec.month), "fingerprint": _s(rec.fingerprint),
            "expires_at": _n(int((rec.timestamp + self.retention).timestamp())),
            "kind": _s(rec.kind),
            # rolled up from the stream; records written before (by the transaction that
            # also added their rollup) lack it, so an upgrade never counts them twice
            ROLLUP_MARK: _s("stream"),
        }
        if rec.idempotency_key is not None:
            item["idempotency_key"] = _s(rec.idempotency_key)
        return item

    def record(self, rec: UsageRecord) -> UsageRecord:
        """One conditional put. A duplicate record id returns the record stored first."""
        from botocore.exceptions import BotoCoreError, ClientError

        for attempt in range(RETRIES + 1):
            try:
                self.client.put_item(TableName=self.usage_table, Item=self._item(rec),
                                     ConditionExpression="attribute_not_exists(pk)",
                                     ReturnValuesOnConditionCheckFailure="ALL_OLD")
                return rec
            except ClientError as exc:
                error = exc.response.get("Error", {})
                if error.get("Code") == "ConditionalCheckFailedException":
                    old = exc.response.get("Item")
                    existing = self.parse(old) if old else self.get(rec.record_id)
                    if existing is not None:
                        return existing
                if error.get("Code") not in RETRIABLE or attempt == RETRIES:
                    raise MeteringUnavailable(f"usage write failed: {error}") from exc
            except BotoCoreError as exc:
                if attempt == RETRIES:
                    raise MeteringUnavailable(f"usage store unreachable: {exc}") from exc
            time.sleep(random.uniform(0, 0.01 * 2**attempt))
        raise MeteringUnavailable("usage write failed")  # pragma: no cover

    @staticmethod
    def parse(item: dict[str, Any]) -> UsageRecord:
        """A usage record from its DynamoDB item (a stream record's image too)."""
        v = {k: next(iter(x.values())) for k, x in item.items()}
        return UsageRecord(
            record_id=v["pk"], request_id=v["request_id"], tenant=v["tenant"],
            key_id=v["key_id"], model=v["model"], version=v["version"],
            units=int(v["units"]), unit_price=Decimal(v["unit_price"]),
            amount=Decimal(v["amount"]), latency_ms=int(v["latency_ms"]),
            timestamp=datetime.fromisoformat(v["ts"]).astimezone(UTC),
            fingerprint=v["fingerprint"], idempotency_key=v.get("idempotency_key"),
            kind=v.get("kind", "prediction"),
        )

    def get(self, record_id: str) -> UsageRecord | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            item = self.client.get_item(TableName=self.usage_table,
                                        Key={"pk": _s(record_id)},
                                        ConsistentRead=True).get("Item")
        except (ClientError, BotoCoreError) as exc:
            raise MeteringUnavailable(f"usage read failed: {exc}") from exc
        return self.parse(item) if item else None

    def _query_shard(self, pk: str, lo: str, hi: str) -> list[dict[str, Any]]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self._query_pages(pk, lo, hi)
        except (ClientError, BotoCoreError) as exc:
            raise MeteringUnavailable(f"rollup read failed: {exc}") from exc

    def _query_pages(self, pk: str, lo: str, hi: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.rollups_table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
            "ExpressionAttributeValues": {":pk": _s(pk), ":lo": _s(lo), ":hi": _s(hi)},
        }
        while True:
            page = self.client.query(**kwargs)
            items += page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def daily_usage(self, tenant: str, start: date, end: date) -> list[DailyUsage]:
        months = []
        m = date(start.year, start.month, 1)
        while m <= end:
            months.append(m.strftime("%Y-%m"))
            m = date(m.year + m.month // 12, m.month % 12 + 1, 1)
        lo, hi = start.isoformat(), f"{end.isoformat()}#\uffff"
        keys = [f"{tenant}#{mo}#{s:03d}" for mo in months for s in range(self.shards)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            pages = list(pool.map(lambda pk: self._query_shard(pk, lo, hi), keys))
        totals: dict[tuple[str, str, str, str], list[Any]] = {}
        for page in pages:
            for raw in page:
                v = {k: next(iter(x.values())) for k, x in raw.items()}
                key = (v["day"], v["model"], v["version"], v.get("kind", "prediction"))
                acc = totals.setdefault(key, [0, 0, Decimal(0)])
                acc[0] += int(v["requests"])
                acc[1] += int(v["units"])
                acc[2] += Decimal(v["amount"])
        return [DailyUsage(d, mo, ver, r, u, a, kind)
                for (d, mo, ver, kind), (r, u, a) in sorted(totals.items())]

    def export(self, month: str) -> Iterator[UsageRecord]:
        """A filtered Scan: an offline operator job over at most the retention window."""
        kwargs: dict[str, Any] = {
            "TableName": self.usage_table, "FilterExpression": "#m = :m",
            "ExpressionAttributeNames": {"#m": "month"},
            "ExpressionAttributeValues": {":m": _s(month)},
        }
        records: list[UsageRecord] = []
        while True:
            page = self.client.scan(**kwargs)
            records += [self.parse(i) for i in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        yield from sorted(records, key=lambda r: (r.timestamp, r.record_id))
