"""Embedded metering store: one SQLite file, one transaction per record.

The record insert and the rollup upsert commit together; ``INSERT ... ON CONFLICT DO
NOTHING`` on the record id is the exactly-once guard. Amounts are summed as integer
nano-dollars so no float ever touches money.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from ..embedded import BUSY_TIMEOUT_SECONDS, connect, using
from .base import (
    DailyUsage,
    MeteringStore,
    MeteringUnavailable,
    UsageRecord,
    from_nanos,
    to_nanos,
    utcnow,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_records (
    record_id TEXT PRIMARY KEY, request_id TEXT NOT NULL, tenant TEXT NOT NULL,
    key_id TEXT NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL,
    units INTEGER NOT NULL, unit_price TEXT NOT NULL, amount TEXT NOT NULL,
    latency_ms INTEGER NOT NULL, ts TEXT NOT NULL, month TEXT NOT NULL,
    fingerprint TEXT NOT NULL, idempotency_key TEXT, expires_at INTEGER NOT NULL,
    kind TEXT NOT NULL DEFAULT 'prediction'
);
CREATE INDEX IF NOT EXISTS usage_by_month ON usage_records (month);
CREATE INDEX IF NOT EXISTS usage_by_key_month ON usage_records (key_id, month);
CREATE TABLE IF NOT EXISTS usage_rollups (
    tenant TEXT NOT NULL, day TEXT NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL,
    requests INTEGER NOT NULL, units INTEGER NOT NULL, amount_nanos INTEGER NOT NULL,
    kind TEXT NOT NULL DEFAULT 'prediction',
    PRIMARY KEY (tenant, day, model, version, kind)
);
"""
# A store written before usage had kinds: every record and rollup was a prediction.
MIGRATE_KINDS = """
ALTER TABLE usage_records ADD COLUMN kind TEXT NOT NULL DEFAULT 'prediction';
CREATE TABLE usage_rollups_kinds (
    tenant TEXT NOT NULL, day TEXT NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL,
    requests INTEGER NOT NULL, units INTEGER NOT NULL, amount_nanos INTEGER NOT NULL,
    kind TEXT NOT NULL DEFAULT 'prediction',
    PRIMARY KEY (tenant, day, model, version, kind)
);
INSERT INTO usage_rollups_kinds SELECT tenant, day, model, version, requests, units,
    amount_nanos, 'prediction' FROM usage_rollups;
DROP TABLE usage_rollups;
ALTER TABLE usage_rollups_kinds RENAME TO usage_rollups;
"""


