"""The prediction data plane: resolve the model, validate, run, meter, answer.

No HTTP here: the API layer hands over a parsed body and the caller's identity, and gets
back a result or an ``ApiError``. The order is what makes billing exact:

1. validate and predict (any failure raises before anything is recorded: nothing billed);
2. write the usage record (exactly once per record id; failure -> 503, no prediction);
3. if the record id existed, answer as the first request did (same request id, same
   usage) and bill nothing more; a reused Idempotency-Key with another body is a 409.

A batch job's chunk (``score_chunk``) goes the same way with one difference: a row that
fails validation fails alone (its error is its output line) and is not billed; the good
rows are billed in one usage record whose id is the job's and the chunk's, so a retried
or redriven chunk is billed once.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import orjson

from .errors import ApiError, Conflict, ServiceUnavailable, Unprocessable
from .metering import (
    BATCH_KIND,
    MeteringStore,
    MeteringUnavailable,
    UsageRecord,
    format_usd,
    record_id_for,
)
from .metering.base import utcnow
from .nowait import WouldWait
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


@dataclass(frozen=True)
class ChunkRow:
    """One row of a batch job's input: its id, its fields, and the reason it could not
    even be read (a malformed line), if any."""

    row_id: Any
    record: Any
    problem: dict[str, Any] | None = None


@dataclass(frozen=True)
class ChunkResult:
    """A scored chunk: one output line per input row, in input order (a prediction, or
    the row's own error), and what was billed for it."""

    lines: list[dict[str, Any]]
    good: int
    failed: int
    amount: Decimal
    replayed: bool


def chunk_record_id(tenant: str, job_id: str, chunk_id: str) -> str:
    """Deterministic: every attempt at a chunk (a retry, a redrive, a resumed local run)
    names the same usage record."""
    digest = hashlib.sha256(f"{tenant}\n{job_id}\n{chunk_id}".encode()).hexdigest()
    return f"batch:{digest}"


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
            shadow = self.registry.shadow(name, ref)  # read before anything is billed
        except ApiError as exc:
            self.telemetry.failed(name, version, exc.status)
            raise
        units = served.units
        rec = self._usage(caller, record_id, model, served.kind, units, started,
                          fingerprint(name, ref, body, kind), idempotency_key)
        stored = self._record(rec, kind)
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

    def score_chunk(self, caller: Caller, job_id: str, chunk_id: str, name: str,
                    version: str, kind: str, rows: list[ChunkRow]) -> ChunkResult:
        """Score one chunk of a batch job on a pinned version: the same model, validation
        and metering as ``serve``, except that a bad row fails alone. The good rows are
        billed in one record (kind ``batch_prediction`` or ``batch_explanation``) whose id
        is the job's and the chunk's: any number of attempts bill once. Raises
        ``ServiceUnavailable`` when the record cannot be written (the chunk is retried)
        and ``Conflict`` if the chunk id was billed for other rows."""
        if kind not in CALLS:
            raise ValueError(f"unknown kind of call {kind!r}; one of {CALLS}")
        started = time.perf_counter()
        caller = replace(caller, request_id=f"{job_id}/{chunk_id}")
        model = self.registry.model(name, version)
        readable = [row for row in rows if row.problem is None]
        outputs = self._score_rows(model, kind, [row.record for row in readable])
        by_row = dict(zip(map(id, readable), outputs, strict=True))
        lines: list[dict[str, Any]] = []
        good = 0
        for row in rows:
            out = by_row.get(id(row), {"error": row.problem})
            good += "prediction" in out
            lines.append({"row_id": row.row_id, **out})
        failed = len(rows) - good
        if not good:  # nothing scored: nothing to bill
            return ChunkResult(lines, 0, failed, Decimal(0), replayed=False)
        ids = hashlib.sha256(orjson.dumps([row.row_id for row in rows])).hexdigest()
        rec = self._usage(caller, chunk_record_id(caller.tenant, job_id, chunk_id), model,
                          BATCH_KIND[kind], good, started,
                          fingerprint(name, version, f"{job_id}/{chunk_id}/{ids}".encode(),
                                      BATCH_KIND[kind]), None)
        stored = self._record(rec, kind)
        if stored is not rec and stored.fingerprint != rec.fingerprint:
            raise Conflict(f"chunk {chunk_id} of job {job_id} was already billed for other "
                           "rows", code="chunk_conflict")
        if stored is rec:
            self.telemetry.predicted(name, version, good, rec.kind,
                                     (time.perf_counter() - started) * 1000)
        return ChunkResult(lines, stored.units, failed, stored.amount,
                           replayed=stored is not rec)

    @staticmethod
    def _score_rows(model: ServableModel, kind: str, records: list[Any]
                    ) -> list[dict[str, Any]]:
        """``{"prediction": ...}`` or ``{"error": ...}`` per record. The chunk runs at
        once; when the model refuses it, the rows its error names (up to ``MAX_DETAILS``
        a pass) are run alone, so each gets its own error (the one ``/v1`` would give it),
        and the rest run together again. Only an error that names no row sends the rest
        row by row."""
        outputs: list[dict[str, Any] | None] = [None] * len(records)

        def alone(i: int) -> None:
            try:
                outputs[i] = {"prediction": model.serve(kind, [records[i]]).predictions[0]}
            except Unprocessable as exc:
                error = exc.body()["error"]
                for detail in error["details"]:  # the row is the line, not instance 0
                    detail.pop("instance", None)
                outputs[i] = {"error": error}

        pending = list(range(len(records)))
        while pending:
            try:
                predictions = model.serve(kind, [records[i] for i in pending]).predictions
            except Unprocessable as exc:
                named = {d["instance"] for d in exc.details
                         if isinstance(d.get("instance"), int)
                         and 0 <= d["instance"] < len(pending)}
                for position in sorted(named) if named else range(len(pending)):
                    alone(pending[position])
                pending = [i for p, i in enumerate(pending) if p not in named] if named \
                    else []
                continue
            for i, prediction in zip(pending, predictions, strict=True):
                outputs[i] = {"prediction": prediction}
            break
        return outputs  # type: ignore[return-value]

    def _usage(self, caller: Caller, record_id: str, model: ServableModel, kind: str,
               units: int, started: float, print_: str, idempotency_key: str | None
               ) -> UsageRecord:
        unit_price = model.card.price_of(kind)
        return UsageRecord(
            record_id=record_id,
            request_id=caller.request_id,
            tenant=caller.tenant,
            key_id=caller.key_id,
            model=model.card.name,
            version=model.card.version,
            units=units,
            unit_price=unit_price,
            amount=unit_price * units,
            latency_ms=int((time.perf_counter() - started) * 1000),
            timestamp=utcnow(),
            fingerprint=print_,
            idempotency_key=idempotency_key,
            kind=kind,
        )

    def _record(self, rec: UsageRecord, kind: str) -> UsageRecord:
        """Write the usage record once; a store that cannot be written withholds the
        answer (503): no service goes unbilled."""
        try:
            return self.metering.record(rec)
        except MeteringUnavailable as exc:
            self.telemetry.metering_failed()
            self.telemetry.failed(rec.model, rec.version, 503)
            log.error("usage record not written; prediction withheld",
                      extra={"record_id": rec.record_id, "error": str(exc)})
            raise ServiceUnavailable(
                f"usage could not be recorded, so the {kind} is withheld; retry with the "
                "same Idempotency-Key", code="metering_unavailable", retry_after=1) from exc

    def _shadow(self, name: str, served: str, shadow: str, model: ServableModel,
                instances: list[Any], labels: Any, predictions: list[dict[str, Any]]
                ) -> None:
        """Run the shadow version on a copy of the request, after the answer is settled
        and billed: its output is never returned nor billed, only compared. Nothing it
        does (a failure, a refusal) can change the caller's answer."""
        try:
            shadowed = self.registry.model(name, shadow).serve("prediction", instances, labels)
            diff, flips = model.compare(predictions, shadowed.predictions)
        except WouldWait:  # on the event loop, the registry busy: this one goes uncompared
            return
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
