"""The local gateway's plan enforcement, and the metering rules at the API: retries bill
once, failures bill nothing, and no usage record means no prediction."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from finmaas.api import create_app
from finmaas.gateway import LocalGateway
from finmaas.metering import MeteringUnavailable

from tests.conftest import Clock, billed_units, example, make_tenant, without_explanation

URL = "/v1/models/credit-risk/predict"


@pytest.fixture
def clock():
    return Clock()


def gateway_client(services, clock, **kw):
    return TestClient(LocalGateway(create_app(services), services.tenants, clock=clock, **kw))


def test_rate_limit_answers_429_with_retry_after(services, clock):
    key = make_tenant(services, "tiny", "free")  # 2/s, burst 5
    client = gateway_client(services, clock)
    codes = [client.get("/v1/models", headers={"x-api-key": key}).status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]
    r = client.get("/v1/models", headers={"x-api-key": key})
    assert r.json()["error"]["code"] == "rate_limited" and r.headers["retry-after"] == "1"
    clock.now += 0.5  # one token back at 2/s
    assert client.get("/v1/models", headers={"x-api-key": key}).status_code == 200


def test_a_429_says_when_to_come_back_in_ratelimit_headers(services, clock):
    key = make_tenant(services, "tiny", "free")
    client = gateway_client(services, clock)
    for _ in range(5):
        client.get("/v1/models", headers={"x-api-key": key})
    r = client.get("/v1/models", headers={"x-api-key": key})
    assert r.status_code == 429 and r.headers["x-request-id"]
    assert (r.headers["ratelimit-limit"], r.headers["ratelimit-remaining"],
            r.headers["ratelimit-reset"]) == ("5", "0", r.headers["retry-after"])


def test_a_quota_plan_whose_usage_store_cannot_be_read_gets_a_json_503(services, clock):
    key = make_tenant(services, "tiny", "free")

    def unreadable(_key_id, _month):
        raise MeteringUnavailable("database is locked")

    client = gateway_client(services, clock, quota_seed=unreadable)
    r = client.get("/v1/models", headers={"x-api-key": key})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "usage_unavailable"


def test_monthly_quota(services, clock):
    key = make_tenant(services, "tiny", "free")
    client = gateway_client(services, clock, quota_seed=lambda _k, _m: 999)
    assert client.get("/v1/models", headers={"x-api-key": key}).status_code == 200
    clock.now += 10
    r = client.get("/v1/models", headers={"x-api-key": key})
    assert r.status_code == 429 and r.json()["error"]["code"] == "quota_exceeded"
    assert int(r.headers["retry-after"]) > 0


def test_a_slow_quota_count_holds_up_no_other_key(services, clock):
    """The first count of a quota key's month may wait on the usage store's lock: it runs
    in a thread and holds nothing the event loop needs, so a key already counted, and
    /health, answer meanwhile."""
    import threading

    counted, slow = make_tenant(services, "counted", "free"), make_tenant(services, "slow",
                                                                          "free")
    started, finish = threading.Event(), threading.Event()
    slow_id = next(iter(services.tenants.list_keys("slow"))).key_id

    def seed(key_id, _month):
        if key_id == slow_id:
            started.set()
            assert finish.wait(10)
        return 0

    client = gateway_client(services, clock, quota_seed=seed)
    assert client.get("/v1/models", headers={"x-api-key": counted}).status_code == 200
    answers = {}
    waiting = threading.Thread(target=lambda: answers.update(slow=client.get(
        "/v1/models", headers={"x-api-key": slow}).status_code))
    waiting.start()
    try:
        assert started.wait(10)
        assert client.get("/v1/models", headers={"x-api-key": counted}).status_code == 200
        assert client.get("/health").status_code == 200
    finally:
        finish.set()
        waiting.join()
    assert answers == {"slow": 200}


def test_gateway_passes_the_key_id_not_the_key(services, clock):
    seen = {}

    async def app(scope, receive, send):
        seen.update(scope["aws.event"]["requestContext"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    key = make_tenant(services)
    TestClient(LocalGateway(app, services.tenants)).get("/v1/x", headers={"x-api-key": key})
    assert seen["identity"]["apiKeyId"] == services.tenants.list_keys("acme")[0].key_id
    assert key not in str(seen) and seen["requestId"]


def test_idempotent_retry_returns_the_same_answer_and_bills_once(client, api_key, services):
    body = {"instances": [example("credit-risk")] * 2}
    h = {"x-api-key": api_key, "Idempotency-Key": "order-1"}
    first = client.post(URL, headers=h, json=body)
    second = client.post(URL, headers=h, json=body)
    assert first.json() == second.json()
    assert first.headers["idempotent-replayed"] == "false"
    assert second.headers["idempotent-replayed"] == "true"
    assert billed_units(services) == 2


def test_reusing_an_idempotency_key_for_another_body_is_409(client, api_key, services):
    h = {"x-api-key": api_key, "Idempotency-Key": "order-2"}
    client.post(URL, headers=h, json={"instances": [example("credit-risk")]})
    r = client.post(URL, headers=h, json={"instances": [example("credit-risk")] * 2})
    assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_key_reused"
    assert billed_units(services) == 1


def test_a_retry_that_reserialises_the_body_is_the_same_request(client, api_key, services):
    # Given a first call with an Idempotency-Key
    h = {"x-api-key": api_key, "Idempotency-Key": "order-3", "content-type": "application/json"}
    rec = example("credit-risk")
    first = client.post(URL, headers=h, content=json.dumps({"instances": [rec]}))
    # When the client library retries with other key order, spacing and number spelling
    reordered = {"instances": [{k: float(v) if type(v) is int else v
                                for k, v in reversed(list(rec.items()))}]}
    second = client.post(URL, headers=h, content=json.dumps(reordered, indent=2))
    # Then it is a replay, not a conflict, and bills once
    assert second.status_code == 200, second.text
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json() and billed_units(services) == 1


def forged(services, key_id: str, request_id: str):
    """The app behind a gateway that sends a fixed request id (a forged or replayed event)."""
    app = create_app(services)

    async def edge(scope, receive, send):
        ctx = {"requestId": request_id, "identity": {"apiKeyId": key_id}}
        await app({**scope, "aws.event": {"requestContext": ctx}}, receive, send)

    return TestClient(edge)


def test_another_tenants_request_id_reaches_only_the_callers_own_record(services):
    make_tenant(services, "acme")
    make_tenant(services, "rival")
    acme_key = services.tenants.list_keys("acme")[0].key_id
    rival_key = services.tenants.list_keys("rival")[0].key_id
    body = {"instances": [example("credit-risk")]}
    forged(services, acme_key, "req-shared").post(URL, json=body)
    # When another tenant's event carries the same request id with another body
    r = forged(services, rival_key, "req-shared").post(URL, json={"instances": [
        example("credit-risk")] * 2})
    # Then it is the rival's own new call: its own answer, billed to the rival
    assert r.status_code == 200 and len(r.json()["predictions"]) == 2
    assert billed_units(services, "acme") == 1 and billed_units(services, "rival") == 2


def test_a_request_id_reused_for_another_body_is_a_409_that_says_so(services):
    make_tenant(services, "acme")
    key_id = services.tenants.list_keys("acme")[0].key_id
    client = forged(services, key_id, "req-again")
    client.post(URL, json={"instances": [example("credit-risk")]})
    r = client.post(URL, json={"instances": [example("credit-risk")] * 2})
    assert r.status_code == 409 and r.json()["error"]["code"] == "request_id_reused"
    assert "Idempotency-Key" not in r.json()["error"]["message"]
    assert billed_units(services, "acme") == 1


def test_idempotency_survives_an_alias_flip(store_copy, tmp_path):
    """A retry after production moved answers with the version first used: same version,
    same price, same predictions (v2 here forecasts exactly one point higher)."""
    import hashlib
    import json

    from finmaas.api import build_services
    from finmaas.config import Settings
    from finmaas_recipes.market_volatility import to_onnx

    model_dir = store_copy / "market-volatility"
    card = without_explanation(json.loads((model_dir / "1" / "card.json").read_text()))
    coef = list(card["model"]["coefficients"].values())
    graph = to_onnx(coef, card["model"]["intercept"] + 1.0)
    card.update(version="2", pricing={"usd_per_1k_predictions": "0.30"},
                artifact={"file": "model.onnx", "sha256": hashlib.sha256(graph).hexdigest(),
                          "bytes": len(graph)})
    (model_dir / "2").mkdir()
    (model_dir / "2" / "model.onnx").write_bytes(graph)
    (model_dir / "2" / "card.json").write_text(json.dumps(card))
    services = build_services(Settings.from_env(
        env={}, home=tmp_path / "home", model_store=str(store_copy), alias_ttl_seconds=0))
    key = make_tenant(services)
    client = TestClient(LocalGateway(create_app(services), services.tenants))
    url = "/v1/models/market-volatility/predict"
    body = {"instances": [example("market-volatility")]}
    h = {"x-api-key": key, "Idempotency-Key": "order-3"}
    first = client.post(url, headers=h, json=body).json()
    assert (first["version"], first["usage"]["amount_usd"]) == ("1", "0.0002")
    (model_dir / "aliases.json").write_text('{"production": "2"}')
    retry = client.post(url, headers=h, json=body).json()
    fresh = client.post(url, headers={"x-api-key": key}, json=body).json()
    assert retry == first
    assert (fresh["version"], fresh["usage"]["amount_usd"]) == ("2", "0.0003")
    assert fresh["predictions"][0]["value"] == pytest.approx(
        first["predictions"][0]["value"] + 1.0, abs=1e-9)
    assert billed_units(services, "acme") == 2


def test_failed_calls_bill_nothing(client, api_key, services):
    client.post(URL, headers={"x-api-key": api_key}, json={"instances": [{"age": 3}]})
    client.post("/v1/models/nope/predict", headers={"x-api-key": api_key},
                json={"instances": [{}]})
    assert billed_units(services) == 0


class BrokenMeter:
    def __init__(self, real):
        self.real = real

    def record(self, rec):
        raise MeteringUnavailable("disk full")

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_no_usage_record_means_no_prediction(services, api_key, clock):
    services.predictions.metering = BrokenMeter(services.metering)
    client = gateway_client(services, clock)
    r = client.post(URL, headers={"x-api-key": api_key},
                    json={"instances": [example("credit-risk")]})
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "metering_unavailable" and r.headers["retry-after"]
    assert "predictions" not in r.text
    assert billed_units(services) == 0


def test_usage_record_holds_what_billing_and_audit_need(client, api_key, services):
    r = client.post(URL, headers={"x-api-key": api_key},
                    json={"instances": [example("credit-risk")] * 3}).json()
    from finmaas.metering import record_id_for

    rec = services.metering.get(record_id_for("acme", r["request_id"], None))
    assert (rec.tenant, rec.model, rec.version, rec.units) == ("acme", "credit-risk", "1", 3)
    assert str(rec.unit_price) == "0.0005" and str(rec.amount) == "0.0015"
    assert rec.key_id == services.tenants.list_keys("acme")[0].key_id
    assert rec.latency_ms >= 0 and rec.timestamp.tzinfo == UTC
    assert rec.timestamp <= datetime.now(UTC)


def test_key_store_outage_is_503_not_500(services, clock):
    key = make_tenant(services)

    class Down:
        def __getattr__(self, name):
            raise RuntimeError("database is locked")

    client = TestClient(LocalGateway(create_app(services), Down(), clock=clock))
    r = client.get("/v1/models", headers={"x-api-key": key})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"


def test_usage_store_outage_is_503(client, api_key, services):
    services.metering._conn.execute("DROP TABLE usage_rollups")
    r = client.get("/v1/usage", headers={"x-api-key": api_key})
    assert r.status_code == 503 and r.json()["error"]["code"] == "usage_unavailable"
