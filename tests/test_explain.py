"""Explanations: exact attributions from the graph that served the score, in the card's
business fields, with reasons, billed as explained rows."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tests.conftest import (
    MODEL_NAMES,
    MODEL_STORE,
    billed_units,
    example,
    without_explanation,
)

CLASSIFIERS = ["credit-risk", "loan-default", "mortgage-approval"]


def card_of(model: str) -> dict:
    return json.loads((MODEL_STORE / model / "1" / "card.json").read_text())


def explain(client, key, model, instances, **kw):
    return client.post(f"/v1/models/{model}/explain", headers={"x-api-key": key, **kw},
                       json={"instances": instances})


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_each_record_gets_its_prediction_and_an_exact_attribution(client, api_key, model):
    # Given the card's example and a second record
    card = card_of(model)
    records = [example(model), example(model)]
    predicted = client.post(f"/v1/models/{model}/predict", headers={"x-api-key": api_key},
                            json={"instances": records}).json()["predictions"]
    # When they are explained
    r = explain(client, api_key, model, records)
    assert r.status_code == 200, r.text
    body = r.json()
    described = body["explanation"]
    assert described["exact"] is True and described["output_space"]
    names = set(card["reasons"])
    for got, served in zip(body["predictions"], predicted, strict=True):
        # Then the prediction is the one predict serves
        for key, value in served.items():
            assert got[key] == value
        # And the contributions add up to the raw score, whose link is the served score
        assert set(got["contributions"]) == names
        total = described["base_value"] + sum(got["contributions"].values())
        assert total == pytest.approx(got["raw_score"], abs=1e-9)
        if card["task"] == "regression":
            assert got["raw_score"] == pytest.approx(got["value"], abs=1e-6)
        else:
            assert 1 / (1 + math.exp(-got["raw_score"])) == pytest.approx(
                got["probability"], abs=1e-6)
        # And the reasons are the strongest pushes toward the outcome, in order
        pushes = sorted((v for v in got["contributions"].values() if v > 0), reverse=True)
        assert [x["contribution"] for x in got["reasons"]] == pushes[:4]
        for reason in got["reasons"]:
            template = card["reasons"][reason["field"]]["toward"]
            assert reason["text"].startswith(template.split("{value}")[0])
            assert "{value}" not in reason["text"]


def test_explained_rows_are_billed_at_the_explanation_price_on_their_own_line(
        client, api_key, services):
    card = card_of("credit-risk")
    r = explain(client, api_key, "credit-risk", [example("credit-risk")] * 3)
    usage = r.json()["usage"]
    assert usage["kind"] == "explanation" and usage["units"] == 3
    price = float(card["pricing"]["usd_per_1k_explanations"]) / 1000
    assert float(usage["unit_price_usd"]) == pytest.approx(price)
    assert float(usage["amount_usd"]) == pytest.approx(3 * price)
    client.post("/v1/models/credit-risk/predict", headers={"x-api-key": api_key},
                json={"instances": [example("credit-risk")]})
    month = services.today().strftime("%Y-%m")
    lines = client.get(f"/v1/invoices/{month}", headers={"x-api-key": api_key}).json()["lines"]
    assert {(ln["kind"], ln["units"]) for ln in lines} == {("explanation", 3),
                                                            ("prediction", 1)}


def test_explain_shares_validation_idempotency_and_nothing_is_billed_on_error(
        client, api_key, services):
    bad = {**example("credit-risk"), "home": "boat"}
    r = explain(client, api_key, "credit-risk", [bad])
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "home"
    assert billed_units(services) == 0
    first = explain(client, api_key, "credit-risk", [example("credit-risk")],
                    **{"Idempotency-Key": "exp-1"})
    again = explain(client, api_key, "credit-risk", [example("credit-risk")],
                    **{"Idempotency-Key": "exp-1"})
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    # the same key on predict is another request: a conflict, not a replay
    other = client.post("/v1/models/credit-risk/predict",
                        headers={"x-api-key": api_key, "Idempotency-Key": "exp-1"},
                        json={"instances": [example("credit-risk")]})
    assert other.status_code == 409
    assert billed_units(services) == 1


def test_a_model_without_explainer_data_says_so(store_copy, tmp_path):
    from fastapi.testclient import TestClient
    from finmaas.api import build_services, create_app
    from finmaas.config import Settings
    from finmaas.gateway import LocalGateway

    from tests.conftest import make_tenant

    path = store_copy / "credit-risk" / "1" / "card.json"
    path.write_text(json.dumps(without_explanation(json.loads(path.read_text()))))
    services = build_services(Settings.from_env(env={}, home=tmp_path / "home",
                                                model_store=str(store_copy),
                                                cache_dir=tmp_path / "cache", ort_threads=1))
    key = make_tenant(services)
    client = TestClient(LocalGateway(create_app(services), services.tenants))
    r = explain(client, key, "credit-risk", [example("credit-risk")])
    assert r.status_code == 404 and r.json()["error"]["code"] == "explanations_not_available"
    assert billed_units(services) == 0


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_the_card_lists_global_importance_largest_first(client, api_key, model):
    card = client.get(f"/v1/models/{model}", headers={"x-api-key": api_key}).json()
    importance = list(card["global_importance"].values())
    assert set(card["global_importance"]) == set(card["reasons"])
    assert importance == sorted(importance, reverse=True) and importance[0] > 0


# -- exactness on every holdout row ------------------------------------------------------
def holdout_explained(built, model_name: str):
    """The served model's attributions on the recipe's whole holdout, per field."""
    from finmaas.cards import ModelCard
    from finmaas.runtime import open_version
    from finmaas_recipes import common

    card = ModelCard.parse(common.finished_card(built))
    model = open_version(card, built.onnx_bytes, files=built.files)
    feeds = {}
    types = {i.name: i.type for i in model.session.get_inputs()}
    X = built.holdout_features
    for name in card.input_names:
        col = X[[name]]
        feeds[name] = (col.fillna("").to_numpy(dtype=object) if types[name] == "tensor(string)"
                       else col.to_numpy(dtype=np.float64 if types[name] == "tensor(double)"
                                         else np.float32))
    out, features = model.session.run([card.graph_output, "features"], feeds)
    served = model._scores(out)
    contributions, raw = model.explainer.attributions(features, served)
    return model, contributions, raw, served


def per_field(model, built, per_column: np.ndarray) -> np.ndarray:
    """Per-column attributions summed into their card field (one-hot columns folded)."""
    names = model.explainer.names
    columns = json.loads(built.files["explainer.json"])["columns"]
    out = np.zeros((len(per_column), len(names)))
    for c, field in enumerate(columns):
        out[:, names.index(field)] += per_column[:, c]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["credit-risk", "mortgage-approval"])
def test_tree_attributions_match_lightgbm_pred_contrib_on_every_holdout_row(
        built_models, model_name):
    built = built_models[model_name]
    model, contributions, raw, _ = holdout_explained(built, model_name)
    pipeline = built.model
    transformed = pipeline.named_steps["preprocess"].transform(built.holdout_features)
    lgb = pipeline.steps[-1][1].booster_.predict(np.asarray(transformed, dtype=np.float64),
                                                 pred_contrib=True)
    expected = per_field(model, built, lgb[:, :-1])
    assert np.max(np.abs(contributions - expected)) <= 1e-6
    assert model.explainer.base_value == pytest.approx(lgb[0, -1], abs=1e-6)
    assert np.max(np.abs(raw - lgb.sum(axis=1))) <= 1e-5


@pytest.mark.slow
def test_linear_attributions_match_the_fitted_coefficients_on_every_holdout_row(built_models):
    built = built_models["loan-default"]
    model, contributions, raw, _ = holdout_explained(built, "loan-default")
    pre = built.model.named_steps["preprocess"]
    logit = built.model.steps[-1][1]
    train = np.asarray(json.loads(built.files["explainer.json"])["means"])
    X = np.asarray(pre.transform(built.holdout_features), dtype=np.float64)
    expected = per_field(model, built, (X - train) * logit.coef_[0])
    # the graph computes in float32: its coefficients and inputs carry float32 rounding
    assert np.max(np.abs(contributions - expected)) <= 1e-5
    assert np.max(np.abs(raw - logit.decision_function(X))) <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_additivity_and_the_link_hold_on_every_holdout_row(built_models, model_name):
    model, contributions, raw, served = holdout_explained(built_models[model_name], model_name)
    assert len(raw) > 100
    total = model.explainer.base_value + contributions.sum(axis=1)
    assert np.max(np.abs(total - raw)) <= 1e-9
    # and the raw score, through the link, is the score the graph served (float32 rounding)
    linked = raw if model.card.task == "regression" else 1 / (1 + np.exp(-raw))
    assert np.max(np.abs(linked - served)) <= 1e-6


def test_maas_explain_prints_a_waterfall_with_reasons_both_ways(tmp_path, capsys):
    from finmaas.cli import main

    record = tmp_path / "record.json"
    record.write_text(json.dumps(example("credit-risk")))
    assert main(["explain", "credit-risk", "--input", str(record)]) == 0
    out = capsys.readouterr().out
    assert "probability of default" in out and "base value" in out and "= score" in out
    assert "raised the estimated risk of default" in out
    assert "lowered the estimated risk of default" in out
    assert main(["explain", "credit-risk", "--input", str(record), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["explanation"]["exact"] is True and doc["contributions"]
    record.write_text(json.dumps({**example("credit-risk"), "home": "boat"}))
    assert main(["explain", "credit-risk", "--input", str(record)]) == 1
    assert "home" in capsys.readouterr().err
