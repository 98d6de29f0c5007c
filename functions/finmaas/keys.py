"""Issuing and revoking API keys for tenants.

- Embedded (local): the key is a random secret; only its sha256 is stored.
- AWS: the key is an API Gateway API key attached to the usage plan of the tenant's plan
  (named ``finmaas-<stage>-<plan>`` by the CDK app); the tenants table maps its id to the
  tenant. API Gateway enforces throttle and quota; the function trusts its key id.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from .tenants import ApiKey, TenantStore
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
            enabled=True, tags={"finmaas:tenant": tenant, "finmaas:stage": self.stage})
        try:
            self.client.create_usage_plan_key(usagePlanId=plan_id, keyId=created["id"],
                                              keyType="API_KEY")
            key = self.tenants.add_key(created["id"], tenant)
        except Exception:
            self.client.delete_api_key(apiKey=created["id"])  # no orphan keys
            raise
        return IssuedKey(key, secret)

    def revoke(self, key_id: str) -> ApiKey:
        self.client.update_api_key(apiKey=key_id, patchOperations=[
            {"op": "replace", "path": "/enabled", "value": "false"}])
        return self.tenants.revoke_key(key_id)


def ensure_events_identity(tenants: TenantStore) -> None:
    """Make the key id used by events/*.json known to the embedded store."""
    if tenants.get_tenant(EVENTS_TENANT) is None:
        tenants.create_tenant(EVENTS_TENANT, DEMO_PLAN)
    if tenants.get_key(EVENTS_KEY_ID) is None:
        tenants.add_key(EVENTS_KEY_ID, EVENTS_TENANT)
