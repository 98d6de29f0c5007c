"""``maas tenants``: the paying customers and their plans."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import Settings
from .common import err, note_store, open_issuer, open_tenants, print_json, table


def cmd_tenants_create(args: argparse.Namespace) -> int:
    from ..tenants.base import TenantExists

    tenants = open_tenants(Settings.from_env())
    note_store(tenants)
    try:
        tenant = tenants.create_tenant(args.name, args.plan)
    except TenantExists as exc:
        existing = tenants.get_tenant(args.name)
        if not args.exist_ok or existing is None:
            err(str(exc))
            return 1
        if existing.plan != args.plan:
            err(f"tenant {existing.name} already exists on plan {existing.plan}")
            return 1
        print(f"tenant {existing.name} already exists on plan {existing.plan}")
        return 0
    print(f"created tenant {tenant.name} on plan {tenant.plan}")
    return 0


def cmd_tenants_list(args: argparse.Namespace) -> int:
    tenants = open_tenants(Settings.from_env())
    rows = [{"name": t.name, "plan": t.plan, "status": t.status,
             "active_keys": sum(k.active for k in tenants.list_keys(t.name)),
             "created_at": t.created_at} for t in tenants.list_tenants()]
    if args.json:
        print_json(rows)
        return 0
    table(["tenant", "plan", "status", "active keys", "created"],
          [(r["name"], r["plan"], r["status"], str(r["active_keys"]), r["created_at"])
           for r in rows])
    return 0


def cmd_tenants_suspend(args: argparse.Namespace) -> int:
    issuer = open_issuer(Settings.from_env())
    note_store(issuer.tenants)
    tenant = issuer.suspend(args.name)
    print(f"suspended tenant {tenant.name}: its keys are refused until "
          f"`maas tenants resume {tenant.name}`")
    return 0


def cmd_tenants_resume(args: argparse.Namespace) -> int:
    issuer = open_issuer(Settings.from_env())
    note_store(issuer.tenants)
    tenant = issuer.resume(args.name)
    print(f"resumed tenant {tenant.name}: its unrevoked keys work again")
    return 0


def register(sub: Any) -> None:
    from ..plans import load_plans

    tenants = sub.add_parser("tenants", help="manage tenants").add_subparsers(
        dest="tenants_command", required=True)
    p = tenants.add_parser("create", help="create a tenant on a plan")
    p.add_argument("name")
    p.add_argument("--plan", required=True, choices=sorted(load_plans()))
    p.add_argument("--exist-ok", action="store_true",
                   help="succeed if the tenant already exists on this plan (for scripts)")
    p.set_defaults(func=cmd_tenants_create)
    p = tenants.add_parser("list", help="list tenants")
    p.add_argument("--json", action="store_true", help="print the tenants as JSON")
    p.set_defaults(func=cmd_tenants_list)
    p = tenants.add_parser("suspend", help="refuse every call with the tenant's keys "
                                           "(in AWS: also disable its API Gateway keys)")
    p.add_argument("name")
    p.set_defaults(func=cmd_tenants_suspend)
    p = tenants.add_parser("resume", help="accept the tenant's unrevoked keys again")
    p.add_argument("name")
    p.set_defaults(func=cmd_tenants_resume)
