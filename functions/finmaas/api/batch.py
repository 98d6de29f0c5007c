"""``/v1/batch-jobs``: submit a batch job, follow it, list the caller's jobs. HTTP only:
the work is ``finmaas.batch.control.BatchJobs``'s."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import body as bodies
from .identity import resolve_caller

if TYPE_CHECKING:
    from .app import Services

MAX_SUBMIT_BYTES = 16_384


def _services(request: Request) -> Services:
    return request.app.state.services


async def submit(request: Request) -> Response:
    from .app import json_response

    s = _services(request)
    caller = await s.caller(request.scope)
    idem = bodies.idempotency_key(request)
    doc, _ = await bodies.read_json(request, MAX_SUBMIT_BYTES)
    job, created = await s.run(s.batch.submit, caller, doc, idem)
    headers = {"Location": f"/v1/batch-jobs/{job.job_id}"}
    if idem is not None:
        headers["Idempotent-Replayed"] = "false" if created else "true"
    return json_response(job.as_dict(), 202 if created else 200, headers)


async def list_jobs(request: Request) -> Response:
    from .app import json_response

    s = _services(request)

    def work() -> dict[str, Any]:
        caller = resolve_caller(request.scope, s.directory)
        return {"jobs": [job.as_dict() for job in s.batch.list(caller)]}

    return json_response(await s.run(work))


async def get_job(request: Request) -> Response:
    from .app import json_response

    s = _services(request)

    def work() -> dict[str, Any]:
        caller = resolve_caller(request.scope, s.directory)
        return s.batch.get(caller, request.path_params["job_id"]).as_dict()

    return json_response(await s.run(work))


ROUTES = [
    Route("/v1/batch-jobs", submit, methods=["POST"], include_in_schema=False),
    Route("/v1/batch-jobs", list_jobs, methods=["GET"], include_in_schema=False),
    Route("/v1/batch-jobs/{job_id}", get_job, methods=["GET"], include_in_schema=False),
]
