"""The model card is a contract with a published schema: verify, publish and the server's
loader all refuse a card that the schema or the graph contradicts, through one door."""

from __future__ import annotations

import json

import pytest
from finmaas.cards import CardError, ModelCard, card_json_schema
from finmaas.modelstore import LocalModelStore
from finmaas.publish import PublishError, publish
from finmaas.verify import verify_store

from tests.conftest import MODEL_STORE, example

# Each was accepted by verify and publish, then made every predict a 500.
DEFECTS = {
    "serving column beyond the output": (lambda c: c["serving"].update(column=7),
                                         "serving.column 7"),
    "a minimum given as a string": (lambda c: c["inputs"][2].update(minimum="0"),
                                    "inputs.2.minimum"),
    "a negative column": (lambda c: c["serving"].update(column=-1), "serving.column"),
    "an example the model refuses": (lambda c: c["example"].update(age=3),
                                     "example does not predict"),
}


def damage(store, change) -> None:
    path = store / "credit-risk" / "1" / "card.json"
    card = json.loads(path.read_text())
    change(card)
    path.write_text(json.dumps(card))


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_verify_refuses_a_card_the_schema_or_the_graph_contradicts(store_copy, defect):
    change, says = DEFECTS[defect]
    damage(store_copy, change)
    reports = {r.name: r for r in verify_store(LocalModelStore(store_copy))}
    assert not reports["credit-risk"].ok
    assert says in "; ".join(reports["credit-risk"].problems)
    assert all(r.ok for n, r in reports.items() if n != "credit-risk")


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_publish_refuses_it_and_uploads_nothing(store_copy, tmp_path, defect):
    change, says = DEFECTS[defect]
    damage(store_copy, change)
    target = tmp_path / "published"
    with pytest.raises(PublishError, match=says.split()[0]):
        publish(store_copy / "credit-risk" / "1", str(target), "credit-risk", "1")
    assert not (target / "credit-risk").exists()


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_the_server_answers_503_for_that_model_and_serves_the_others(
        store_copy, tmp_path, defect):
    from fastapi.testclient import TestClient
    from finmaas.api import build_services, create_app
    from finmaas.config import Settings
    from finmaas.gateway import LocalGateway

    from tests.conftest import make_tenant

    damage(store_copy, DEFECTS[defect][0])
    services = build_services(Settings.from_env(env={}, home=tmp_path / "home",
                                                model_store=str(store_copy),
                                                cache_dir=tmp_path / "cache", ort_threads=1))
    key = make_tenant(services)
    client = TestClient(LocalGateway(create_app(services), services.tenants))
    h = {"x-api-key": key}
    r = client.post("/v1/models/credit-risk/predict", headers=h,
                    json={"instances": [example("credit-risk")]})
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_unavailable"
    assert str(store_copy) not in r.text
    ok = client.post("/v1/models/loan-default/predict", headers=h,
                     json={"instances": [example("loan-default")]})
    assert ok.status_code == 200


def test_every_problem_is_reported_at_once():
    card = json.loads((MODEL_STORE / "credit-risk/1/card.json").read_text())
    card["inputs"][0]["required"] = "yes"
    card["pricing"]["usd_per_1k_predictions"] = "1e3"
    del card["metrics"]
    with pytest.raises(CardError) as caught:
        ModelCard.parse(card)
    where = {p.split(":")[0] for p in caught.value.problems}
    assert where == {"inputs.0.required", "pricing.usd_per_1k_predictions", "metrics"}


def test_the_published_schema_describes_the_cards_we_ship():
    import jsonschema

    schema = card_json_schema()
    assert schema["title"] == "CardDocument" and "inputs" in schema["required"]
    for name in ("credit-risk", "loan-default", "mortgage-approval", "market-volatility"):
        jsonschema.validate(json.loads((MODEL_STORE / name / "1/card.json").read_text()),
                            schema)
    bad = json.loads((MODEL_STORE / "credit-risk/1/card.json").read_text())
    bad["inputs"][2]["minimum"] = "0"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_store_paths_and_reserved_names_never_reach_a_client(client, api_key, store_copy):
    # A file name in the version slot is no version (it was a 503 "retry shortly")
    r = client.post("/v1/models/credit-risk/versions/aliases.json/predict",
                    headers={"x-api-key": api_key},
                    json={"instances": [example("credit-risk")]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "version_not_found"
    assert str(MODEL_STORE) not in r.text


def test_the_docs_publish_the_same_schema_the_loader_enforces(client):
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    published = card_json_schema(ref_template="#/components/schemas/{model}")
    for name, part in published.pop("$defs").items():
        assert schemas[name] == part, name
    assert schemas["CardDocument"] == published
    card_route = doc["paths"]["/v1/models/{name}"]["get"]["responses"]["200"]
    assert card_route["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ModelCard"}


def test_a_refused_version_is_not_reopened_on_every_request(store_copy, monkeypatch):
    from finmaas import registry as registry_module
    from finmaas.errors import ServiceUnavailable
    from finmaas.registry import REFUSAL_TTL, ModelRegistry

    from tests.conftest import Clock

    damage(store_copy, DEFECTS["an example the model refuses"][0])
    opened = []
    real = registry_module.open_version
    monkeypatch.setattr(registry_module, "open_version",
                        lambda *a, **kw: opened.append(1) or real(*a, **kw))
    clock = Clock()
    reg = ModelRegistry(LocalModelStore(store_copy), clock=clock)
    for _ in range(3):
        with pytest.raises(ServiceUnavailable):
            reg.model("credit-risk", "1")
    assert len(opened) == 1
    clock.now += REFUSAL_TTL + 1
    with pytest.raises(ServiceUnavailable):
        reg.model("credit-risk", "1")
    assert len(opened) == 2
