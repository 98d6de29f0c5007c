"""Batch jobs and their progress, behind one store interface (SQLite locally, DynamoDB in
AWS).

Progress is counted exactly once per chunk, like usage: ``add_chunk`` records the chunk
under its id and adds its rows and cost to the job in one atomic step, and a chunk
counted before (a retry, a redrive, a resumed run) adds nothing. What a job costs is what
its chunks' usage records bill; the job's figures are what a caller watches.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from typing import Any

from ..metering import format_usd
from ..metering.base import utcnow

STATUSES = ("running", "succeeded", "failed")
LIST_LIMIT = 100


def new_job_id() -> str:
    """Unguessable, and usable as a Step Functions execution name (80 chars of [a-z0-9-])."""
    return f"bj-{secrets.token_hex(10)}"


def now_iso() -> str:
    return utcnow().isoformat(timespec="seconds")


@dataclass(frozen=True)
class BatchJob:
    job_id: str
    tenant: str
    key_id: str
    model: str
    version: str
    kind: str  # "prediction" or "explanation"
    input: str  # the input object's URL (s3:// or file://)
    output: str  # where the results go (a prefix)
    results: str  # the results' location under ``output``
    format: str  # "csv" or "jsonl"
    chunk_rows: int
    status: str = "running"
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    chunks: int = 0
    rows_done: int = 0
    rows_failed: int = 0
    amount: Decimal = Decimal(0)
    error: str | None = None

    def finished(self, status: str, error: str | None = None) -> BatchJob:
        return replace(self, status=status, error=error, updated_at=now_iso())

    def as_dict(self) -> dict[str, Any]:
        """The job as the API answers it."""
        doc = asdict(self)
        doc.pop("amount")
        doc.pop("key_id")
        return {**doc, "explain": self.kind == "explanation",
                "cost_usd": format_usd(self.amount), "currency": "USD"}


class JobStore(ABC):
    @abstractmethod
    def create(self, job: BatchJob) -> None: ...

    @abstractmethod
    def get(self, job_id: str) -> BatchJob | None: ...

    @abstractmethod
    def list_for(self, tenant: str, limit: int = LIST_LIMIT) -> list[BatchJob]:
        """The tenant's jobs, newest first."""

    @abstractmethod
    def add_chunk(self, job_id: str, chunk_id: str, rows_done: int, rows_failed: int,
                  amount: Decimal) -> bool:
        """Count a chunk's rows and cost into its job, once per chunk id. True if counted
        now, False if it was counted before."""

    @abstractmethod
    def finish(self, job_id: str, status: str, error: str | None = None) -> None: ...

    def get_for(self, tenant: str, job_id: str) -> BatchJob | None:
        """The job if it is this tenant's: another tenant's job is as good as missing."""
        job = self.get(job_id)
        return job if job is not None and job.tenant == tenant else None

    @staticmethod
    def check_status(status: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"job status must be one of {STATUSES}")
