"""Every route of the HTTP API, through the local gateway as a client sees it."""

from __future__ import annotations

import pytest

from tests.conftest import ALL_MODELS, MODEL_NAMES, example


def test_health_needs_no_key(client):
    r = client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_catalogue_lists_every_model_with_price_and_aliases(client, api_key):
    r = client.get("/v1/models", headers={"x-api-key": api_key})
    assert r.status_code == 200
    models = {m["name"]: m for m in r.json()["models"]}
    assert sorted(models) == sorted(ALL_MODELS)
    credit = models["credit-risk"]
    assert credit["aliases"] == {"production": "1"} and credit["versions"] == ["1"]
    assert credit["pricing"]["usd_per_1k_predictions"] == "0.50"
    assert credit["task"] == "binary_classification" and credit["description"]
    assert models["text-embedding"]["pricing"] == {"usd_per_1k_tokens": "0.002",
                                                   "currency": "USD"}


def test_model_card_of_production_and_of_an_explicit_version(client, api_key):
    h = {"x-api-key": api_key}
    card = client.get("/v1/models/mortgage-approval", headers=h).json()
    assert card["version"] == "1" and card["fairness"] and card["aliases"]["production"] == "1"
    assert client.get("/v1/models/credit-risk?version=1", headers=h).json()["name"] == \
        "credit-risk"
    assert client.get("/v1/models/credit-risk?version=7", headers=h).status_code == 404


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_predict_every_model(client, api_key, model):
    r = client.post(f"/v1/models/{model}/predict", headers={"x-api-key": api_key},
                    json={"instances": [example(model), example(model)]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == model and body["version"] == "1" and body["request_id"]
    assert len(body["predictions"]) == 2
    assert body["usage"]["units"] == 2
    pred = body["predictions"][0]
    if model == "market-volatility":
        assert pred["unit"] == "percent (annualized)" and 1 < pred["value"] < 200
    else:
        assert 0 < pred["probability"] < 1 and pred["event"] in ("default", "denial")


def test_predict_with_version_in_path_or_body(client, api_key):
    h = {"x-api-key": api_key}
    inst = [example("credit-risk")]
    by_path = client.post("/v1/models/credit-risk/versions/1/predict", headers=h,
                          json={"instances": inst}).json()
    by_body = client.post("/v1/models/credit-risk/predict", headers=h,
                          json={"instances": inst, "version": "production"}).json()
    assert by_path["predictions"] == by_body["predictions"]
    clash = client.post("/v1/models/credit-risk/versions/1/predict", headers=h,
                        json={"instances": inst, "version": "2"})
    assert clash.status_code == 422 and clash.json()["error"]["code"] == "version_conflict"


def test_usage_is_priced_exactly_in_decimal(client, api_key):
    r = client.post("/v1/models/mortgage-approval/predict", headers={"x-api-key": api_key},
                    json={"instances": [example("mortgage-approval")] * 3})
    assert r.json()["usage"] == {"units": 3, "kind": "prediction", "unit_price_usd": "0.001",
                                 "amount_usd": "0.003"}


def test_openapi_shows_each_models_request_schema(client):
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert "amount" in schemas["CreditRiskInstance"]["properties"]
    assert schemas["CreditRiskInstance"]["properties"]["home"]["enum"][0] == "rent"
    assert "ret_lag_22" in schemas["MarketVolatilityInstance"]["required"]
    body = doc["paths"]["/v1/models/{name}/predict"]["post"]["requestBody"]
    assert set(body["content"]["application/json"]["examples"]) == {
        *ALL_MODELS, "text-embedding-zero-shot"}
    assert schemas["TextEmbeddingInstance"]["properties"]["text"]["maxLength"] == 2000
    assert client.get("/docs").status_code == 200


def test_predictions_match_the_onnx_graph_directly(client, api_key):
    import numpy as np
    import onnxruntime as ort

    from tests.conftest import MODEL_STORE

    rec = example("market-volatility")
    sess = ort.InferenceSession(str(MODEL_STORE / "market-volatility/1/model.onnx"))
    direct = sess.run(None, {k: np.array([[v]], dtype=np.float64) for k, v in rec.items()})[0]
    served = client.post("/v1/models/market-volatility/predict", headers={"x-api-key": api_key},
                         json={"instances": [rec]}).json()["predictions"][0]["value"]
    assert served == pytest.approx(float(direct[0, 0]), abs=1e-12)


def test_every_answer_carries_a_request_id(client, api_key):
    h = {"x-api-key": api_key}
    answers = [client.get("/v1/models", headers=h), client.get("/v1/models/credit-risk",
                                                               headers=h),
               client.get("/v1/usage", headers=h), client.get("/v1/models"),
               client.get("/v1/models", headers={"x-api-key": "fmk_wrong"}),
               client.get("/v1/nothing-here", headers=h)]
    for r in answers:
        assert r.headers.get("x-request-id"), (r.request.url, r.status_code)


def test_health_answers_head_and_a_wrong_method_names_the_allowed_ones(client, api_key):
    assert client.head("/health").status_code == 200
    r = client.delete("/v1/models", headers={"x-api-key": api_key})
    assert r.status_code == 405 and r.headers["allow"] == "GET"
