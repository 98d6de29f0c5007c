"""``maas batch``: score a whole file.

- ``run``: locally, over a local file, with the embedded (or configured) stores; resumes
  an interrupted run without billing its finished chunks again.
- ``submit``, ``status``, ``list``: a tenant's jobs through the public API (the local
  server, or the stack's API Gateway URL with ``s3://`` locations), with the tenant's
  key; ``submit`` follows the job until it ends.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ..config import ENV_API_KEY, ENV_API_URL, Settings
from .common import err, note_store, print_json, table

POLL_SECONDS = 2.0


def _bar(done: int, total: int | None, rate: float, width: int = 24) -> str:
    if not total:
        return f"{done:,} rows  {rate:,.0f} rows/s"
    share = min(1.0, done / total)
    filled = int(share * width)
    eta = (total - done) / rate if rate > 0 else float("inf")
    eta_text = f"{eta:,.0f}s" if eta != float("inf") else "?"
    return (f"[{'#' * filled}{'.' * (width - filled)}] {share:6.1%}  {done:,}/{total:,} rows  "
            f"{rate:,.0f} rows/s  ETA {eta_text}")


def cmd_run(args: Any) -> int:
    from ..batch import open_job_store
    from ..batch.jobs import BatchJob, new_job_id
    from ..batch.local import Progress, count_rows, resumable_job_id, run_file
    from ..batch.rows import format_of
    from ..metering import open_metering_store
    from ..registry import open_registry
    from ..service import Caller, PredictionService
    from .common import open_tenants, require_tenant

    settings = Settings.from_env()
    source, results = Path(args.input), Path(args.output)
    if not source.is_file():
        raise ValueError(f"{source}: no such input file")
    fmt = format_of(source.name)
    if not 1 <= args.chunk_rows <= 10_000:
        raise ValueError("--chunk-rows must be between 1 and 10000")
    if args.workers < 1:
        raise ValueError("--workers must be at least 1")
    tenant = require_tenant(open_tenants(settings), args.tenant)
    registry = open_registry(settings)
    service = PredictionService(registry, open_metering_store(settings))
    jobs = open_job_store(settings)
    note_store(open_tenants(settings))
    job_id = resumable_job_id(results, source, args.model, args.chunk_rows)
    kind = "explanation" if args.explain else "prediction"
    if job_id is not None:
        job = jobs.get(job_id)
        if job is None or job.tenant != tenant.name or job.kind != kind:
            raise ValueError(f"{results}.parts belongs to job {job_id}, which this store "
                             f"has no record of for tenant {tenant.name} ({kind}s): delete "
                             "that folder to start over")
        print(f"resuming job {job_id} ({job.model} v{job.version})", file=sys.stderr)
    else:
        job_id = new_job_id()
        version = registry.resolve(args.model, args.version, assign=job_id)
        model = registry.model_of_alias(args.model, args.version, version)
        if model.card.is_text:
            raise ValueError(f"{args.model} is a text model: batch jobs score tabular models")
        if args.explain and model.explainer is None:
            raise ValueError(f"{args.model} v{version} does not explain its predictions")
        job = BatchJob(job_id=job_id, tenant=tenant.name, key_id="maas-batch-run",
                       model=args.model, version=version, kind=kind,
                       input=source.resolve().as_uri(), output=results.resolve().as_uri(),
                       results=results.resolve().as_uri(), format=fmt,
                       chunk_rows=args.chunk_rows)
        jobs.create(job)
        print(f"job {job_id}: {job.model} v{job.version}, {kind}s, chunks of "
              f"{job.chunk_rows} rows, {args.workers} worker(s)", file=sys.stderr)
    progress = Progress(total_rows=count_rows(source, fmt))
    shown = [0.0]

    def show(p: Progress) -> None:
        now = time.monotonic()
        if now - shown[0] < 0.2 and p.rows_seen < (p.total_rows or 0):
            return
        shown[0] = now
        rate = (p.rows_seen - p.resumed_rows) / max(now - p.started, 1e-9)
        print(f"\r{_bar(p.rows_seen, p.total_rows, rate)}", end="", file=sys.stderr,
              flush=True)

    caller = Caller(tenant.name, tenant.plan, job.key_id, job_id)
    finished = run_file(service, jobs, job, caller, source, results, workers=args.workers,
                        on_progress=show, progress=progress)
    print(file=sys.stderr)
    summary = finished.as_dict()
    if args.json:
        print_json(summary)
    else:
        print(f"{finished.rows_done:,} rows scored, {finished.rows_failed:,} failed (their "
              f"errors are in the output), ${summary['cost_usd']} billed to "
              f"{finished.tenant}; results: {results}")
    return 0


# -- the public API's batch routes, as a client ----------------------------------------
def _call(args: Any, method: str, path: str, body: Any = None) -> Any:
    base = (args.api or os.environ.get(ENV_API_URL) or "http://127.0.0.1:8000").rstrip("/")
    key = args.key or os.environ.get(ENV_API_KEY)
    if not key:
        raise ValueError(f"give the tenant's API key with --key or {ENV_API_KEY}")
    data = json.dumps(body).encode() if body is not None else None
    headers = {"x-api-key": key, "accept": "application/json"}
    if data is not None:
        headers["content-type"] = "application/json"
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read())["error"]
            message = f"{exc.code} {error['code']}: {error['message']}"
            for detail in error.get("details") or []:
                message += f"\n  {detail.get('field')}: {detail.get('message')}"
        except (ValueError, KeyError, TypeError):
            message = f"{exc.code} {exc.reason}"
        raise ApiCallFailed(message) from None
    except urllib.error.URLError as exc:
        raise ApiCallFailed(f"cannot reach {base}: {exc.reason}") from None


class ApiCallFailed(Exception):
    pass


def _follow(args: Any, job: dict[str, Any]) -> int:
    started = time.monotonic()
    while job["status"] == "running":
        rate = job["rows_done"] / max(time.monotonic() - started, 1e-9)
        print(f"\r{job['job_id']} running: {job['rows_done']:,} rows scored, "
              f"{job['rows_failed']:,} failed, ${job['cost_usd']}  ({rate:,.0f} rows/s)",
              end="", file=sys.stderr, flush=True)
        time.sleep(POLL_SECONDS)
        job = _call(args, "GET", f"/v1/batch-jobs/{job['job_id']}")
    print(file=sys.stderr)
    print(f"{job['job_id']} {job['status']}: {job['rows_done']:,} rows scored, "
          f"{job['rows_failed']:,} failed, ${job['cost_usd']}; results: {job['results']}")
    if job.get("error"):
        err(job["error"])
    return 0 if job["status"] == "succeeded" else 1


def _api_command(fn: Any) -> Any:
    def run(args: Any) -> int:
        try:
            return int(fn(args))
        except ApiCallFailed as exc:
            err(str(exc))
            return 1
    return run


@_api_command
def cmd_submit(args: Any) -> int:
    body: dict[str, Any] = {"model": args.model, "input": args.input, "output": args.output}
    if args.version:
        body["version"] = args.version
    if args.explain:
        body["explain"] = True
    job = _call(args, "POST", "/v1/batch-jobs", body)
    print(f"submitted {job['job_id']}: {job['model']} v{job['version']}", file=sys.stderr)
    if args.no_wait:
        print_json(job)
        return 0
    return _follow(args, job)


@_api_command
def cmd_status(args: Any) -> int:
    job = _call(args, "GET", f"/v1/batch-jobs/{args.job_id}")
    if args.wait:
        return _follow(args, job)
    print_json(job)
    return 0


@_api_command
def cmd_list(args: Any) -> int:
    jobs = _call(args, "GET", "/v1/batch-jobs")["jobs"]
    if args.json:
        print_json(jobs)
        return 0
    table(["job", "model", "version", "status", "rows", "failed", "cost_usd", "created"],
          [(j["job_id"], j["model"], j["version"], j["status"], str(j["rows_done"]),
            str(j["rows_failed"]), j["cost_usd"], j["created_at"]) for j in jobs])
    return 0


def _client_args(p: Any) -> None:
    p.add_argument("--api", help=f"the API's base URL (default: ${ENV_API_URL}, else the "
                                 "local server http://127.0.0.1:8000)")
    p.add_argument("--key", help=f"the tenant's API key (default: ${ENV_API_KEY})")


def register(sub: Any) -> None:
    from ..keys import EVENTS_TENANT

    batch = sub.add_parser("batch", help="score a whole file: locally, or as a job").add_subparsers(
        dest="batch_command", required=True)
    p = batch.add_parser("run", help="score a local CSV or JSON Lines file (resumable)")
    p.add_argument("model", help="model name, e.g. credit-risk")
    p.add_argument("--input", required=True, help="a .csv (with a header) or .jsonl file")
    p.add_argument("--output", required=True, help="the results file (JSON Lines)")
    p.add_argument("--version", help="a version or alias (default: production)")
    p.add_argument("--explain", action="store_true", help="explain each row (priced apart)")
    p.add_argument("--chunk-rows", type=int, default=1000, help="rows per chunk (1000)")
    p.add_argument("--workers", type=int, default=1, help="chunks scored at once (1)")
    p.add_argument("--tenant", default=EVENTS_TENANT,
                   help=f"who is billed (default: the demo tenant {EVENTS_TENANT!r})")
    p.add_argument("--json", action="store_true", help="print the finished job as JSON")
    p.set_defaults(func=cmd_run)

    p = batch.add_parser("submit", help="start a job through the API and follow it")
    p.add_argument("model")
    p.add_argument("--input", required=True, help="s3://bucket/key.csv|.jsonl (file:// locally)")
    p.add_argument("--output", required=True, help="a prefix ending in '/'")
    p.add_argument("--version")
    p.add_argument("--explain", action="store_true")
    p.add_argument("--no-wait", action="store_true", help="print the job and return")
    _client_args(p)
    p.set_defaults(func=cmd_submit)

    p = batch.add_parser("status", help="a job's status, rows and cost")
    p.add_argument("job_id")
    p.add_argument("--wait", action="store_true", help="follow it until it ends")
    _client_args(p)
    p.set_defaults(func=cmd_status)

    p = batch.add_parser("list", help="your jobs, newest first")
    p.add_argument("--json", action="store_true")
    _client_args(p)
    p.set_defaults(func=cmd_list)
