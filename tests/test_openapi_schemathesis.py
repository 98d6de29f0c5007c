"""Schemathesis against the served document, in-process through the local gateway: what
it generates from the document (positive and negative, examples, coverage and fuzzing
phases) gets no 5xx, and every answer's status, content type and body are the documented
ones. Bounded (30 fuzzed examples per operation) and deterministic, so a run repeats.

The app is built when this module is imported, because ``@schema.parametrize()`` needs
the operations at collection time (``schemathesis.pytest.from_fixture`` would defer it,
but schemathesis 4.32 reads ``request.node._nodeid``, which pytest 9.2 no longer has).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import schemathesis
from finmaas.api import build_services, create_app
from finmaas.config import Settings
from finmaas.gateway import LocalGateway
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import MODEL_STORE, make_tenant

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
CONFIG = {
    "generation": {"max-examples": 30, "deterministic": True},
    "phases": {"stateful": {"enabled": False}},
}

_home = tempfile.TemporaryDirectory(prefix="finmaas-schemathesis-")  # removed at exit
_services = build_services(Settings.from_env(
    env={}, home=Path(_home.name) / "home", model_store=str(MODEL_STORE),
    cache_dir=Path(_home.name) / "cache", ort_threads=1))
# enterprise: a burst of 1,000, so the gateway's rate limit rarely answers for the app
_key = make_tenant(_services, "fuzz", plan="enterprise")
_app = LocalGateway(create_app(_services), _services.tenants,
                    quota_seed=_services.metering.count_requests)
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", _app,
    config=schemathesis.Config.from_dict({**CONFIG, "headers": {"x-api-key": _key}}))


@pytest.mark.slow  # about 20 s: the coverage phase sends 1,000-instance batches
@schema.parametrize()
def test_generated_requests_get_documented_answers(case):
    case.call_and_validate(checks=CHECKS)
