"""Replay every Lambda event in events/ through functions/inference/handler.py."""

from __future__ import annotations

import copy
import json
import warnings
from datetime import date

import pytest
from finmaas.cli.invoke import load_function
from finmaas.keys import ensure_events_identity
from starlette.requests import Request

from tests.conftest import EVENTS, LambdaContext, load_event

MANIFEST = json.loads((EVENTS / "manifest.json").read_text())
EVENT_FILES = sorted(p.name for p in EVENTS.glob("*.json") if p.name != "manifest.json")
# The inference function's events (the rollups function's are in test_rollup_stream.py).
INFERENCE_EVENTS = [name for name in EVENT_FILES if MANIFEST[name]["function"] == "inference"]
# Events API Gateway's REST API would send; the others are malformed on purpose.
REST_EVENTS = [name for name in INFERENCE_EVENTS if not MANIFEST[name].get("malformed_event")]


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
    routes = {(load_event(f)["httpMethod"], load_event(f)["resource"]) for f in REST_EVENTS}
    for route in [("GET", "/health"), ("GET", "/v1/models"), ("GET", "/v1/models/{name}"),
                  ("POST", "/v1/models/{name}/predict"),
                  ("POST", "/v1/models/{name}/versions/{version}/predict"),
                  ("GET", "/v1/usage"), ("GET", "/v1/invoices/{month}")]:
        assert route in routes


def metered(handler) -> list:
    """Every usage rollup of the events' tenant: empty when nothing was billed."""
    return handler.services.metering.daily_usage("demo", date(2000, 1, 1), date(2100, 1, 1))


@pytest.mark.parametrize("name", INFERENCE_EVENTS)
def test_event_replays_with_expected_status(handler, name):
    response = handler(load_event(name), LambdaContext())
    expected = MANIFEST[name]["expect_status"]
    assert response["statusCode"] == expected, response["body"]
    body = json.loads(response["body"])
    if expected >= 400:
        assert set(body["error"]) == {"code", "message", "details"}
        assert response["headers"]["content-type"] == "application/json"
        assert metered(handler) == []
    if "expect_code" in MANIFEST[name]:
        assert body["error"]["code"] == MANIFEST[name]["expect_code"]


def test_replaying_the_same_event_bills_once(handler):
    event = load_event("predict-credit-risk-batch.json")
    first = json.loads(handler(event, LambdaContext())["body"])
    second = json.loads(handler(event, LambdaContext())["body"])
    assert first == second
    from datetime import date

    rows = handler.services.metering.daily_usage("demo", date(2000, 1, 1), date(2100, 1, 1))
    assert sum(r.units for r in rows) == 3 and sum(r.requests for r in rows) == 1


def test_events_are_sam_compatible_rest_proxy_events():
    for name in REST_EVENTS:
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


def emf_lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()
            if line.startswith('{"_aws"')]


@pytest.mark.parametrize("name", INFERENCE_EVENTS)
def test_an_invocation_raises_no_warning(handler, name):
    # Powertools' log_metrics warned "No application metrics to publish" on every
    # invocation that added no metric to the batch: reads, and every error.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        handler(load_event(name), LambdaContext())


def test_refusing_a_non_object_event_raises_no_warning(handler):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        handler("not an event", LambdaContext())


def test_cold_start_is_counted_once_and_predictions_are_published(handler, capsys):
    handler(load_event("list-models.json"), LambdaContext())
    handler(load_event("predict-credit-risk.json"), LambdaContext())
    handler(load_event("list-models.json"), LambdaContext())
    emf = emf_lines(capsys)
    cold = [m for m in emf if "ColdStart" in m]
    assert len(cold) == 1
    assert cold[0]["function_name"] == "finmaas-inference" and cold[0]["service"] == "inference"
    rows = [m for m in emf if "RowsPredicted" in m]
    assert len(rows) == 1 and rows[0]["RowsPredicted"] == [1.0]
    # per model and version served, so a canary is watched against its primary
    assert (rows[0]["model"], rows[0]["version"], rows[0]["Requests"]) == (
        "credit-risk", "1", [1.0])
    assert rows[0]["Latency"][0] > 0
    # Nothing else: no empty EMF blob for the invocations that measured nothing.
    assert all(m["_aws"]["CloudWatchMetrics"][0]["Metrics"] for m in emf)
    assert len(emf) == 2


