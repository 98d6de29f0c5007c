"""Rollups from the usage table's stream: exactly once whatever Lambda redelivers.

The records are real stream records (moto's stream of the usage table); the events are
what Lambda's event source mapping hands the rollups function. Each test compares the
rollups with sums computed straight from the records written."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import boto3
import pytest
from finmaas.metering import UsageRecord, record_id_for
from finmaas.metering.dynamodb import DynamoDBMeteringStore
from finmaas.metering.stream import MAX_ITEMS, RollupApplier
from moto import mock_aws

from tests.aws import ROLLUPS, USAGE, create_tables, stream_event, stream_records

T0 = datetime(2026, 10, 1, 12, tzinfo=UTC)
SHARDS = 4


@pytest.fixture
def client():
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_tables(client)
        yield client


def usage(n: int, rng: random.Random) -> UsageRecord:
    tenant = rng.choice(["acme", "globex"])
    kind, price = rng.choice([("prediction", "0.0005"), ("explanation", "0.0015"),
                              ("token", "0.000002")])
    units = rng.randint(1, 300)
    return UsageRecord(
        record_id=record_id_for(tenant, f"r{n}", None), request_id=f"r{n}", tenant=tenant,
        key_id="k", model=rng.choice(["credit-risk", "text-embedding"]), version="1",
        units=units, unit_price=Decimal(price), amount=Decimal(price) * units, latency_ms=3,
        timestamp=T0 + timedelta(days=rng.randint(0, 3)), fingerprint="f", kind=kind)


def written(client, n: int, seed: int = 1) -> list[UsageRecord]:
    rng = random.Random(seed)
    store = DynamoDBMeteringStore(USAGE, ROLLUPS, client=client, shards=SHARDS)
    records = [usage(i, rng) for i in range(n)]
    for r in records:
        store.record(r)
    return records


def expected(records: list[UsageRecord]) -> dict[tuple, tuple[int, int, Decimal]]:
    out: dict[tuple, list] = {}
    for r in records:
        acc = out.setdefault((r.tenant, r.day, r.model, r.version, r.kind), [0, 0, Decimal(0)])
        acc[0] += 1
        acc[1] += r.units
        acc[2] += r.amount
    return {k: tuple(v) for k, v in out.items()}


def rolled_up(client) -> dict[tuple, tuple[int, int, Decimal]]:
    store = DynamoDBMeteringStore(USAGE, ROLLUPS, client=client, shards=SHARDS)
    out = {}
    for tenant in ("acme", "globex"):
        for row in store.daily_usage(tenant, T0.date(), T0.date() + timedelta(days=3)):
            out[(tenant, row.day, row.model, row.version, row.kind)] = (
                row.requests, row.units, row.amount)
    return out


def split(records: list, shards: int) -> dict[str, list]:
    """The stream's records dealt over ``shards`` shards, each in order (as DynamoDB puts
    each partition's records in one shard)."""
    out: dict[str, list] = {}
    for i, record in enumerate(records):
        out.setdefault(f"shardId-{i % shards}", []).append(record)
    return out


def test_every_batch_delivered_twice_with_shards_interleaved_counts_once(client):
    records = written(client, 240)
    applier = RollupApplier(client, ROLLUPS, shards=SHARDS)
    shards = split(stream_records(client), 3)
    batches = [(shard, items[i:i + 25]) for shard, items in shards.items()
               for i in range(0, len(items), 25)]
    # shards interleaved: the k-th batch of every shard before any (k+1)-th
    batches.sort(key=lambda b: (int(b[1][0]["dynamodb"]["SequenceNumber"]), b[0]))
    for shard, batch in batches:
        for _ in range(2):  # each delivered twice, as after a lost response
            assert applier.handle(stream_event(shard, batch))["batchItemFailures"] == []
    assert rolled_up(client) == expected(records)


