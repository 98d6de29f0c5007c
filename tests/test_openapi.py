"""The OpenAPI document: typed bodies for every status of every route, closed instance
schemas within the graphs' numeric range, servers behind the stage prefix, and one build
per catalogue state."""

from __future__ import annotations

import copy
import json
import math
import shutil
from datetime import UTC, datetime

import pytest

from tests.conftest import (
    ALL_MODELS,
    MODEL_NAMES,
    TEXT_MODEL,
    Clock,
    LambdaContext,
    example,
    load_event,
)

FLOAT32_MAX = 3.4028234663852886e38
PREDICT = ("/v1/models/{name}/predict", "/v1/models/{name}/versions/{version}/predict")
EXPLAIN = ("/v1/models/{name}/explain", "/v1/models/{name}/versions/{version}/explain")
KEYED = {"401", "403", "429", "503"}
STATUSES = {
    ("get", "/health"): {"200"},
    ("get", "/v1/models"): {"200", *KEYED},
    ("get", "/v1/models/{name}"): {"200", "404", *KEYED},
    ("get", "/v1/usage"): {"200", "422", *KEYED},
    ("get", "/v1/account"): {"200", *KEYED},
    ("get", "/v1/invoices/{month}"): {"200", "404", "422", *KEYED},
    **{("post", p): {"200", "400", "404", "409", "413", "415", "422", *KEYED}
       for p in (*PREDICT, *EXPLAIN)},
    ("post", "/v1/batch-jobs"): {"200", "202", "400", "404", "409", "413", "415", "422",
                                 *KEYED},
    ("get", "/v1/batch-jobs"): {"200", *KEYED},
    ("get", "/v1/batch-jobs/{job_id}"): {"200", "404", *KEYED},
}
# Model cards may carry keys beyond the documented ones; every other body is exact.
OPEN_SCHEMAS = {"ModelCard", "CardInput", "CardOutput", "CardMetrics", "CardArtifact",
                "CardPricing", "CardServing"}


@pytest.fixture
def doc(client):
    return client.get("/openapi.json").json()


def closed(doc: dict) -> dict:
    """The document with every object schema closed, so validating a real body against it
    proves the schema names every field the server sends."""
    out = copy.deepcopy(doc)

    def close(node):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node.setdefault("additionalProperties", False)
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    for name, schema in out["components"]["schemas"].items():
        if name not in OPEN_SCHEMAS:
            close(schema)
    return out


def conforms(doc: dict, method: str, path: str, response) -> None:
    """The response's status is documented for the operation and its body matches the
    documented schema, closed."""
    from jsonschema import Draft202012Validator
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    op = doc["paths"][path][method]
    documented = op["responses"].get(str(response.status_code))
    assert documented, f"{method.upper()} {path} answered {response.status_code}: undocumented"
    assert response.headers["content-type"] == "application/json"
    schema = documented["content"]["application/json"]["schema"]
    registry = Registry().with_resource("urn:openapi", DRAFT202012.create_resource(closed(doc)))
    validator = Draft202012Validator({"$ref": "urn:openapi" + schema["$ref"]},
                                     registry=registry,
                                     format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in validator.iter_errors(response.json())]
    assert not errors, errors


def test_the_document_is_valid_openapi_3_1(doc):
    from openapi_spec_validator import validate

    validate(doc)
    assert doc["openapi"].startswith("3.1")


def test_every_route_documents_each_status_it_can_answer(doc):
    operations = {(method, path): op for path, ops in doc["paths"].items()
                  for method, op in ops.items()}
    assert {key: set(op["responses"]) for key, op in operations.items()} == STATUSES


