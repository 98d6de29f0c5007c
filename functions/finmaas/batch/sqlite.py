"""Batch jobs in the embedded SQLite file, beside tenants and usage."""

from __future__ import annotations

import sqlite3
import threading
from decimal import Decimal
from pathlib import Path

from ..embedded import connect
from ..metering.base import from_nanos, to_nanos
from .jobs import LIST_LIMIT, BatchJob, JobStore, now_iso

SCHEMA = """
CREATE TABLE IF NOT EXISTS batch_jobs (
    job_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, key_id TEXT NOT NULL,
    model TEXT NOT NULL, version TEXT NOT NULL, kind TEXT NOT NULL,
    input TEXT NOT NULL, output TEXT NOT NULL, results TEXT NOT NULL, format TEXT NOT NULL,
    chunk_rows INTEGER NOT NULL, status TEXT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    chunks INTEGER NOT NULL DEFAULT 0, rows_done INTEGER NOT NULL DEFAULT 0,
    rows_failed INTEGER NOT NULL DEFAULT 0, amount_nanos INTEGER NOT NULL DEFAULT 0,
    error TEXT
);
CREATE INDEX IF NOT EXISTS batch_jobs_by_tenant ON batch_jobs (tenant, created_at);
CREATE TABLE IF NOT EXISTS batch_chunks (
    job_id TEXT NOT NULL, chunk_id TEXT NOT NULL, PRIMARY KEY (job_id, chunk_id)
);
"""
COLUMNS = ("job_id", "tenant", "key_id", "model", "version", "kind", "input", "output",
           "results", "format", "chunk_rows", "status", "created_at", "updated_at")


class SQLiteJobStore(JobStore):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn = connect(self.path)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.executescript(SCHEMA)

    def create(self, job: BatchJob) -> None:
        with self._lock:
            self._conn.execute(
                f"INSERT INTO batch_jobs ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(COLUMNS))})",
                tuple(getattr(job, c) for c in COLUMNS))

    @staticmethod
    def _job(row: sqlite3.Row) -> BatchJob:
        return BatchJob(**{c: row[c] for c in COLUMNS}, chunks=row["chunks"],
                        rows_done=row["rows_done"], rows_failed=row["rows_failed"],
                        amount=from_nanos(row["amount_nanos"]), error=row["error"])

    def running(self) -> list[BatchJob]:
        """Every job still marked running, oldest first: after a restart of the local
        server, the ones its threads were scoring when it stopped."""
        with self._lock:
            rows = self._conn.execute("SELECT * FROM batch_jobs WHERE status = 'running' "
                                      "ORDER BY created_at").fetchall()
        return [self._job(row) for row in rows]

    def get(self, job_id: str) -> BatchJob | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM batch_jobs WHERE job_id = ?",
                                     (job_id,)).fetchone()
        return self._job(row) if row else None

    def list_for(self, tenant: str, limit: int = LIST_LIMIT) -> list[BatchJob]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM batch_jobs WHERE tenant = ? ORDER BY created_at DESC, job_id "
                "LIMIT ?", (tenant, limit)).fetchall()
        return [self._job(r) for r in rows]

    def add_chunk(self, job_id: str, chunk_id: str, rows_done: int, rows_failed: int,
                  amount: Decimal) -> bool:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                cur = self._conn.execute(
                    "INSERT INTO batch_chunks VALUES (?, ?) ON CONFLICT DO NOTHING",
                    (job_id, chunk_id))
                if cur.rowcount == 1:
                    self._conn.execute(
                        "UPDATE batch_jobs SET chunks = chunks + 1, "
                        "rows_done = rows_done + ?, rows_failed = rows_failed + ?, "
                        "amount_nanos = amount_nanos + ?, updated_at = ? WHERE job_id = ?",
                        (rows_done, rows_failed, to_nanos(amount), now_iso(), job_id))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return cur.rowcount == 1

    def finish(self, job_id: str, status: str, error: str | None = None) -> None:
        self.check_status(status)
        with self._lock:
            self._conn.execute(
                "UPDATE batch_jobs SET status = ?, error = ?, updated_at = ? WHERE job_id = ?",
                (status, error, now_iso(), job_id))