def test_a_redelivery_cut_differently_counts_once(client):
    records = written(client, 120)
    applier = RollupApplier(client, ROLLUPS, shards=SHARDS)
    stream = stream_records(client)
    applier.handle(stream_event("s", stream[:50]))
    applier.handle(stream_event("s", stream[:80]))  # a redelivery with more records
    applier.handle(stream_event("s", stream[30:]))  # and one starting mid-way
    applier.handle(stream_event("s", list(reversed(stream))))  # out of order, all again
    assert rolled_up(client) == expected(records)


class FailingOn:
    """The DynamoDB client, with the ``n``-th rollup transaction throttled every try."""

    def __init__(self, client, n: int) -> None:
        self.client, self.n, self.transactions = client, n, 0

    def __getattr__(self, name):
        return getattr(self.client, name)

    def transact_write_items(self, **kwargs):
        from botocore.exceptions import ClientError

        self.transactions += 1
        if self.transactions == self.n:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "no"}},
                              "TransactWriteItems")
        return self.client.transact_write_items(**kwargs)


def test_a_partially_failed_batch_is_retried_from_its_first_unapplied_record(client,
                                                                             monkeypatch):
    import finmaas.metering.stream as stream_module

    monkeypatch.setattr(stream_module, "RETRIES", 0)
    monkeypatch.setattr(stream_module.time, "sleep", lambda _s: None)
    # Given more rollup items than one transaction holds: three chunks
    rng = random.Random(5)
    store = DynamoDBMeteringStore(USAGE, ROLLUPS, client=client, shards=SHARDS)
    records = []
    for i in range(2 * MAX_ITEMS + 30):
        r = usage(i, rng)
        r = UsageRecord(**{**r.__dict__, "model": f"model-{i:03d}"})  # an item each
        store.record(r)
        records.append(r)
    stream = stream_records(client)
    # When the second chunk's transaction fails
    failing = RollupApplier(FailingOn(client, 2), ROLLUPS, shards=SHARDS)
    answer = failing.handle(stream_event("s", stream))
    # Then Lambda is told to retry from the second chunk's first record, not before
    (failure,) = answer["batchItemFailures"]
    first_unapplied = next(i for i, r in enumerate(stream)
                           if r["dynamodb"]["SequenceNumber"] == failure["itemIdentifier"])
    assert first_unapplied == MAX_ITEMS - 1
    # and the retry, which restarts from that record, completes the rollups exactly
    applier = RollupApplier(client, ROLLUPS, shards=SHARDS)
    assert applier.handle(stream_event("s", stream[first_unapplied:])) == {
        "state": {}, "batchItemFailures": []}
    assert rolled_up(client) == expected(records)


def test_removals_advance_the_checkpoint_and_count_nothing(client):
    records = written(client, 10)
    applier = RollupApplier(client, ROLLUPS, shards=SHARDS)
    stream = stream_records(client)
    removal = {**stream[-1], "eventName": "REMOVE",
               "dynamodb": {**stream[-1]["dynamodb"], "NewImage": None,
                            "SequenceNumber": str(int(stream[-1]["dynamodb"]["SequenceNumber"])
                                                  + 1)}}
    applier.handle(stream_event("s", [*stream, removal]))
    assert int(applier.checkpoint("s")) == int(removal["dynamodb"]["SequenceNumber"])
    assert rolled_up(client) == expected(records)


def test_an_event_without_a_shard_id_is_a_misconfigured_mapping(client):
    with pytest.raises(ValueError, match="tumbling window"):
        RollupApplier(client, ROLLUPS).handle({"Records": []})


def item_size(item: dict) -> int:
    """DynamoDB's item size: attribute names plus values (strings in UTF-8, numbers at most
    21 bytes), as its documentation counts them."""
    size = 0
    for name, value in item.items():
        (kind, v), = value.items()
        size += len(name.encode()) + (len(v.encode()) if kind == "S" else 21)
    return size


