"""CLI commands for running and operating FinMaaS: serve, invoke, tenants, keys, usage,
invoices and publishing models."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .config import REPO_ROOT, Settings


def _err(msg: str) -> None:
    print(f"maas: {msg}", file=sys.stderr)


def _tenants(settings: Settings) -> Any:
    from .tenants import open_tenant_store

    return open_tenant_store(settings)


def _issuer(settings: Settings) -> Any:
    from .keys import ApiGatewayKeyIssuer, LocalKeyIssuer

    tenants = _tenants(settings)
    if settings.tenants_table:
        return ApiGatewayKeyIssuer(tenants, settings.stage)
    return LocalKeyIssuer(tenants)


# -- serve -------------------------------------------------------------------------------
def demo_key(settings: Settings) -> str:
    """The demo tenant's key, created on first run. Its clear text is kept only in
    ``$MAAS_HOME/demo-key`` (mode 600) so every `make serve` can print a working curl."""
    from .keys import DEMO_PLAN, EVENTS_TENANT, LocalKeyIssuer
    from .tenants.base import hash_key

    tenants = _tenants(settings)
    path = settings.home / "demo-key"
    if path.exists():
        secret = path.read_text().strip()
        found = tenants.find_key_by_hash(hash_key(secret))
        if found and found.active:
            return secret
    if tenants.get_tenant(EVENTS_TENANT) is None:
        tenants.create_tenant(EVENTS_TENANT, DEMO_PLAN)
    issued = LocalKeyIssuer(tenants).create(EVENTS_TENANT)
    settings.home.mkdir(parents=True, exist_ok=True)
    path.write_text(issued.secret + "\n")
    path.chmod(0o600)
    print(f"created demo tenant {EVENTS_TENANT!r} (plan {DEMO_PLAN}) and key "
          f"{issued.key.key_id}", file=sys.stderr)
    return issued.secret


def local_app(settings: Settings) -> Any:
    from .api import build_services, create_app
    from .gateway import LocalGateway

    services = build_services(settings)
    metering = services.metering
    seed = getattr(metering, "count_requests", None)
    return LocalGateway(create_app(services), services.tenants, quota_seed=seed)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = Settings.from_env()
    if settings.uses_dynamodb or settings.tenants_table:
        _err("maas serve runs the embedded stores; unset MAAS_*_TABLE to serve locally")
        return 2
    key = demo_key(settings)
    app = local_app(settings)
    example = _example_body("credit-risk", settings)
    base = f"http://{args.host}:{args.port}"
    print(f"\nFinMaaS local API on {base} (models: {settings.model_store})\n"
          f"API docs: {base}/docs\n\nTry it:\n\n"
          f"curl -s {base}/v1/models/credit-risk/predict \\\n"
          f"  -H 'x-api-key: {key}' \\\n"
          f"  -H 'content-type: application/json' \\\n"
          f"  -d '{example}'\n", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                timeout_graceful_shutdown=5)
    return 0


def _example_body(model: str, settings: Settings) -> str:
    from .modelstore import open_store
    from .registry import ModelRegistry

    registry = ModelRegistry(open_store(settings.model_store))
    card = registry.card(model, registry.resolve(model))
    return json.dumps({"instances": [card.raw["example"]]}, separators=(",", ":"))


# -- invoke ------------------------------------------------------------------------------
@dataclass
class LocalLambdaContext:
    function_name: str
    aws_request_id: str = "00000000-0000-4000-8000-000000000000"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:local:000000000000:function:finmaas"
    log_group_name: str = "/aws/lambda/finmaas"
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def load_function(name: str) -> Any:
    path = REPO_ROOT / "functions" / name / "handler.py"
    if not path.is_file():
        known = sorted(p.parent.name for p in (REPO_ROOT / "functions").glob("*/handler.py"))
        raise ValueError(f"no function {name!r}; functions: {', '.join(known)}")
    spec = importlib.util.spec_from_file_location(f"finmaas_function_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler


def cmd_invoke(args: argparse.Namespace) -> int:
    from .keys import ensure_events_identity

    try:
        event = json.loads(Path(args.event).read_text())
    except (OSError, ValueError) as exc:
        _err(f"cannot read event {args.event}: {exc}")
        return 2
    settings = Settings.from_env()
    if not settings.tenants_table:
        ensure_events_identity(_tenants(settings))
    captured = io.StringIO()
    # Logs and EMF metrics go to stderr, the Lambda response to stdout (as sam does).
    with contextlib.redirect_stdout(captured):
        handler = load_function(args.function)
        response = handler(event, LocalLambdaContext(function_name=args.function))
    sys.stderr.write(captured.getvalue())
    print(json.dumps(response, indent=2))
    return 0


# -- tenants and keys --------------------------------------------------------------------
def cmd_tenants_create(args: argparse.Namespace) -> int:
    from .tenants.base import TenantExists

    try:
        tenant = _tenants(Settings.from_env()).create_tenant(args.name, args.plan)
    except TenantExists as exc:
        _err(str(exc))
        return 1
    print(f"created tenant {tenant.name} on plan {tenant.plan}")
    return 0


def cmd_tenants_list(args: argparse.Namespace) -> int:
    tenants = _tenants(Settings.from_env())
    rows = [(t.name, t.plan, t.status, str(sum(k.active for k in tenants.list_keys(t.name))),
             t.created_at) for t in tenants.list_tenants()]
    _table(["tenant", "plan", "status", "active keys", "created"], rows)
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    issued = _issuer(Settings.from_env()).create(args.tenant)
    print(f"created key {issued.key.key_id} for tenant {issued.key.tenant}; "
          "the key is shown once, store it now:", file=sys.stderr)
    print(issued.secret)
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    key = _issuer(Settings.from_env()).revoke(args.key_id)
    print(f"revoked key {key.key_id} of tenant {key.tenant} at {key.revoked_at}")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    keys = _tenants(Settings.from_env()).list_keys(args.tenant)
    _table(["key id", "tenant", "created", "revoked"],
           [(k.key_id, k.tenant, k.created_at, k.revoked_at or "-") for k in keys])
    return 0


# -- usage and invoices ------------------------------------------------------------------
def cloud_event(rec: Any, stage: str) -> dict[str, Any]:
    """CloudEvents 1.0, the shape OpenMeter ingests (id = request id, subject = tenant)."""
    return {
        "specversion": "1.0",
        "type": "finmaas.prediction",
        "source": f"finmaas/{stage}",
        "id": rec.request_id,
        "subject": rec.tenant,
        "time": rec.timestamp.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": {"model": rec.model, "version": rec.version, "units": rec.units,
                 "unit_price_usd": str(rec.unit_price), "amount_usd": str(rec.amount),
                 "key_id": rec.key_id, "latency_ms": rec.latency_ms},
    }


def cmd_usage_export(args: argparse.Namespace) -> int:
    from .billing import MONTH_RE
    from .metering import open_metering_store

    if not MONTH_RE.match(args.month):
        _err("--month must be YYYY-MM")
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
    from .billing import build_invoice, parse_month
    from .errors import ApiError
    from .metering import open_metering_store
    from .plans import get_plan

    settings = Settings.from_env()
    tenant = _tenants(settings).get_tenant(args.tenant)
    if tenant is None:
        _err(f"no tenant {args.tenant!r}")
        return 1
    today = datetime.now(UTC).date()
    month = args.month or today.strftime("%Y-%m")
    try:
        parse_month(month, today)
    except ApiError as exc:
        _err(exc.message)
        return 2
    rows = open_metering_store(settings).month_usage(tenant.name, month)
    invoice = build_invoice(tenant.name, get_plan(tenant.plan), month, rows, today)
    if args.json:
        print(json.dumps(invoice, indent=2))
        return 0
    print(f"Invoice {invoice['month']} for {invoice['tenant']} (plan {invoice['plan']}, "
          f"{invoice['status']})\n")
    _table(["model", "version", "requests", "units", "unit price USD", "amount USD"],
           [(ln["model"], ln["version"], str(ln["requests"]), str(ln["units"]),
             ln["unit_price_usd"], ln["amount_usd"]) for ln in invoice["lines"]])
    inc = invoice["included_units"]
    print(f"\nsubtotal            {invoice['subtotal_usd']}\n"
          f"included units      -{inc['credit_usd']} ({inc['used']} of {inc['allowance']})\n"
          f"discount            -{invoice['discount']['amount_usd']} "
          f"({invoice['discount']['percent']}%)\n"
          f"total               {invoice['total_usd']} {invoice['currency']}")
    return 0


def _table(headers: list[str], rows: list[tuple[str, ...]]) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def register(sub: Any) -> None:
    from .plans import load_plans

    p = sub.add_parser("serve", help="run the local API (gateway + app) with uvicorn")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("invoke", help="run a function's handler on a Lambda event, in-process")
    p.add_argument("function", help="function name under functions/, e.g. inference")
    p.add_argument("event", help="a JSON event file, e.g. events/predict-credit-risk.json")
    p.set_defaults(func=cmd_invoke)

    tenants = sub.add_parser("tenants", help="manage tenants").add_subparsers(
        dest="tenants_command", required=True)
    p = tenants.add_parser("create", help="create a tenant on a plan")
    p.add_argument("name")
    p.add_argument("--plan", required=True, choices=sorted(load_plans()))
    p.set_defaults(func=cmd_tenants_create)
    p = tenants.add_parser("list", help="list tenants")
    p.set_defaults(func=cmd_tenants_list)

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
    p.set_defaults(func=cmd_keys_list)

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
