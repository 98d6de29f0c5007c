"""Batch jobs: score a whole file of rows (CSV or JSON Lines) with the same validation
and metering as ``/v1``, billed once per chunk however often it is retried; run by Step
Functions in AWS and by a thread or ``maas batch run`` locally."""

from __future__ import annotations

from typing import Any

from .jobs import BatchJob, JobStore

__all__ = ["BatchJob", "JobStore", "open_job_store"]


def open_job_store(settings: Any, *, dynamodb_client: Any = None) -> JobStore:
    if settings.jobs_table:
        from .dynamodb import DynamoDBJobStore

        return DynamoDBJobStore(settings.jobs_table, client=dynamodb_client)
    from .sqlite import SQLiteJobStore

    return SQLiteJobStore(settings.sqlite_path)
