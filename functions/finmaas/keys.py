"""Issuing and revoking API keys for tenants, and suspending or resuming a tenant's keys.

- Embedded (local): the key is a random secret; only its sha256 is stored. The local
  gateway reads the tenant's status on every request, so suspension is the store's
  status alone.
- AWS: the key is an API Gateway API key attached to the usage plan of the tenant's plan
  (named ``finmaas-<stage>-<plan>`` by the CDK app); the tenants table maps its id to the
  tenant. API Gateway enforces throttle and quota; the function trusts its key id.
  Suspending a tenant also disables its gateway keys, so API Gateway refuses them before
  the function runs; resuming enables the keys that were not revoked.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from .tenants import ApiKey, Tenant, TenantStore
from .tenants.base import hash_key

# The events in events/ carry this API Gateway key id; `maas invoke` registers it.
EVENTS_TENANT = "demo"
EVENTS_KEY_ID = "evtdemokey"
DEMO_PLAN = "standard"


def new_secret() -> str:
    return "fmk_" + secrets.token_urlsafe(30)


@dataclass(frozen=True)
class IssuedKey:
    key: ApiKey
    secret: str


class LocalKeyIssuer:
    def __init__(self, tenants: TenantStore) -> None:
        self.tenants = tenants

    def create(self, tenant: str) -> IssuedKey:
        if self.tenants.get_tenant(tenant) is None:
            raise KeyError(f"no tenant {tenant!r}: create it with maas tenants create")
        secret = new_secret()
        key = self.tenants.add_key("lk" + secrets.token_hex(5), tenant, hash_key(secret))
        return IssuedKey(key, secret)

    def revoke(self, key_id: str) -> ApiKey:
        return self.tenants.revoke_key(key_id)

    def suspend(self, tenant: str) -> Tenant:
        return self.tenants.set_status(tenant, "suspended")

    def resume(self, tenant: str) -> Tenant:
        return self.tenants.set_status(tenant, "active")


class ApiGatewayKeyIssuer:
    def __init__(self, tenants: TenantStore, stage: str, *, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("apigateway")
        self.client = client
        self.tenants = tenants
        self.stage = stage

    def usage_plan_id(self, plan: str) -> str:
        name = f"finmaas-{self.stage}-{plan}"
        for page in self.client.get_paginator("get_usage_plans").paginate():
            for item in page.get("items", []):
                if item.get("name") == name:
                    return item["id"]
        raise KeyError(f"no API Gateway usage plan named {name!r}: is the stack deployed "
                       f"with stage {self.stage!r}?")

    def create(self, tenant: str) -> IssuedKey:
        record = self.tenants.get_tenant(tenant)
        if record is None:
            raise KeyError(f"no tenant {tenant!r}: create it with maas tenants create")
        plan_id = self.usage_plan_id(record.plan)
        secret = new_secret()
        created = self.client.create_api_key(
            name=f"finmaas-{self.stage}-{tenant}-{secrets.token_hex(3)}", value=secret,
            enabled=record.active,  # a suspended tenant's new key waits for resume
            tags={"finmaas:tenant": tenant, "finmaas:stage": self.stage})
        try:
            self.client.create_usage_plan_key(usagePlanId=plan_id, keyId=created["id"],
                                              keyType="API_KEY")
            key = self.tenants.add_key(created["id"], tenant)
        except Exception:
            self.client.delete_api_key(apiKey=created["id"])  # no orphan keys
            raise
        return IssuedKey(key, secret)

    def revoke(self, key_id: str) -> ApiKey:
        if self.tenants.get_key(key_id) is None:  # only keys this stack issued
            raise KeyError(f"no key {key_id!r}")
        self._set_enabled(key_id, False, missing_ok=True)
        return self.tenants.revoke_key(key_id)

    def suspend(self, tenant: str) -> Tenant:
        """The status first (the function refuses the tenant from then on), then the
        gateway keys; a failure halfway leaves the tenant suspended, and a rerun finishes."""
        record = self.tenants.set_status(tenant, "suspended")
        for key in self.tenants.list_keys(tenant):
            if key.active:
                self._set_enabled(key.key_id, False, missing_ok=True)
        return record

    def resume(self, tenant: str) -> Tenant:
        """The keys first, then the status: a failure halfway leaves the tenant suspended."""
        if self.tenants.get_tenant(tenant) is None:
            raise KeyError(f"no tenant {tenant!r}")
        for key in self.tenants.list_keys(tenant):
            if key.active:
                self._set_enabled(key.key_id, True)
        return self.tenants.set_status(tenant, "active")

    def _set_enabled(self, key_id: str, enabled: bool, *, missing_ok: bool = False) -> None:
        try:
            self.client.update_api_key(apiKey=key_id, patchOperations=[
                {"op": "replace", "path": "/enabled", "value": str(enabled).lower()}])
        except self.client.exceptions.NotFoundException:
            if not missing_ok:  # a key deleted from API Gateway by hand cannot be used
                raise


def ensure_events_identity(tenants: TenantStore) -> None:
    """Make the key id used by events/*.json known to the embedded store."""
    tenants.ensure_tenant(EVENTS_TENANT, DEMO_PLAN)
    if tenants.get_key(EVENTS_KEY_ID) is None:
        try:
            tenants.add_key(EVENTS_KEY_ID, EVENTS_TENANT)
        except Exception:  # a concurrent first `maas invoke` added it first
            if tenants.get_key(EVENTS_KEY_ID) is None:
                raise