def test_a_text_model_publishes_the_tokens_it_read(handler, capsys):
    response = handler(load_event("predict-text-embedding.json"), LambdaContext())
    units = json.loads(response["body"])["usage"]["units"]
    emf = emf_lines(capsys)
    tokens = [m for m in emf if "TokensRead" in m]
    assert [(m["model"], m["TokensRead"]) for m in tokens] == [("text-embedding", [units])]
    assert not [m for m in emf if "RowsPredicted" in m]


def test_a_refused_call_is_counted_against_the_version_that_refused_it(handler, capsys):
    handler(load_event("bad-wrong-type.json"), LambdaContext())
    errors = [m for m in emf_lines(capsys) if "Errors" in m]
    assert [(m["model"], m["version"], m["status"]) for m in errors] == [
        ("loan-default", "1", "4xx")]


def test_errors_are_counted_by_code_in_emf(handler, capsys):
    handler(load_event("bad-unknown-model.json"), LambdaContext())
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines()
           if line.startswith('{"_aws"')]
    errors = [m for m in emf if "ClientErrors" in m]
    assert errors and errors[0]["code"] == "model_not_found"
    assert ["service", "code"] in [sorted(d, reverse=True) for d in
                                   errors[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"]]


def test_paid_routes_are_answered_before_the_fastapi_application_is_built(handler):
    """Lambda serves predict, explain and V2 from a Starlette application of their own;
    the FastAPI application (and its import) waits for the first request that needs it,
    which is then answered as before."""
    app = handler.app
    for name in ("predict-credit-risk.json", "explain-credit-risk.json",
                 "v2-infer-credit-risk.json", "v2-model-metadata.json",
                 "bad-unknown-model.json", "bad-wrong-type.json"):
        assert handler(load_event(name), LambdaContext())["statusCode"] < 500, name
    wrong_method = {**load_event("predict-credit-risk.json"), "httpMethod": "GET",
                    "body": None}
    response = handler(wrong_method, LambdaContext())
    assert response["statusCode"] == 405
    assert json.loads(response["body"])["error"]["code"] == "method_not_allowed"
    assert "POST" in response["multiValueHeaders"].get("allow", response["headers"].get(
        "allow", ""))
    assert not app.built
    response = handler(load_event("list-models.json"), LambdaContext())
    assert response["statusCode"] == 200 and app.built
    assert response["headers"]["x-request-id"]
    not_found = handler(load_event("bad-route.json"), LambdaContext())
    assert not_found["statusCode"] == 404
    assert json.loads(not_found["body"])["error"]["code"] == "route_not_found"


def one_counted_500(handler, event: dict, capsys) -> None:
    response = handler(event, LambdaContext())
    assert response["statusCode"] == 500
    assert json.loads(response["body"])["error"]["code"] == "internal_error"
    assert response["headers"]["x-request-id"] == event["requestContext"]["requestId"]
    faults = [m for m in emf_lines(capsys) if "ServerErrors" in m]
    assert [m["code"] for m in faults] == ["internal_error"]


def test_a_fault_in_the_fastapi_application_is_one_500_counted_once(handler, monkeypatch,
                                                                     capsys):
    def broken() -> list:
        raise RuntimeError("catalogue bug")

    monkeypatch.setattr(handler.services.registry, "catalogue", broken)
    one_counted_500(handler, load_event("list-models.json"), capsys)


def test_a_fault_in_a_paid_route_is_one_500_counted_once(handler, monkeypatch, capsys):
    async def broken(*args, **kwargs):
        raise RuntimeError("prediction bug")

    monkeypatch.setattr(handler.services, "serve", broken)
    one_counted_500(handler, load_event("predict-credit-risk.json"), capsys)
    assert not handler.app.built


def test_a_failed_build_of_the_fastapi_application_is_tried_again(handler, monkeypatch,
                                                                   capsys):
    import finmaas.api.app as api_app

    real = api_app.create_app
    monkeypatch.setattr(api_app, "create_app", lambda services: 1 / 0)
    one_counted_500(handler, load_event("list-models.json"), capsys)
    assert not handler.app.built
    monkeypatch.setattr(api_app, "create_app", real)
    assert handler(load_event("list-models.json"), LambdaContext())["statusCode"] == 200
    assert handler.app.built


def test_fastapi_routes_behind_the_paid_routes_resolve_their_own_urls(handler):
    """Starlette keeps the first router it finds in the scope: the FastAPI application
    must see its own, or ``url_for`` looks among the paid routes only."""
    full = handler.app.fastapi_app()

    @full.get("/v1/where-is-health")
    async def where(request: Request) -> dict:
        return {"url": str(request.url_for("health"))}

    event = {**load_event("list-models.json"), "path": "/v1/where-is-health",
             "resource": "/v1/where-is-health"}
    response = handler(event, LambdaContext())
    assert response["statusCode"] == 200, response["body"]
    assert json.loads(response["body"])["url"].endswith("/health")


# -- the handler's edge: events that are not REST API proxy events ------------------------
def predict_event() -> dict:
    return copy.deepcopy(load_event("predict-credit-risk.json"))


def _set(path: str, value: object):
    def change(event: dict) -> None:
        *parents, last = path.split(".")
        for key in parents:
            event = event[key]
        event[last] = value
    return change


def _drop(path: str):
    def change(event: dict) -> None:
        *parents, last = path.split(".")
        for key in parents:
            event = event[key]
        del event[last]
    return change


MALFORMED = {
    "no requestContext": _drop("requestContext"),
    "null requestContext": _set("requestContext", None),
    "requestContext a string": _set("requestContext", "ctx"),
    "no identity": _drop("requestContext.identity"),
    "null identity": _set("requestContext.identity", None),
    "apiKeyId a list": _set("requestContext.identity.apiKeyId", ["evtdemokey"]),
    "apiKeyId a number": _set("requestContext.identity.apiKeyId", 7),
    "apiKeyId an object": _set("requestContext.identity.apiKeyId", {"id": "evtdemokey"}),
    "no requestId": _drop("requestContext.requestId"),
    "empty requestId": _set("requestContext.requestId", ""),
    "requestId a number": _set("requestContext.requestId", 5),
    "no httpMethod": _drop("httpMethod"),
    "httpMethod a number": _set("httpMethod", 1),
    "no path": _drop("path"),
    "no resource": _drop("resource"),
    "headers a list": _set("headers", ["Accept"]),
    "header value a number": _set("headers.Accept", 5),
    "multiValueHeaders value a string": _set("multiValueHeaders.Accept", "application/json"),
    "query parameters a list": _set("queryStringParameters", ["a"]),
    "body an object": _set("body", {"instances": []}),
    "isBase64Encoded a string": _set("isBase64Encoded", "yes"),
    "body not base64": lambda e: e.update(isBase64Encoded=True, body="{not base64}"),
    "body base64 with bad padding": lambda e: e.update(isBase64Encoded=True, body="abc"),
    # a direct invoke can hold lone surrogates, which Mangum cannot encode (was a 500)
    "lone surrogate in the body": _set("body", '{"instances": [{"text": "a\ud800b"}]}'),
    "lone surrogate in a header": _set("headers.Idempotency-Key", "k\ud800"),
    "lone surrogate in the path": _set("path", "/v1/models/\udfff/predict"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_event_answers_invalid_event_and_bills_nothing(handler, case):
    event = predict_event()
    MALFORMED[case](event)
    response = handler(event, LambdaContext())
    assert response["statusCode"] == 400, response["body"]
    assert response["headers"]["content-type"] == "application/json"
    error = json.loads(response["body"])["error"]
    assert error["code"] == "invalid_event" and error["message"] and error["details"]
    ctx = event.get("requestContext")
    request_id = ctx.get("requestId") if isinstance(ctx, dict) else None
    if isinstance(request_id, str) and request_id:
        assert response["headers"]["x-request-id"] == request_id
    else:
        assert "x-request-id" not in response["headers"]
    assert metered(handler) == []


@pytest.mark.parametrize("event", [None, 5, "garbage", [], ["a", 1], True, 1.5],
                         ids=repr)
def test_an_event_that_is_not_an_object_does_not_crash_the_handler(handler, event):
    response = handler(event, LambdaContext())
    assert response["statusCode"] == 400
    assert json.loads(response["body"])["error"]["code"] == "invalid_event"
    assert response["headers"] == {"content-type": "application/json"}


def test_an_http_api_v2_event_is_refused_with_a_clear_error(handler):
    event = load_event("bad-event-http-api-v2.json")
    response = handler(event, LambdaContext())
    assert response["statusCode"] == 400
    error = json.loads(response["body"])["error"]
    assert error["code"] == "unsupported_event" and "REST API" in error["message"]
    assert response["headers"]["x-request-id"] == event["requestContext"]["requestId"]
    assert metered(handler) == []


@pytest.mark.parametrize("key_id", [None, ""], ids=["null", "empty"])
def test_no_api_key_id_on_a_keyed_route_is_still_the_apps_401(handler, key_id):
    event = predict_event()
    event["requestContext"]["identity"]["apiKeyId"] = key_id
    response = handler(event, LambdaContext())
    assert response["statusCode"] == 401
    assert json.loads(response["body"])["error"]["code"] == "missing_api_key"


def test_a_valid_base64_body_still_predicts(handler):
    import base64

    event = predict_event()
    event.update(isBase64Encoded=True, body=base64.b64encode(event["body"].encode()).decode())
    response = handler(event, LambdaContext())
    assert response["statusCode"] == 200, response["body"]
    assert len(metered(handler)) == 1


def test_an_adapter_failure_is_a_json_500_not_a_crash(handler, monkeypatch):
    from mangum import Mangum

    def broken(self, event, context):
        raise RuntimeError("adapter bug")

    monkeypatch.setattr(Mangum, "__call__", broken)
    event = load_event("list-models.json")
    response = handler(event, LambdaContext())
    assert response["statusCode"] == 500
    assert json.loads(response["body"])["error"]["code"] == "internal_error"
    assert response["headers"]["x-request-id"] == event["requestContext"]["requestId"]


def test_the_console_under_api_gateways_stage_prefix_resolves_its_pages_and_files(
        handler):
    """On API Gateway's default domain every URL carries the stage (/prod/console/...)
    while the event's path does not: the page links and the files must still resolve."""
    def get(path: str) -> dict:
        event = load_event("health.json")
        event = {**event, "path": path, "resource": "/console/{proxy+}",
                 "requestContext": {**event["requestContext"], "path": f"/prod{path}",
                                    "stage": "prod"}}
        return handler(event, LambdaContext())

    page = get("/console/models/credit-risk")
    assert page["statusCode"] == 200
    assert 'src="/prod/console/static/console.js"' in page["body"]
    assert 'data-root="/prod"' in page["body"]
    for name, kind in (("console.js", "javascript"), ("console.css", "css"),
                       ("chart.umd.min.js", "javascript")):
        served = get(f"/console/static/{name}")
        assert served["statusCode"] == 200, (name, served["body"][:200])
        assert kind in served["headers"]["content-type"]
    assert get("/console/static/shell.html")["statusCode"] == 404  # only the named files
    assert get("/console")["headers"]["location"] == "/prod/console/"


def test_v2_binary_tensors_survive_api_gateways_base64_both_ways(handler):
    """With every body a binary media type, API Gateway hands the function base64 and
    decodes a base64 answer: the binary tensor extension works through it."""
    import base64
    import struct

    example_row = json.loads(load_event("v2-infer-credit-risk.json")["body"])["inputs"]
    header = {"inputs": [], "parameters": {"binary_data_output": True}}
    blobs = []
    for tensor in example_row:
        if tensor["datatype"] == "BYTES":
            value = tensor["data"][0].encode()
            blob = struct.pack("<I", len(value)) + value
        else:
            blob = struct.pack("<f", tensor["data"][0])
        header["inputs"].append({**{k: tensor[k] for k in ("name", "datatype", "shape")},
                                 "parameters": {"binary_data_size": len(blob)}})
        blobs.append(blob)
    head = json.dumps(header).encode()
    base = load_event("v2-infer-credit-risk.json")
    event = {**base, "body": base64.b64encode(head + b"".join(blobs)).decode(),
             "isBase64Encoded": True,
             "headers": {**base["headers"], "Inference-Header-Content-Length": str(len(head))},
             "multiValueHeaders": {**base["multiValueHeaders"],
                                   "Inference-Header-Content-Length": [str(len(head))]}}
    response = handler(event, LambdaContext())
    assert response["statusCode"] == 200, response["body"][:300]
    assert response["isBase64Encoded"] is True  # API Gateway decodes it for the client
    raw = base64.b64decode(response["body"])
    length = int(response["headers"]["inference-header-content-length"])
    answer = json.loads(raw[:length])
    (probability,) = struct.unpack("<d", raw[length:])
    assert answer["outputs"][0]["name"] == "probability" and 0 < probability < 1

