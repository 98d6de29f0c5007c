"""Replay every Lambda event in events/ through functions/inference/handler.py."""

from __future__ import annotations

import json

import pytest
from finmaas.cli_ops import load_function
from finmaas.keys import ensure_events_identity

from tests.conftest import EVENTS, LambdaContext, load_event

MANIFEST = json.loads((EVENTS / "manifest.json").read_text())
EVENT_FILES = sorted(p.name for p in EVENTS.glob("*.json") if p.name != "manifest.json")


@pytest.fixture
def handler(tmp_path, monkeypatch):
    from finmaas.config import Settings
    from finmaas.tenants import open_tenant_store

    monkeypatch.setenv("MAAS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MAAS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "FinMaaS")
    ensure_events_identity(open_tenant_store(Settings.from_env()))
    return load_function("inference")


def test_every_event_is_described_in_the_manifest():
    assert sorted(MANIFEST) == EVENT_FILES


def test_every_route_has_an_event():
    routes = {(load_event(f)["httpMethod"], load_event(f)["resource"]) for f in EVENT_FILES}
    for route in [("GET", "/health"), ("GET", "/v1/models"), ("GET", "/v1/models/{name}"),
                  ("POST", "/v1/models/{name}/predict"),
                  ("POST", "/v1/models/{name}/versions/{version}/predict"),
                  ("GET", "/v1/usage"), ("GET", "/v1/invoices/{month}")]:
        assert route in routes


@pytest.mark.parametrize("name", EVENT_FILES)
def test_event_replays_with_expected_status(handler, name):
    response = handler(load_event(name), LambdaContext())
    expected = MANIFEST[name]["expect_status"]
    assert response["statusCode"] == expected, response["body"]
    body = json.loads(response["body"])
    if expected >= 400:
        assert set(body["error"]) == {"code", "message", "details"}


def test_replaying_the_same_event_bills_once(handler):
    event = load_event("predict-credit-risk-batch.json")
    first = json.loads(handler(event, LambdaContext())["body"])
    second = json.loads(handler(event, LambdaContext())["body"])
    assert first == second
    from datetime import date

    rows = handler.services.metering.daily_usage("demo", date(2000, 1, 1), date(2100, 1, 1))
    assert sum(r.units for r in rows) == 3 and sum(r.requests for r in rows) == 1


def test_events_are_sam_compatible_rest_proxy_events():
    for name in EVENT_FILES:
        event = load_event(name)
        assert event["requestContext"]["requestId"] and event["httpMethod"]
        assert "resource" in event and "isBase64Encoded" in event
        assert event["requestContext"]["stage"] == "prod"


def test_docs_behind_the_stage_prefix_link_the_staged_openapi(handler):
    event = load_event("health.json")
    event = {**event, "path": "/docs", "resource": "/docs",
             "requestContext": {**event["requestContext"], "path": "/prod/docs"}}
    response = handler(event, LambdaContext())
    assert response["statusCode"] == 200 and "/prod/openapi.json" in response["body"]


def test_errors_are_counted_by_code_in_emf(handler, capsys):
    handler(load_event("bad-unknown-model.json"), LambdaContext())
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines()
           if line.startswith('{"_aws"')]
    errors = [m for m in emf if "ClientErrors" in m]
    assert errors and errors[0]["code"] == "model_not_found"
    assert ["service", "code"] in [sorted(d, reverse=True) for d in
                                   errors[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"]]