def test_the_largest_usage_record_is_under_one_kilobyte_one_write_unit():
    longest = "x" * 255  # the longest Idempotency-Key, names at their card limits
    rec = UsageRecord(
        record_id=record_id_for("t" * 64, "r", longest), request_id="r" * 64,
        tenant="t" * 64, key_id="k" * 64, model="m" * 64, version="v" * 32,
        units=10**9, unit_price=Decimal("0.000001"), amount=Decimal("999999.999999999"),
        latency_ms=10**6, timestamp=T0, fingerprint="f" * 64, idempotency_key=longest,
        kind="explanation")
    item = DynamoDBMeteringStore(USAGE, ROLLUPS, client=object())._item(rec)
    assert item_size(item) <= 1024, item_size(item)


def test_the_rollups_function_handles_the_committed_event(client, monkeypatch):
    from finmaas.metering.stream import build_handler

    from tests.conftest import EVENTS

    monkeypatch.setenv("MAAS_ROLLUPS_TABLE", ROLLUPS)
    monkeypatch.setenv("MAAS_USAGE_TABLE", USAGE)
    event = json.loads((EVENTS / "rollups-stream-batch.json").read_text())
    handler = build_handler(client)
    assert handler(event, None) == {"state": {}, "batchItemFailures": []}
    assert handler(event, None) == {"state": {}, "batchItemFailures": []}  # redelivered
    rows = DynamoDBMeteringStore(USAGE, ROLLUPS, client=client).month_usage("acme",
                                                                           "2026-11")
    assert [(r.kind, r.requests, r.units) for r in rows] == [("prediction", 2, 3)]


class LostAnswer:
    """The DynamoDB client, whose first rollup transaction is written but whose answer is
    lost on the way back (a timeout after DynamoDB committed it)."""

    def __init__(self, client) -> None:
        self.client, self.lost = client, False

    def __getattr__(self, name):
        return getattr(self.client, name)

    def transact_write_items(self, **kwargs):
        from botocore.exceptions import ReadTimeoutError

        answer = self.client.transact_write_items(**kwargs)
        if not self.lost:
            self.lost = True
            raise ReadTimeoutError(endpoint_url="https://dynamodb")
        return answer


def test_a_chunk_written_but_unanswered_is_not_applied_again(client, monkeypatch):
    import finmaas.metering.stream as stream_module

    monkeypatch.setattr(stream_module.time, "sleep", lambda _s: None)
    records = written(client, 60)
    applier = RollupApplier(LostAnswer(client), ROLLUPS, shards=SHARDS)
    assert applier.handle(stream_event("s", stream_records(client)))["batchItemFailures"] == []
    assert rolled_up(client) == expected(records)


def test_records_from_before_the_stream_and_unreadable_images_count_nothing(client):
    """An upgrade: the usage table's stream is on before the old code (which added each
    record's rollup itself) is replaced; its records carry no mark and are not counted
    again. An image that cannot be read is skipped, not a stalled shard."""
    records = written(client, 20)
    stream = stream_records(client)
    old = {**stream[0], "dynamodb": {**stream[0]["dynamodb"], "NewImage": {
        k: v for k, v in stream[0]["dynamodb"]["NewImage"].items() if k != "rollup"}}}
    broken = {**stream[1], "dynamodb": {**stream[1]["dynamodb"], "NewImage": {
        k: v for k, v in stream[1]["dynamodb"]["NewImage"].items() if k != "request_id"}}}
    applier = RollupApplier(client, ROLLUPS, shards=SHARDS)
    answer = applier.handle(stream_event("s", [old, broken, *stream[2:]]))
    assert answer["batchItemFailures"] == []
    assert rolled_up(client) == expected(records[2:])


def test_a_checkpoint_that_keeps_moving_hands_the_batch_back(client, monkeypatch):
    import finmaas.metering.stream as stream_module

    written(client, 5)
    stream = stream_records(client)
    applier = RollupApplier(client, ROLLUPS, shards=SHARDS)

    def moved(*_args):
        raise stream_module.CheckpointMoved

    monkeypatch.setattr(applier, "_apply_chunks", moved)
    answer = applier.handle(stream_event("s", stream))
    assert answer["batchItemFailures"] == [
        {"itemIdentifier": stream[0]["dynamodb"]["SequenceNumber"]}]
