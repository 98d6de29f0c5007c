from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from ..embedded import connect, using
from ..plans import get_plan
from .base import ApiKey, Tenant, TenantExists, TenantStore, now_iso

SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY, plan TEXT NOT NULL, status TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY, tenant TEXT NOT NULL REFERENCES tenants(name),
    key_hash TEXT UNIQUE, created_at TEXT NOT NULL, revoked_at TEXT
);
"""


class SQLiteTenantStore(TenantStore):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn = connect(self.path)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.executescript(SCHEMA)

    @property
    def location(self) -> str:
        return f"SQLite {self.path.resolve()}"

    def _tenant(self, row: sqlite3.Row | None) -> Tenant | None:
        return Tenant(row["name"], row["plan"], row["status"], row["created_at"]) if row else None

    def _key(self, row: sqlite3.Row | None) -> ApiKey | None:
        return ApiKey(row["key_id"], row["tenant"], row["created_at"], row["revoked_at"]) \
            if row else None

    def create_tenant(self, name: str, plan: str) -> Tenant:
        self.check_name(name)
        get_plan(plan)
        tenant = Tenant(name, plan, "active", now_iso())
        with self._lock:
            try:
                self._conn.execute("INSERT INTO tenants VALUES (?, ?, ?, ?)",
                                   (name, plan, tenant.status, tenant.created_at))
            except sqlite3.IntegrityError as exc:
                raise TenantExists(f"tenant {name!r} already exists") from exc
        return tenant

    def get_tenant(self, name: str) -> Tenant | None:
        with using(self._conn, self._lock):  # WouldWait on the loop
            row = self._conn.execute("SELECT * FROM tenants WHERE name = ?", (name,)).fetchone()
        return self._tenant(row)

    def list_tenants(self) -> list[Tenant]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM tenants ORDER BY name").fetchall()
        return [t for t in map(self._tenant, rows) if t]

    def set_plan(self, name: str, plan: str) -> Tenant:
        get_plan(plan)
        with self._lock:
            cur = self._conn.execute("UPDATE tenants SET plan = ? WHERE name = ?", (plan, name))
        if cur.rowcount == 0:
            raise KeyError(f"no tenant {name!r}")
        tenant = self.get_tenant(name)
        assert tenant
        return tenant

    def set_status(self, name: str, status: str) -> Tenant:
        self.check_status(status)
        with self._lock:
            cur = self._conn.execute("UPDATE tenants SET status = ? WHERE name = ?",
                                     (status, name))
        if cur.rowcount == 0:
            raise KeyError(f"no tenant {name!r}")
        tenant = self.get_tenant(name)
        assert tenant
        return tenant

    def add_key(self, key_id: str, tenant: str, key_hash: str | None = None) -> ApiKey:
        key = self._new_key(key_id, tenant)
        with self._lock:
            self._conn.execute("INSERT INTO api_keys VALUES (?, ?, ?, ?, NULL)",
                               (key_id, tenant, key_hash, key.created_at))
        return key

    def get_key(self, key_id: str) -> ApiKey | None:
        with using(self._conn, self._lock):  # WouldWait on the loop
            row = self._conn.execute("SELECT * FROM api_keys WHERE key_id = ?",
                                     (key_id,)).fetchone()
        return self._key(row)

    def find_key_by_hash(self, key_hash: str) -> ApiKey | None:
        with using(self._conn, self._lock):  # WouldWait on the loop
            row = self._conn.execute("SELECT * FROM api_keys WHERE key_hash = ?",
                                     (key_hash,)).fetchone()
        return self._key(row)

    def revoke_key(self, key_id: str) -> ApiKey:
        with self._lock:
            cur = self._conn.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE key_id = ?",
                (now_iso(), key_id))
        if cur.rowcount == 0:
            raise KeyError(f"no key {key_id!r}")
        key = self.get_key(key_id)
        assert key
        return key

    def list_keys(self, tenant: str) -> list[ApiKey]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM api_keys WHERE tenant = ? ORDER BY created_at",
                                      (tenant,)).fetchall()
        return [k for k in map(self._key, rows) if k]
