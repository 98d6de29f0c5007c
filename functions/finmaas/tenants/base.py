from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime

TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,40}[a-z0-9]$")
# A suspended tenant keeps its plan, keys and invoices; every call with its keys is refused.
TENANT_STATUSES = ("active", "suspended")


def hash_key(key: str) -> str:
    """Keys are 256-bit random secrets, so a plain sha256 is a safe lookup hash."""
    return hashlib.sha256(key.encode()).hexdigest()


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Tenant:
    name: str
    plan: str
    status: str = "active"
    created_at: str = ""

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    tenant: str
    created_at: str = ""
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class TenantExists(ValueError):
    pass


class TenantStore(ABC):
    """Tenants and API keys. Clear-text keys are never stored: only a sha256 lookup hash
    (embedded store) or nothing at all (AWS, where API Gateway holds the key)."""

    @property
    def location(self) -> str:
        """Where the tenants live, in words for operators (a file path, a table name)."""
        return type(self).__name__

    @abstractmethod
    def create_tenant(self, name: str, plan: str) -> Tenant: ...

    @abstractmethod
    def get_tenant(self, name: str) -> Tenant | None: ...

    @abstractmethod
    def list_tenants(self) -> list[Tenant]: ...

    @abstractmethod
    def set_plan(self, name: str, plan: str) -> Tenant: ...

    @abstractmethod
    def set_status(self, name: str, status: str) -> Tenant:
        """Suspend (``suspended``) or resume (``active``) a tenant; KeyError if unknown."""

    @abstractmethod
    def add_key(self, key_id: str, tenant: str, key_hash: str | None = None) -> ApiKey: ...

    @abstractmethod
    def get_key(self, key_id: str) -> ApiKey | None: ...

    @abstractmethod
    def find_key_by_hash(self, key_hash: str) -> ApiKey | None: ...

    @abstractmethod
    def revoke_key(self, key_id: str) -> ApiKey: ...

    @abstractmethod
    def list_keys(self, tenant: str) -> list[ApiKey]: ...

    def ensure_tenant(self, name: str, plan: str) -> Tenant:
        """Create the tenant unless it exists (then return it as it is, on whatever plan):
        two first runs racing to create the same tenant both succeed."""
        try:
            return self.create_tenant(name, plan)
        except TenantExists:
            tenant = self.get_tenant(name)
            assert tenant
            return tenant

    def _new_key(self, key_id: str, tenant: str) -> ApiKey:
        """The record for a key about to be stored; the tenant must exist."""
        if self.get_tenant(tenant) is None:
            raise KeyError(f"no tenant {tenant!r}")
        return ApiKey(key_id, tenant, now_iso(), None)

    @staticmethod
    def check_name(name: str) -> None:
        if not TENANT_RE.match(name):
            raise ValueError(f"tenant name {name!r}: 3-42 lowercase letters, digits, dashes")

    @staticmethod
    def check_status(status: str) -> None:
        if status not in TENANT_STATUSES:
            raise ValueError(f"tenant status {status!r}: one of {', '.join(TENANT_STATUSES)}")
