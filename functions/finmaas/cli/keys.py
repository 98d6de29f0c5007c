"""``maas keys``: issue, list and revoke a tenant's API keys (API Gateway keys in AWS)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..config import Settings
from .common import note_store, open_issuer, open_tenants, print_json, require_tenant, table


def cmd_keys_create(args: argparse.Namespace) -> int:
    issuer = open_issuer(Settings.from_env())
    note_store(issuer.tenants)
    issued = issuer.create(args.tenant)
    print(f"created key {issued.key.key_id} for tenant {issued.key.tenant}; "
          "the key is shown once, store it now:", file=sys.stderr)
    print(issued.secret)
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    issuer = open_issuer(Settings.from_env())
    note_store(issuer.tenants)
    key = issuer.revoke(args.key_id)
    print(f"revoked key {key.key_id} of tenant {key.tenant} at {key.revoked_at}")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    tenants = open_tenants(Settings.from_env())
    require_tenant(tenants, args.tenant)
    keys = tenants.list_keys(args.tenant)
    if args.json:
        print_json([{"key_id": k.key_id, "tenant": k.tenant, "created_at": k.created_at,
                     "revoked_at": k.revoked_at, "active": k.active} for k in keys])
        return 0
    table(["key id", "tenant", "created", "revoked"],
          [(k.key_id, k.tenant, k.created_at, k.revoked_at or "-") for k in keys])
    return 0


def register(sub: Any) -> None:
    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(
        dest="keys_command", required=True)
    p = keys.add_parser("create", help="create a key; prints it once, alone on the last line")
    p.add_argument("--tenant", required=True)
    p.set_defaults(func=cmd_keys_create)
    p = keys.add_parser("revoke", help="revoke a key by id")
    p.add_argument("key_id")
    p.set_defaults(func=cmd_keys_revoke)
    p = keys.add_parser("list", help="list a tenant's keys")
    p.add_argument("--tenant", required=True)
    p.add_argument("--json", action="store_true", help="print the keys as JSON")
    p.set_defaults(func=cmd_keys_list)
