"""``maas usage`` and ``maas invoices``: usage records for external billing, and a
tenant's monthly invoice as the tenant sees it."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from ..config import Settings
from ..metering import UNITS
from .common import err, open_tenants, table


def cloud_event(rec: Any, stage: str) -> dict[str, Any]:
    """CloudEvents 1.0, the shape OpenMeter ingests (id = request id, subject = tenant)."""
    return {
        "specversion": "1.0",
        "type": f"finmaas.{rec.kind}",
        "source": f"finmaas/{stage}",
        "id": rec.request_id,
        "subject": rec.tenant,
        "time": rec.timestamp.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": {"model": rec.model, "version": rec.version, "units": rec.units,
                 "unit": UNITS[rec.kind],
                 "unit_price_usd": str(rec.unit_price), "amount_usd": str(rec.amount),
                 "key_id": rec.key_id, "latency_ms": rec.latency_ms},
    }


def cmd_usage_export(args: argparse.Namespace) -> int:
    from ..billing import MONTH_RE
    from ..metering import open_metering_store

    if not MONTH_RE.match(args.month):
        err("--month must be YYYY-MM")
        return 2
    settings = Settings.from_env()
    store = open_metering_store(settings)
    out = open(args.out, "w") if args.out else sys.stdout  # noqa: SIM115
    count = 0
    try:
        for rec in store.export(args.month):
            out.write(json.dumps(cloud_event(rec, settings.stage), separators=(",", ":")) + "\n")
            count += 1
    finally:
        if args.out:
            out.close()
    print(f"exported {count} usage records for {args.month}", file=sys.stderr)
    return 0


def cmd_invoices_show(args: argparse.Namespace) -> int:
    from ..billing import build_invoice, parse_month
    from ..errors import ApiError
    from ..metering import open_metering_store
    from ..plans import get_plan

    settings = Settings.from_env()
    tenant = open_tenants(settings).get_tenant(args.tenant)
    if tenant is None:
        err(f"no tenant {args.tenant!r}")
        return 1
    today = datetime.now(UTC).date()
    month = args.month or today.strftime("%Y-%m")
    try:
        parse_month(month, today)
    except ApiError as exc:
        err(exc.message)
        return 2
    rows = open_metering_store(settings).month_usage(tenant.name, month)
    invoice = build_invoice(tenant.name, get_plan(tenant.plan), month, rows, today)
    if args.json:
        print(json.dumps(invoice, indent=2))
        return 0
    print(f"Invoice {invoice['month']} for {invoice['tenant']} (plan {invoice['plan']}, "
          f"{invoice['status']})\n")
    table(["model", "version", "kind", "requests", "units", "unit price USD", "amount USD"],
          [(ln["model"], ln["version"], ln["kind"], str(ln["requests"]),
            f"{ln['units']} {ln['unit']}s", ln["unit_price_usd"], ln["amount_usd"])
           for ln in invoice["lines"]])
    inc = invoice["included_units"]
    print(f"\nsubtotal            {invoice['subtotal_usd']}\n"
          f"included units      -{inc['credit_usd']} ({inc['used']} of {inc['allowance']})\n"
          f"discount            -{invoice['discount']['amount_usd']} "
          f"({invoice['discount']['percent']}%)\n"
          f"total               {invoice['total_usd']} {invoice['currency']}")
    return 0


def register(sub: Any) -> None:
    usage = sub.add_parser("usage", help="usage records").add_subparsers(
        dest="usage_command", required=True)
    p = usage.add_parser("export", help="write a month's records as CloudEvents (JSON lines)")
    p.add_argument("--month", required=True, help="YYYY-MM")
    p.add_argument("--out", help="output file (default: stdout)")
    p.set_defaults(func=cmd_usage_export)

    invoices = sub.add_parser("invoices", help="invoices").add_subparsers(
        dest="invoices_command", required=True)
    p = invoices.add_parser("show", help="a tenant's invoice for a month")
    p.add_argument("--tenant", required=True)
    p.add_argument("--month", help="YYYY-MM (default: this month)")
    p.add_argument("--json", action="store_true", help="print the invoice as JSON")
    p.set_defaults(func=cmd_invoices_show)
