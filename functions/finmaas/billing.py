"""Invoices from daily rollups and the tenant's plan. Pure functions: no store, no clock.

Rules (also in the README):
- one line per model, version and kind (predictions, explanations, tokens, batch
  predictions and batch explanations): units, unit price, amount = units x unit price
  (exact);
- the plan's included units are free predicted rows (by request or by batch job),
  applied in chronological order (day, then model, version and kind), i.e. the month's
  first N predicted rows cost nothing;
- the plan's discount applies to what remains;
- the total is rounded half-up to cents once, at the end; nothing else is rounded.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from .errors import NotFound, Unprocessable
from .metering import UNITS, DailyUsage, format_usd
from .plans import Plan

CENT = Decimal("0.01")
# Months from 1970 on: "0000-01" is no month, and nothing was billed before the epoch.
MONTH_RE = re.compile(r"^(19[7-9]\d|[2-9]\d{3})-(0[1-9]|1[0-2])$")
MAX_USAGE_DAYS = 366
# what the plan's included units cover: predicted rows, by request or by batch job
INCLUDED_KINDS = frozenset({"prediction", "batch_prediction"})


def parse_month(month: str, today: date) -> str:
    if not MONTH_RE.match(month):
        raise Unprocessable(f"month {month!r} must be YYYY-MM, from 1970-01",
                            code="invalid_month")
    if month > today.strftime("%Y-%m"):
        raise NotFound(f"no invoice for {month}: the month has not started",
                       code="invoice_not_found")
    return month


def parse_range(start: str | None, end: str | None, today: date) -> tuple[date, date]:
    try:
        lo = date.fromisoformat(start) if start else today.replace(day=1)
        hi = date.fromisoformat(end) if end else today
    except ValueError as exc:
        raise Unprocessable("start and end must be dates as YYYY-MM-DD",
                            code="invalid_date") from exc
    if lo > hi:
        raise Unprocessable("start must not be after end", code="invalid_range")
    if lo > today:
        raise Unprocessable("start must not be after today: there is no usage yet",
                            code="invalid_range")
    hi = min(hi, today)  # nothing is recorded after today
    if (hi - lo).days >= MAX_USAGE_DAYS:
        raise Unprocessable(f"at most {MAX_USAGE_DAYS} days per request", code="invalid_range")
    return lo, hi


def usage_report(tenant: str, lo: date, hi: date, rows: list[DailyUsage]) -> dict[str, Any]:
    return {
        "tenant": tenant,
        "start": lo.isoformat(),
        "end": hi.isoformat(),
        "currency": "USD",
        "days": [{"date": r.day, "model": r.model, "version": r.version, "kind": r.kind,
                  "unit": UNITS[r.kind], "requests": r.requests, "units": r.units,
                  "amount_usd": format_usd(r.amount)}
                 for r in rows],
        "totals": {"requests": sum(r.requests for r in rows),
                   "units": _units_by_unit(rows),
                   "amount_usd": format_usd(sum((r.amount for r in rows), Decimal(0)))},
    }


def _units_by_unit(rows: list[DailyUsage]) -> dict[str, int]:
    """Rows and tokens are not added together: units per unit ("row", "token")."""
    totals: dict[str, int] = {}
    for r in rows:
        totals[UNITS[r.kind]] = totals.get(UNITS[r.kind], 0) + r.units
    return dict(sorted(totals.items()))


def build_invoice(tenant: str, plan: Plan, month: str, rows: list[DailyUsage],
                  today: date) -> dict[str, Any]:
    lines: dict[tuple[str, str, str], dict[str, Any]] = {}
    remaining = plan.included_units
    included_value = Decimal(0)
    included_used = 0
    for r in sorted(rows, key=lambda r: (r.day, r.model, r.version, r.kind)):
        if r.units == 0:
            continue
        unit_price = r.amount / r.units
        line = lines.setdefault((r.model, r.version, r.kind), {
            "model": r.model, "version": r.version, "kind": r.kind, "requests": 0, "units": 0,
            "unit_price": unit_price, "amount": Decimal(0)})
        line["requests"] += r.requests
        line["units"] += r.units
        line["amount"] += r.amount
        if r.kind not in INCLUDED_KINDS:
            continue  # the plan's included units are predicted rows
        free = min(remaining, r.units)
        remaining -= free
        included_used += free
        included_value += free * unit_price
    subtotal = sum((line["amount"] for line in lines.values()), Decimal(0))
    after_included = subtotal - included_value
    discount = after_included * plan.discount_percent / 100
    total = (after_included - discount).quantize(CENT, rounding=ROUND_HALF_UP)
    return {
        "tenant": tenant,
        "month": month,
        "plan": plan.name,
        "currency": "USD",
        "status": "open" if month >= today.strftime("%Y-%m") else "final",
        "lines": [
            {"model": ln["model"], "version": ln["version"], "kind": ln["kind"],
             "unit": UNITS[ln["kind"]], "requests": ln["requests"], "units": ln["units"],
             "unit_price_usd": format_usd(ln["unit_price"]),
             "amount_usd": format_usd(ln["amount"])}
            for ln in sorted(lines.values(),
                             key=lambda ln: (ln["model"], ln["version"], ln["kind"]))
        ],
        "subtotal_usd": format_usd(subtotal),
        "included_units": {"allowance": plan.included_units, "used": included_used,
                           "credit_usd": format_usd(included_value)},
        "discount": {"percent": str(plan.discount_percent), "amount_usd": format_usd(discount)},
        "total_usd": str(total),
    }
