"""Tenants (the paying customers) and their API keys, behind one store interface."""

from __future__ import annotations

from .base import ApiKey, Tenant, TenantStore

__all__ = ["ApiKey", "Tenant", "TenantStore", "open_tenant_store"]


def open_tenant_store(settings, *, dynamodb_client=None) -> TenantStore:  # type: ignore[no-untyped-def]
    if settings.tenants_table:
        from .dynamodb import DynamoDBTenantStore

        return DynamoDBTenantStore(settings.tenants_table, client=dynamodb_client)
    from .sqlite import SQLiteTenantStore

    return SQLiteTenantStore(settings.sqlite_path)
