"""Usage records and their rollups.

Exactly once: a usage record's id is derived from the tenant and the request
(``req:<sha256 of tenant and API Gateway request id>``) or, when the client sends
``Idempotency-Key``, from the tenant and that key (``idem:<sha256>``). Recording inserts
the record only if its id is new and, in the same atomic step, adds it to a daily rollup.
A duplicate returns the first record instead.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

NANO = Decimal("0.000000001")
# What a usage record's units count: predicted rows, explained rows (priced apart), the
# tokens a text model read, or rows a batch job predicted or explained (at the same
# prices, on invoice lines of their own); and the unit each kind counts in.
KINDS = ("prediction", "explanation", "token", "batch_prediction", "batch_explanation")
UNITS = {"prediction": "row", "explanation": "row", "token": "token",
         "batch_prediction": "row", "batch_explanation": "row"}
BATCH_KIND = {"prediction": "batch_prediction", "explanation": "batch_explanation"}


class MeteringUnavailable(Exception):
    """The usage record could not be written: the caller must not get the prediction."""




def record_id_for(tenant: str, request_id: str, idempotency_key: str | None) -> str:
    """Scoped by tenant either way: another tenant's request id or key (a forged event,
    a guessed key) names another record, never this tenant's answer."""
    if idempotency_key is not None:
        digest = hashlib.sha256(f"{tenant}\n{idempotency_key}".encode()).hexdigest()
        return f"idem:{digest}"
    digest = hashlib.sha256(f"{tenant}\n{request_id}".encode()).hexdigest()
    return f"req:{digest}"


def to_nanos(amount: Decimal) -> int:
    nanos = amount / NANO
    if nanos != nanos.to_integral_value():
        raise ValueError(f"amount {amount} is finer than a nano-dollar")
    return int(nanos)


def format_usd(amount: Decimal) -> str:
    """An exact decimal string for the API: no exponent, no trailing zeros ("0.0005")."""
    return format(amount.normalize(), "f") if amount else "0"


def from_nanos(nanos: int) -> Decimal:
    return (Decimal(nanos) * NANO).normalize() if nanos else Decimal(0)


@dataclass(frozen=True)
class UsageRecord:
    record_id: str
    request_id: str
    tenant: str
    key_id: str
    model: str
    version: str
    units: int
    unit_price: Decimal
    amount: Decimal
    latency_ms: int
    timestamp: datetime
    fingerprint: str
    idempotency_key: str | None = None
    kind: str = "prediction"

    @property
    def day(self) -> str:
        return self.timestamp.date().isoformat()

    @property
    def month(self) -> str:
        return self.day[:7]


@dataclass(frozen=True)
class DailyUsage:
    """One rollup row: a tenant's usage of one model version, of one kind (predictions or
    explanations), on one UTC day."""

    day: str
    model: str
    version: str
    requests: int
    units: int
    amount: Decimal
    kind: str = "prediction"


def utcnow() -> datetime:
    return datetime.now(UTC)


class MeteringStore(ABC):
    # whether ``record`` raises WouldWait under NO_WAIT instead of waiting (SQLite does)
    honours_no_wait = False

    @abstractmethod
    def record(self, rec: UsageRecord) -> UsageRecord:
        """Store ``rec`` once. Returns ``rec`` if new, or the record stored first under the
        same id. Raises MeteringUnavailable if the store cannot be written."""

    @abstractmethod
    def get(self, record_id: str) -> UsageRecord | None: ...

    @abstractmethod
    def daily_usage(self, tenant: str, start: date, end: date) -> list[DailyUsage]:
        """Rollup rows for ``start..end`` inclusive, read from rollups, not raw records."""

    @abstractmethod
    def export(self, month: str) -> Iterator[UsageRecord]:
        """Raw records of a month, for external billing systems (operator use)."""

    def month_usage(self, tenant: str, month: str) -> list[DailyUsage]:
        first = date.fromisoformat(f"{month}-01")
        nxt = date(first.year + first.month // 12, first.month % 12 + 1, 1)
        return self.daily_usage(tenant, first, date.fromordinal(nxt.toordinal() - 1))
