"""The prediction data plane: resolve the model, validate, run, meter, answer.

No HTTP here: the API layer hands over a parsed body and the caller's identity, and gets
back a result or an ``ApiError``. The order is what makes billing exact:

1. validate and predict (any failure raises before anything is recorded: nothing billed);
2. write the usage record (exactly once per record id; failure -> 503, no prediction);
3. if the record id existed, answer as the first request did (same request id, same
   usage) and bill nothing more; a reused Idempotency-Key with another body is a 409.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from .errors import ApiError, Conflict, ServiceUnavailable
from .metering import (
    MeteringStore,
    MeteringUnavailable,
    UsageRecord,
    format_usd,
    record_id_for,
)
from .metering.base import utcnow
from .registry import ModelRegistry
from .rollout import ShadowStats
from .serving import ServableModel
from .telemetry import NullTelemetry, Telemetry

log = logging.getLogger("finmaas.service")
# what a caller asks for; the usage kind of its record follows the model (rows or tokens)
CALLS = ("prediction", "explanation")


@dataclass(frozen=True)
class Caller:
    """Who is calling, as established by API Gateway (or the local gateway)."""

    tenant: str
    plan: str
    key_id: str
    request_id: str


@dataclass(frozen=True)
class PredictResult:
    body: dict[str, Any]
    replayed: bool


def fingerprint(name: str, ref: str | None, body: bytes, kind: str = "prediction") -> str:
    h = hashlib.sha256()
    h.update(f"{kind}\n{name}\n{ref or ''}\n".encode())
    h.update(body)
    return h.hexdigest()


class PredictionService:
    def __init__(self, registry: ModelRegistry, metering: MeteringStore,
                 telemetry: Telemetry | None = None) -> None:
        self.registry = registry
        self.metering = metering
        self.telemetry = telemetry or NullTelemetry()
        self.shadows = ShadowStats()

    def predict(self, caller: Caller, name: str, ref: str | None, instances: list[Any],
                body: bytes, idempotency_key: str | None = None) -> PredictResult:
        """``body`` is what a retry must repeat (see ``api.body.fingerprint_source``)."""
        return self.serve("prediction", caller, name, ref, instances, body, idempotency_key)

    def serve(self, kind: str, caller: Caller, name: str, ref: str | None,
              instances: list[Any], body: bytes, idempotency_key: str | None,
              labels: Any = None) -> PredictResult:
        """One path for every kind of call: validate and run, record once, answer.
        ``labels`` (text models) turns embedding into zero-shot classification."""
        if kind not in CALLS:
            raise ValueError(f"unknown kind of call {kind!r}; one of {CALLS}")
        started = time.perf_counter()
        record_id = record_id_for(caller.tenant, caller.request_id, idempotency_key)
        # a canary picks by the record id: a retry lands where the first attempt did
        version = self.registry.resolve(name, ref, assign=record_id)
        try:
            model = self.registry.model_of_alias(name, ref, version)
            served = model.serve(kind, instances, labels)
        except ApiError as exc:
            self.telemetry.failed(name, version, exc.status)
            raise
        units = served.units
        unit_price = model.card.price_of(served.kind)
        rec = UsageRecord(
            record_id=record_id,
            request_id=caller.request_id,
            tenant=caller.tenant,
            key_id=caller.key_id,
            model=name,
            version=version,
            units=units,
            unit_price=unit_price,
            amount=unit_price * units,
            latency_ms=int((time.perf_counter() - started) * 1000),
            timestamp=utcnow(),
            fingerprint=fingerprint(name, ref, body, kind),
            idempotency_key=idempotency_key,
            kind=served.kind,
        )
        try:
            stored = self.metering.record(rec)
        except MeteringUnavailable as exc:
            self.telemetry.metering_failed()
            self.telemetry.failed(name, version, 503)
            log.error("usage record not written; prediction withheld",
                      extra={"record_id": rec.record_id, "error": str(exc)})
            raise ServiceUnavailable(
                f"usage could not be recorded, so the {kind} is withheld; retry with the "
                "same Idempotency-Key", code="metering_unavailable", retry_after=1) from exc
        replayed = stored is not rec
        if replayed:
            if stored.fingerprint != rec.fingerprint:
                if idempotency_key is None:
                    raise Conflict(
                        f"request id {caller.request_id} was already answered for a different "
                        "request; send each request with a new request id",
                        code="request_id_reused")
                raise Conflict(
                    "this Idempotency-Key was already used for a different request",
                    code="idempotency_key_reused")
            if stored.version != version:  # the alias moved since: answer as the first time
                model = self.registry.model_of_alias(name, ref, stored.version)
                served = model.serve(kind, instances, labels)
        else:
            self.telemetry.predicted(name, version, units, served.kind,
                                     (time.perf_counter() - started) * 1000)
            shadow = self.registry.shadow(name, ref)
            if shadow is not None:
                self._shadow(name, version, shadow, model, instances, labels,
                             served.predictions)
        answer: dict[str, Any] = {
            "model": name,
            "version": stored.version,
            "request_id": stored.request_id,
        }
        if kind == "explanation" and model.explainer is not None:
            answer["explanation"] = model.explainer.describe()
        answer.update({
            "predictions": served.predictions,
            "output": served.output,
            "usage": {"units": stored.units, "kind": stored.kind,
                      "unit_price_usd": format_usd(stored.unit_price),
                      "amount_usd": format_usd(stored.amount)},
        })
        return PredictResult(body=answer, replayed=replayed)

    def _shadow(self, name: str, served: str, shadow: str, model: ServableModel,
                instances: list[Any], labels: Any, predictions: list[dict[str, Any]]
                ) -> None:
        """Run the shadow version on a copy of the request, after the answer is settled
        and billed: its output is never returned nor billed, only compared. Nothing it
        does (a failure, a refusal) can change the caller's answer."""
        try:
            shadowed = self.registry.model(name, shadow).serve("prediction", instances, labels)
            diff, flips = model.compare(predictions, shadowed.predictions)
        except Exception as exc:
            log.warning("shadow version failed", extra={"model": name, "shadow": shadow,
                                                       "error": str(exc)})
            self.shadows.add(name, served, shadow, failed=True)
            self.telemetry.shadowed(name, shadow, len(instances), None, None)
            return
        rows = len(predictions)
        self.shadows.add(name, served, shadow, rows=rows, abs_diff_sum=diff, flips=flips)
        self.telemetry.shadowed(name, shadow, rows, diff / rows,
                                flips / rows if flips is not None else None)
