"""Batch jobs' control plane: submit, look up and list a tenant's jobs. No HTTP here: the
API hands over the parsed body and the caller, and gets a job or an ``ApiError``.

A job is pinned at submission: the model's version is resolved once (a canary assigns
the job as a whole), the locations are checked against the tenant's allowed area, and
the job's runner (Step Functions in AWS, a thread locally) is started. Submitting bills
nothing; each chunk's good rows are billed as they are scored.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import ApiError, Conflict, NotFound, ServiceUnavailable, Unprocessable
from ..service import Caller, PredictionService
from ..serving import no_explanations
from .jobs import BatchJob, JobStore, new_job_id
from .locations import Location, check_allowed, parse_location
from .rows import format_of

FIELDS = {"model", "version", "input", "output", "explain"}


class JobRunner(Protocol):
    def start(self, job: BatchJob) -> None:
        """Run the job; a job already started is left as it is."""


class InputProbe(Protocol):
    def exists(self, loc: Location) -> bool: ...


class LocalFiles:
    def exists(self, loc: Location) -> bool:
        return loc.scheme == "file" and loc.path.is_file()


@dataclass(frozen=True)
class BatchRequest:
    model: str
    version: str | None
    input: Location
    output: Location
    kind: str


def _invalid(field: str, code: str, message: str) -> Unprocessable:
    return Unprocessable(message, code="invalid_body",
                         details=[{"field": field, "code": code, "message": message}])


def parse_request(doc: Any) -> BatchRequest:
    """The body of ``POST /v1/batch-jobs``, or a 422 naming the field."""
    if not isinstance(doc, dict):
        raise Unprocessable("the body must be a JSON object", code="invalid_body")
    for extra in sorted(set(doc) - FIELDS):
        raise _invalid(extra, "unknown_field",
                       f"{extra!r} is not a field of a batch job; fields: {sorted(FIELDS)}")
    model = doc.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model", "missing" if model is None else "wrong_type",
                       "model must be a model's name")
    version = doc.get("version")
    if version is not None and (not isinstance(version, str) or not version):
        raise _invalid("version", "wrong_type", "version must be a version or an alias")
    explain = doc.get("explain", False)
    if not isinstance(explain, bool):
        raise _invalid("explain", "wrong_type", "explain must be true or false")
    for field in ("input", "output"):
        if field not in doc:
            raise _invalid(field, "missing", f"{field} is required (an s3:// or file:// URL)")
    source = parse_location(doc["input"], "input")
    try:
        format_of(source.key)
    except ValueError as exc:
        raise _invalid("input", "unsupported_format", str(exc)) from exc
    target = parse_location(doc["output"], "output")
    if not target.key.endswith("/"):
        raise _invalid("output", "not_a_prefix",
                       "output must be a prefix ending in '/': each job writes below it")
    return BatchRequest(model, version, source, target,
                        "explanation" if explain else "prediction")


class BatchJobs:
    def __init__(self, predictions: PredictionService, store: JobStore, runner: JobRunner, *,
                 roots: tuple[str, ...], chunk_rows: int, inputs: InputProbe | None = None
                 ) -> None:
        self.predictions = predictions
        self.store = store
        self.runner = runner
        self.roots = roots
        self.chunk_rows = chunk_rows
        self.inputs = inputs or LocalFiles()

    def submit(self, caller: Caller, doc: Any, idempotency_key: str | None = None
               ) -> tuple[BatchJob, bool]:
        """The new job (or, for a repeated Idempotency-Key, the job it started), and
        whether it is new."""
        req = parse_request(doc)
        check_allowed(req.input, caller.tenant, self.roots, "input")
        check_allowed(req.output, caller.tenant, self.roots, "output")
        job_id = new_job_id()
        if idempotency_key is not None:  # a retried submit starts no second job
            digest = hashlib.sha256(f"{caller.tenant}\n{idempotency_key}".encode())
            job_id = f"bj-{digest.hexdigest()[:20]}"
            existing = self.store.get_for(caller.tenant, job_id)
            if existing is not None:
                if (existing.model, existing.input, existing.output, existing.kind) != (
                        req.model, req.input.url, req.output.url, req.kind):
                    raise Conflict("this Idempotency-Key was already used for another job",
                                   code="idempotency_key_reused")
                if existing.status == "running":  # an earlier submit may have died
                    self._start(existing)          # before it started the job
                return existing, False
        registry = self.predictions.registry
        version = registry.resolve(req.model, req.version, assign=job_id)
        model = registry.model_of_alias(req.model, req.version, version)
        if model.card.is_text:
            raise Unprocessable(f"{req.model} is a text model: batch jobs score tabular "
                                "models; send texts to predict", code="batch_not_supported")
        if req.kind == "explanation" and model.explainer is None:
            raise no_explanations(model.card)
        if not self.inputs.exists(req.input):
            raise NotFound(f"input {req.input.url} does not exist", code="input_not_found")
        fmt = format_of(req.input.key)
        results = req.output.child(f"{job_id}/")
        if req.output.scheme == "file":  # locally one file; in AWS one object per chunk
            results = results.child("results.jsonl")
        job = BatchJob(job_id=job_id, tenant=caller.tenant, key_id=caller.key_id,
                       model=req.model, version=version, kind=req.kind, input=req.input.url,
                       output=req.output.url, results=results.url, format=fmt,
                       chunk_rows=self.chunk_rows)
        self.store.create(job)
        self._start(job)
        return job, True

    def _start(self, job: BatchJob) -> None:
        """Start the job's run; runners start a job at most once, so a repeated submit
        may call this again."""
        try:
            self.runner.start(job)
        except ApiError:
            raise
        except Exception as exc:
            self.store.finish(job.job_id, "failed", f"could not start: {exc}"[:500])
            raise ServiceUnavailable("the batch job could not be started; retry shortly",
                                     code="batch_unavailable", retry_after=5) from exc

    def get(self, caller: Caller, job_id: str) -> BatchJob:
        job = self.store.get_for(caller.tenant, job_id)
        if job is None:
            raise NotFound(f"no batch job {job_id!r}", code="job_not_found")
        return job

    def list(self, caller: Caller) -> list[BatchJob]:
        return self.store.list_for(caller.tenant)