def test_every_response_body_is_a_named_schema(doc):
    schemas = doc["components"]["schemas"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                schema = response["content"]["application/json"]["schema"]
                name = schema.get("$ref", "").removeprefix("#/components/schemas/")
                assert name in schemas, f"{method} {path} {status}: {schema}"
                assert (name == "ErrorResponse") == (status >= "400"), (method, path, status)
    assert "HTTPValidationError" not in schemas  # FastAPI's 422 shape is not what we send


def test_the_error_body_requires_code_message_and_details(doc):
    schemas = doc["components"]["schemas"]
    assert schemas["ErrorResponse"]["required"] == ["error"]
    assert schemas["ErrorResponse"]["properties"]["error"] == {"$ref": "#/components/schemas/Error"}
    assert set(schemas["Error"]["required"]) == {"code", "message", "details"}
    assert schemas["Error"]["properties"]["details"]["items"] == {
        "$ref": "#/components/schemas/ErrorDetail"}


def test_health_alone_is_open_and_every_other_route_needs_the_key(doc):
    assert doc["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey", "in": "header", "name": "x-api-key"}
    assert doc["security"] == [{"ApiKey": []}]
    open_ops = [(m, p) for p, ops in doc["paths"].items() for m, op in ops.items()
                if op.get("security") == []]
    assert open_ops == [("get", "/health")]


def test_instance_schemas_are_closed_and_within_the_float32_range(doc):
    schemas = doc["components"]["schemas"]
    for model in ALL_MODELS:
        schema = schemas["".join(p.capitalize() for p in model.split("-")) + "Instance"]
        assert schema["additionalProperties"] is False
        for name, field in schema["properties"].items():
            if field["type"] in ("number", "integer"):
                lo, hi = field["minimum"], field["maximum"]
                assert math.isfinite(lo) and math.isfinite(hi), (model, name)
                assert -FLOAT32_MAX <= lo <= hi <= FLOAT32_MAX, (model, name)
    age = schemas["CreditRiskInstance"]["properties"]["age"]
    assert (age["minimum"], age["maximum"]) == (18, 120)  # the card's own bounds stay
    income = schemas["CreditRiskInstance"]["properties"]["income"]
    assert (income["minimum"], income["maximum"]) == (0, FLOAT32_MAX)
    body = schemas["PredictRequest"]
    assert body["additionalProperties"] is False and body["required"] == ["instances"]
    assert len(body["properties"]["instances"]["items"]["anyOf"]) == len(ALL_MODELS)


def test_real_bodies_of_every_route_match_their_schemas_exactly(client, api_key, doc):
    key = {"x-api-key": api_key}
    conforms(doc, "get", "/health", client.get("/health"))
    conforms(doc, "get", "/v1/models", client.get("/v1/models", headers=key))
    for model in MODEL_NAMES:
        conforms(doc, "get", "/v1/models/{name}", client.get(f"/v1/models/{model}", headers=key))
        conforms(doc, "post", PREDICT[0], client.post(
            f"/v1/models/{model}/predict", headers=key, json={"instances": [example(model)]}))
        conforms(doc, "post", PREDICT[1], client.post(
            f"/v1/models/{model}/versions/1/predict", headers=key,
            json={"instances": [example(model)] * 2}))
        conforms(doc, "post", EXPLAIN[0], client.post(
            f"/v1/models/{model}/explain", headers=key, json={"instances": [example(model)]}))
    text = {"instances": [example(TEXT_MODEL)]}
    conforms(doc, "get", "/v1/models/{name}", client.get(f"/v1/models/{TEXT_MODEL}",
                                                         headers=key))
    conforms(doc, "post", PREDICT[0], client.post(f"/v1/models/{TEXT_MODEL}/predict",
                                                  headers=key, json=text))
    conforms(doc, "post", PREDICT[0], client.post(
        f"/v1/models/{TEXT_MODEL}/predict", headers=key,
        json={**text, "labels": [{"name": "lost_card"}, {"name": "balance",
                                                        "description": "asks for a balance"}]}))
    conforms(doc, "get", "/v1/account", client.get("/v1/account", headers=key))
    usage = client.get("/v1/usage", headers=key)
    assert usage.json()["days"]
    conforms(doc, "get", "/v1/usage", usage)
    invoice = client.get(f"/v1/invoices/{datetime.now(UTC):%Y-%m}", headers=key)
    assert invoice.json()["lines"]
    conforms(doc, "get", "/v1/invoices/{month}", invoice)


def test_real_error_bodies_match_the_error_schema(client, api_key, doc):
    key = {"x-api-key": api_key}
    card = client.get("/v1/models/no-such-model", headers=key)
    assert card.status_code == 404
    conforms(doc, "get", "/v1/models/{name}", card)
    conforms(doc, "get", "/v1/models", client.get("/v1/models"))  # 401 from the gateway
    conforms(doc, "get", "/v1/invoices/{month}", client.get("/v1/invoices/2024-13", headers=key))
    conforms(doc, "get", "/v1/invoices/{month}", client.get("/v1/invoices/2999-01", headers=key))
    conforms(doc, "get", "/v1/usage", client.get("/v1/usage?start=yesterday", headers=key))
    bad = {**example("credit-risk"), "incomee": 146.0, "age": "sixty"}
    typo = client.post("/v1/models/credit-risk/predict", headers=key,
                       json={"instances": [bad, None]})
    assert typo.status_code == 422
    assert {(d.get("field"), d["code"]) for d in typo.json()["error"]["details"]} >= {
        ("incomee", "unknown_field"), ("age", "wrong_type"), (None, "not_an_object")}
    conforms(doc, "post", PREDICT[0], typo)
    malformed = client.post("/v1/models/credit-risk/predict", content=b"{",
                            headers={**key, "content-type": "application/json"})
    assert malformed.status_code == 400
    conforms(doc, "post", PREDICT[0], malformed)


def test_batch_job_bodies_and_errors_match_their_schemas(client, api_key, settings, doc):
    from tests.test_batch import tenant_dir, wait_for, write_csv

    key = {"x-api-key": api_key}
    area = tenant_dir(settings, "acme")
    write_csv(area / "loans.csv", [example("credit-risk"), {**example("credit-risk"),
                                                           "home": "castle"}])
    body = {"model": "credit-risk", "input": (area / "loans.csv").as_uri(),
            "output": area.as_uri() + "/out/"}
    submitted = client.post("/v1/batch-jobs", headers={**key, "Idempotency-Key": "k1"},
                            json=body)
    assert submitted.status_code == 202
    conforms(doc, "post", "/v1/batch-jobs", submitted)
    conforms(doc, "post", "/v1/batch-jobs", client.post(
        "/v1/batch-jobs", headers={**key, "Idempotency-Key": "k1"}, json=body))  # 200
    job_id = submitted.json()["job_id"]
    assert wait_for(client, key, job_id)["rows_failed"] == 1
    conforms(doc, "get", "/v1/batch-jobs/{job_id}",
             client.get(f"/v1/batch-jobs/{job_id}", headers=key))
    listed = client.get("/v1/batch-jobs", headers=key)
    assert [j["job_id"] for j in listed.json()["jobs"]] == [job_id]
    conforms(doc, "get", "/v1/batch-jobs", listed)
    for wrong, status in (({"output": "s3://elsewhere/o/"}, 403),
                          ({"colour": "red"}, 422), ({"model": "nope"}, 404)):
        answer = client.post("/v1/batch-jobs", headers=key, json={**body, **wrong})
        assert answer.status_code == status
        conforms(doc, "post", "/v1/batch-jobs", answer)
    conforms(doc, "get", "/v1/batch-jobs/{job_id}",
             client.get("/v1/batch-jobs/bj-00000000000000000000", headers=key))


def test_servers_point_at_where_the_document_was_fetched(client, tmp_path, monkeypatch):
    from finmaas.cli.invoke import load_function
    from finmaas.config import Settings
    from finmaas.keys import ensure_events_identity
    from finmaas.tenants import open_tenant_store

    assert client.get("/openapi.json").json()["servers"] == [{"url": "/"}]
    monkeypatch.setenv("MAAS_HOME", str(tmp_path / "lambda"))
    monkeypatch.setenv("MAAS_CACHE_DIR", str(tmp_path / "cache"))
    ensure_events_identity(open_tenant_store(Settings.from_env()))
    handler = load_function("inference")
    event = load_event("health.json")
    staged = {**event, "path": "/openapi.json", "resource": "/openapi.json",
              "requestContext": {**event["requestContext"], "path": "/prod/openapi.json"}}
    custom_domain = {**staged, "requestContext": {**event["requestContext"],
                                                  "path": "/openapi.json"}}
    assert json.loads(handler(staged, LambdaContext())["body"])["servers"] == [{"url": "/prod"}]
    assert json.loads(handler(custom_domain, LambdaContext())["body"])["servers"] == [
        {"url": "/"}]


def test_the_document_is_built_once_per_catalogue_state(store_copy, settings, monkeypatch):
    from fastapi.testclient import TestClient
    from finmaas.api import Services, create_app
    from finmaas.api import openapi as openapi_module
    from finmaas.metering import open_metering_store
    from finmaas.modelstore import open_store
    from finmaas.registry import ModelRegistry
    from finmaas.tenants import open_tenant_store

    builds = []
    real = openapi_module.get_openapi
    monkeypatch.setattr(openapi_module, "get_openapi",
                        lambda **kw: builds.append(1) or real(**kw))
    clock = Clock()
    registry = ModelRegistry(open_store(str(store_copy)), alias_ttl=30, clock=clock)
    app = create_app(Services(settings=settings, registry=registry,
                              metering=open_metering_store(settings),
                              tenants=open_tenant_store(settings)))
    client = TestClient(app)

    first = client.get("/openapi.json").content
    assert client.get("/openapi.json").content == first and app.openapi() is app.openapi()
    assert len(builds) == 1

    # Given a new model published to the store
    shutil.copytree(store_copy / "credit-risk", store_copy / "credit-scout")
    card = store_copy / "credit-scout" / "1" / "card.json"
    card.write_text(json.dumps({**json.loads(card.read_text()), "name": "credit-scout"}))
    clock.now += 10  # within the alias TTL: the registry has not looked yet
    assert client.get("/openapi.json").content == first and len(builds) == 1
    clock.now += 30  # then: documented, once
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert "CreditScoutInstance" in schemas
    client.get("/openapi.json")
    assert len(builds) == 2


def test_a_store_outage_still_serves_a_document_and_recovers(settings, store_copy):
    from fastapi.testclient import TestClient
    from finmaas.api import Services, create_app
    from finmaas.metering import open_metering_store
    from finmaas.modelstore import open_store
    from finmaas.registry import ModelRegistry
    from finmaas.tenants import open_tenant_store

    store = open_store(str(store_copy))
    registry = ModelRegistry(store, alias_ttl=0)
    app = create_app(Services(settings=settings, registry=registry,
                              metering=open_metering_store(settings),
                              tenants=open_tenant_store(settings)))
    client = TestClient(app)
    moved = store_copy.with_name("away")
    store_copy.rename(moved)
    try:
        down = client.get("/openapi.json")
    finally:
        moved.rename(store_copy)
    assert down.status_code == 200
    assert "CreditRiskInstance" not in down.json()["components"]["schemas"]
    assert "CreditRiskInstance" in client.get("/openapi.json").json()["components"]["schemas"]
