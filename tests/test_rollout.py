"""Rollouts: a canary gets its share of traffic, a retry keeps its version, a shadow is
never returned nor billed, and a rollback takes effect within the alias TTL."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest
from fastapi.testclient import TestClient
from finmaas.cli import main
from finmaas.rollout import AliasRoute, RouteError, promoted, rolled_back, with_canary

from tests.conftest import Clock, billed_units, example, make_tenant, without_explanation

URL = "/v1/models/market-volatility/predict"


@pytest.fixture
def store(store_copy):
    """market-volatility v2: the same LHAR model, its forecast one point higher."""
    from finmaas_recipes.market_volatility import to_onnx

    model_dir = store_copy / "market-volatility"
    card = without_explanation(json.loads((model_dir / "1" / "card.json").read_text()))
    graph = to_onnx(list(card["model"]["coefficients"].values()),
                    card["model"]["intercept"] + 1.0)
    card.update(version="2", artifact={"file": "model.onnx", "bytes": len(graph),
                                       "sha256": hashlib.sha256(graph).hexdigest()})
    (model_dir / "2").mkdir()
    (model_dir / "2" / "model.onnx").write_bytes(graph)
    (model_dir / "2" / "card.json").write_text(json.dumps(card))
    return store_copy


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def app(store, tmp_path, clock):
    from finmaas.api import build_services, create_app
    from finmaas.config import Settings
    from finmaas.gateway import LocalGateway
    from finmaas.modelstore import open_store
    from finmaas.registry import ModelRegistry

    services = build_services(Settings.from_env(env={}, home=tmp_path / "home",
                                                model_store=str(store), ort_threads=1,
                                                cache_dir=tmp_path / "cache"), offload=True)
    # the registry on a hand-moved clock, so "within the alias TTL" is a step, not a sleep
    services.registry = services.predictions.registry = ModelRegistry(
        open_store(str(store)), alias_ttl=30, clock=clock)
    key = make_tenant(services)
    return services, TestClient(LocalGateway(create_app(services), services.tenants)), key


def route(store, value) -> None:
    (store / "market-volatility" / "aliases.json").write_text(
        json.dumps({"production": value}))


def predict(client, key, **headers):
    r = client.post(URL, headers={"x-api-key": key, **headers},
                    json={"instances": [example("market-volatility")]})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_ten_percent_canary_gets_ten_percent_of_ten_thousand_requests():
    canary = AliasRoute.parse({"versions": {"1": 90, "2": 10}})
    served = [canary.pick(f"req:{uuid.UUID(int=i)}") for i in range(10_000)]
    share = served.count("2") / len(served)
    assert 0.085 <= share <= 0.115
    assert canary.primary == "1" and canary.pick(None) == "1"
    # and the assignment is a pure function of the key
    assert served == [canary.pick(f"req:{uuid.UUID(int=i)}") for i in range(10_000)]


def test_every_request_is_billed_to_the_version_that_served_it(app, store):
    services, client, key = app
    route(store, {"versions": {"1": 50, "2": 50}})
    answers = [predict(client, key) for _ in range(60)]
    versions = [a["version"] for a in answers]
    assert 10 <= versions.count("2") <= 50
    for a in answers:  # v2's forecast is v1's plus one
        assert a["predictions"][0]["value"] == pytest.approx(
            answers[versions.index("1")]["predictions"][0]["value"] + (a["version"] == "2"))
    month = services.today().strftime("%Y-%m")
    lines = client.get(f"/v1/invoices/{month}", headers={"x-api-key": key}).json()["lines"]
    assert {ln["version"]: ln["units"] for ln in lines} == {
        "1": versions.count("1"), "2": versions.count("2")}


def test_a_replay_keeps_its_version_after_the_weights_change(app, store, clock):
    services, client, key = app
    route(store, {"versions": {"1": 50, "2": 50}})
    firsts = {f"order-{i}": predict(client, key, **{"Idempotency-Key": f"order-{i}"})
              for i in range(12)}
    assert {a["version"] for a in firsts.values()} == {"1", "2"}
    route(store, "1")  # a rollback
    clock.now += 31
    for idem, first in firsts.items():
        assert predict(client, key, **{"Idempotency-Key": idem}) == first
    assert predict(client, key)["version"] == "1"
    assert billed_units(services) == 13


def test_a_shadow_is_compared_but_never_returned_nor_billed(app, store):
    services, client, key = app
    route(store, {"versions": {"1": 100}, "shadow": "2"})
    answers = [predict(client, key) for _ in range(5)]
    assert {a["version"] for a in answers} == {"1"}
    assert billed_units(services) == 5
    card = client.get("/v1/models/market-volatility", headers={"x-api-key": key}).json()
    (agreement,) = card["shadow_agreement"]
    assert (agreement["shadow"], agreement["served"], agreement["rows"]) == ("2", "1", 5)
    assert agreement["mean_abs_diff"] == pytest.approx(1.0, abs=1e-9)
    assert agreement["failures"] == 0


def test_a_failing_shadow_cannot_touch_the_callers_answer(app, store):
    services, client, key = app
    (store / "market-volatility" / "2" / "model.onnx").write_bytes(b"not a graph")
    route(store, {"versions": {"1": 100}, "shadow": "2"})
    assert predict(client, key)["version"] == "1"
    (agreement,) = services.predictions.shadows.of("market-volatility")
    assert agreement["failures"] == 1 and billed_units(services) == 1


def test_rollout_promote_and_rollback_from_the_cli_take_effect_within_the_alias_ttl(
        app, store, clock, capsys):
    _services, client, key = app
    aliases = store / "market-volatility" / "aliases.json"

    def maas(*argv: str) -> int:
        return main(["models", *argv, "market-volatility", "--store", str(store)])

    assert predict(client, key)["version"] == "1"
    # a canary past half the traffic still rolls back to the stable version
    assert maas("rollout", "--version", "2", "--percent", "60") == 0
    assert json.loads(aliases.read_text())["production"] == {
        "versions": {"1": 40, "2": 60}, "stable": "1"}
    assert maas("rollout", "--version", "2", "--percent", "90") == 0  # ramp up
    assert maas("rollback") == 0
    assert json.loads(aliases.read_text()) == {"production": "1"}
    clock.now += 31
    assert predict(client, key)["version"] == "1"
    assert maas("rollout", "--version", "2", "--percent", "10") == 0
    assert predict(client, key)["version"] in {"1", "2"}
    assert maas("promote") == 0
    assert predict(client, key)["version"] in {"1", "2"}  # cached alias, within the TTL
    clock.now += 31
    assert predict(client, key)["version"] == "2"
    # promote ends the rollout: going back is a promote of the old version
    assert maas("rollback") == 2
    assert "no rollout to roll back" in capsys.readouterr().err
    assert maas("promote", "--version", "1") == 0
    clock.now += 31
    assert predict(client, key)["version"] == "1"


def test_the_cli_refuses_a_version_that_is_not_published(store, capsys):
    code = main(["models", "rollout", "market-volatility", "--version", "7", "--percent",
                 "10", "--store", str(store)])
    assert code == 1 and "no published version 7" in capsys.readouterr().err
    (store / "market-volatility" / "3").mkdir()
    (store / "market-volatility" / "3" / "card.json").write_text("{}")  # not a card
    assert main(["models", "rollout", "market-volatility", "--version", "3", "--percent",
                 "10", "--store", str(store)]) == 1


@pytest.mark.parametrize("aliases", ['["production"]', "null", "[" * 100_000])
def test_the_cli_refuses_a_garbled_aliases_file_without_a_traceback(store, capsys, aliases):
    (store / "market-volatility" / "aliases.json").write_text(aliases)
    assert main(["models", "rollback", "market-volatility", "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("maas: ") and "Traceback" not in err


def test_an_alias_naming_an_unpublished_version_is_the_stores_fault_not_the_callers(app, store):
    _services, client, key = app
    route(store, {"versions": {"1": 50, "9": 50}})
    codes = {client.post(URL, headers={"x-api-key": key},
                         json={"instances": [example("market-volatility")]}).status_code
             for _ in range(20)}
    assert codes == {200, 503}
    pinned = client.post("/v1/models/market-volatility/versions/9/predict",
                         headers={"x-api-key": key},
                         json={"instances": [example("market-volatility")]})
    assert pinned.status_code == 404  # a version the caller named is the caller's 404


def test_aliases_nested_past_any_parser_are_a_503_for_that_model_alone(app, store):
    _services, client, key = app
    (store / "market-volatility" / "aliases.json").write_text("[" * 100_000)
    r = client.post(URL, headers={"x-api-key": key},
                    json={"instances": [example("market-volatility")]})
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_corrupt"
    listed = client.get("/v1/models", headers={"x-api-key": key})
    assert listed.status_code == 200
    assert "market-volatility" not in {m["name"] for m in listed.json()["models"]}


def test_rollouts_work_on_an_s3_store(store, tmp_path, clock):
    import boto3
    from finmaas.cli.rollout import change_route
    from finmaas.modelstore import open_store
    from finmaas.registry import ModelRegistry
    from moto import mock_aws

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="models")
        for path in (store / "market-volatility").rglob("*"):
            if path.is_file():
                key = f"m/market-volatility/{path.relative_to(store / 'market-volatility')}"
                s3.upload_file(str(path), "models", key)
        registry = ModelRegistry(open_store("s3://models/m", cache_dir=str(tmp_path / "c"),
                                            s3_client=s3), alias_ttl=30, clock=clock)
        assert registry.resolve("market-volatility", assign="req:x") == "1"
        change_route("s3://models/m", "market-volatility", "production",
                     lambda r: promoted(r, "2"), s3_client=s3)
        clock.now += 31
        assert registry.resolve("market-volatility", assign="req:x") == "2"


@pytest.mark.parametrize("value", [{"versions": {"1": 90, "2": 20}}, {"versions": {}},
                                   {"versions": {"1": "70", "2": 30}},
                                   {"versions": {"1": 70, "2": 30}, "stable": "3"},
                                   {"versions": {"1": 100}, "shadow": "1"},
                                   {"versions": {"1": 0.001, "2": 99.999}},
                                   {"versions": {"1": 100}, "mirror": "2"}, 7])
def test_malformed_routes_are_refused(value):
    with pytest.raises(RouteError):
        AliasRoute.parse(value)


def test_route_changes_compose():
    start = AliasRoute.parse("1")
    canary = with_canary(start, "2", 12.5)
    assert canary.to_json() == {"versions": {"1": 87.5, "2": 12.5}, "stable": "1"}
    assert promoted(canary).to_json() == "2"
    assert rolled_back(canary).to_json() == "1"
    # the stable version is remembered, whatever the weights
    majority = with_canary(start, "2", 60)
    assert (majority.primary, majority.pick(None)) == ("1", "1")
    assert rolled_back(majority).to_json() == "1" and promoted(majority).to_json() == "2"
    with pytest.raises(RouteError):
        with_canary(start, "2", 100)  # everything at once is a promote
