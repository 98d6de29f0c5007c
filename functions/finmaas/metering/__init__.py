"""Metering: one usage record per successful prediction, rolled up per day."""

from __future__ import annotations

from typing import Any

from .base import (
    BATCH_KIND,
    KINDS,
    UNITS,
    DailyUsage,
    MeteringStore,
    MeteringUnavailable,
    UsageRecord,
    format_usd,
    record_id_for,
)

__all__ = ["BATCH_KIND", "KINDS", "UNITS", "DailyUsage", "MeteringStore", "MeteringUnavailable",
           "UsageRecord", "format_usd", "open_metering_store", "record_id_for"]


def open_metering_store(settings: Any, *, dynamodb_client: Any = None) -> MeteringStore:
    if settings.uses_dynamodb:
        from .dynamodb import DynamoDBMeteringStore

        return DynamoDBMeteringStore(settings.usage_table, settings.rollups_table,
                                     client=dynamodb_client, shards=settings.rollup_shards,
                                     retention_days=settings.usage_retention_days)
    from .sqlite import SQLiteMeteringStore

    return SQLiteMeteringStore(settings.sqlite_path,
                               retention_days=settings.usage_retention_days)