class SQLiteMeteringStore(MeteringStore):
    honours_no_wait = True

    def __init__(self, path: str | Path, *, retention_days: int = 400) -> None:
        self.path = Path(path)
        self.retention = timedelta(days=retention_days)
        self._conn = connect(self.path)
        self._lock = threading.Lock()
        with self._lock:
            self._migrate()
            self._conn.executescript(SCHEMA)
            # Raw records expire (like DynamoDB TTL); rollups are kept.
            self._conn.execute("DELETE FROM usage_records WHERE expires_at < ?",
                               (int(utcnow().timestamp()),))

    def checkpoint_in_background(self, every_seconds: float = 1.0) -> threading.Event:
        """For a long-running server: fold the write-ahead log into the database from a
        thread of its own, so no request's commit pays for a checkpoint (SQLite's automatic
        one runs inside the commit that fills the log, an fsync'd copy of up to 4 MB: the
        tail of the local server's latency). A commit is as durable as before: WAL with
        NORMAL sync survives a process crash before any checkpoint. Set the returned event
        to stop."""
        with self._lock:
            self._conn.execute("PRAGMA wal_autocheckpoint=0")
        stop = threading.Event()
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                               timeout=BUSY_TIMEOUT_SECONDS)

        def fold() -> None:
            while not stop.wait(every_seconds):
                try:  # PASSIVE: never waits for, nor holds up, a reader or a writer
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error:
                    continue  # locked or busy now: the next round folds what is left
            conn.close()

        threading.Thread(target=fold, name="finmaas-wal-checkpoint", daemon=True).start()
        return stop

    def _migrate(self) -> None:
        """Give a store from before usage kinds its ``kind`` columns, once: the check runs
        inside the write transaction, so two processes opening it at once agree."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            columns = {r[1] for r in self._conn.execute("PRAGMA table_info(usage_records)")}
            if columns and "kind" not in columns:
                for statement in MIGRATE_KINDS.split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def record(self, rec: UsageRecord) -> UsageRecord:
        try:
            with using(self._conn, self._lock):  # on the loop: WouldWait, never a wait
                return self._write(rec)
        except sqlite3.Error as exc:
            raise MeteringUnavailable(f"usage store {self.path}: {exc}") from exc

    def _write(self, rec: UsageRecord) -> UsageRecord:
        """The record and its rollup in one transaction, or the record already there.
        The caller holds ``_lock``."""
        expires = int((rec.timestamp + self.retention).timestamp())
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            cur = self._conn.execute(
                "INSERT INTO usage_records VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(record_id) DO NOTHING",
                (rec.record_id, rec.request_id, rec.tenant, rec.key_id, rec.model,
                 rec.version, rec.units, str(rec.unit_price), str(rec.amount),
                 rec.latency_ms, rec.timestamp.isoformat(), rec.month,
                 rec.fingerprint, rec.idempotency_key, expires, rec.kind),
            )
            if cur.rowcount == 1:
                self._conn.execute(
                    "INSERT INTO usage_rollups VALUES (?,?,?,?,1,?,?,?) "
                    "ON CONFLICT(tenant, day, model, version, kind) DO UPDATE SET "
                    "requests = requests + 1, units = units + excluded.units, "
                    "amount_nanos = amount_nanos + excluded.amount_nanos",
                    (rec.tenant, rec.day, rec.model, rec.version, rec.units,
                     to_nanos(rec.amount), rec.kind),
                )
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        if cur.rowcount == 1:
            return rec
        existing = self._get(rec.record_id)
        if existing is None:  # pragma: no cover - the conflict row cannot vanish
            raise MeteringUnavailable("usage record disappeared")
        return existing

    @staticmethod
    def _row(row: sqlite3.Row) -> UsageRecord:
        return UsageRecord(
            record_id=row["record_id"], request_id=row["request_id"], tenant=row["tenant"],
            key_id=row["key_id"], model=row["model"], version=row["version"],
            units=row["units"], unit_price=Decimal(row["unit_price"]),
            amount=Decimal(row["amount"]), latency_ms=row["latency_ms"],
            timestamp=datetime.fromisoformat(row["ts"]), fingerprint=row["fingerprint"],
            idempotency_key=row["idempotency_key"], kind=row["kind"],
        )

    def get(self, record_id: str) -> UsageRecord | None:
        try:
            with self._lock:
                return self._get(record_id)
        except sqlite3.Error as exc:
            raise MeteringUnavailable(str(exc)) from exc

    def _get(self, record_id: str) -> UsageRecord | None:
        row = self._conn.execute("SELECT * FROM usage_records WHERE record_id = ?",
                                 (record_id,)).fetchone()
        return self._row(row) if row else None

    def daily_usage(self, tenant: str, start: date, end: date) -> list[DailyUsage]:
        try:
            with self._lock:
                rows = self._conn.execute(
                    "SELECT * FROM usage_rollups WHERE tenant = ? AND day BETWEEN ? AND ? "
                    "ORDER BY day, model, version, kind",
                    (tenant, start.isoformat(), end.isoformat()),
                ).fetchall()
        except sqlite3.Error as exc:
            raise MeteringUnavailable(f"usage store {self.path}: {exc}") from exc
        return [DailyUsage(r["day"], r["model"], r["version"], r["requests"], r["units"],
                           from_nanos(r["amount_nanos"]), r["kind"]) for r in rows]

    def export(self, month: str) -> Iterator[UsageRecord]:
        try:
            with self._lock:
                rows = self._conn.execute(
                    "SELECT * FROM usage_records WHERE month = ? ORDER BY ts, record_id",
                    (month,)).fetchall()
        except sqlite3.Error as exc:
            raise MeteringUnavailable(f"usage store {self.path}: {exc}") from exc
        for row in rows:
            yield self._row(row)

    def count_requests(self, key_id: str, month: str) -> int:
        """Successful requests of a key in a month (seeds the local gateway's quota)."""
        try:
            with self._lock:
                row = self._conn.execute(
                    "SELECT COUNT(*) FROM usage_records WHERE key_id = ? AND month = ?",
                    (key_id, month)).fetchone()
        except sqlite3.Error as exc:
            raise MeteringUnavailable(f"usage store {self.path}: {exc}") from exc
        return int(row[0])
