"""What every ``maas`` command shares: messages, tables and JSON, and opening the
configured tenant store and key issuer."""

from __future__ import annotations

import json
import sys
from typing import Any

from ..config import Settings


def err(msg: str) -> None:
    print(f"maas: {msg}", file=sys.stderr)


def table(headers: list[str], rows: list[tuple[str, ...]]) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2))


def note_store(store: Any) -> None:
    """Commands that write say where (stderr, so stdout stays parseable): a wrong
    MAAS_HOME or table otherwise fails silently, into a store nobody reads."""
    print(f"store: {store.location}", file=sys.stderr)


def require_tenant(store: Any, name: str) -> Any:
    tenant = store.get_tenant(name)
    if tenant is None:
        raise KeyError(f"no tenant {name!r}")
    return tenant


def open_tenants(settings: Settings) -> Any:
    from ..tenants import open_tenant_store

    return open_tenant_store(settings)


def open_issuer(settings: Settings) -> Any:
    from ..keys import ApiGatewayKeyIssuer, LocalKeyIssuer

    tenants = open_tenants(settings)
    if settings.tenants_table:
        return ApiGatewayKeyIssuer(tenants, settings.stage)
    return LocalKeyIssuer(tenants)
