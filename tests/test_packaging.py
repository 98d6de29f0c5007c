"""Packaging a publisher's own model (``finmaas_recipes.packaging``, ``maas models new``):
each supported kind of source becomes a version the server verifies, serves and bills,
and what cannot be served is refused with the reason."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.conftest import islr_default, serve_store

NAME = "card-default"


@pytest.fixture(scope="module")
def data():
    """2,000 rows to train on and a disjoint 200-row sample (50 defaulters) to package with."""
    df = islr_default().sample(frac=1, random_state=7).reset_index(drop=True)
    train, rest = df.iloc[:2000], df.iloc[2000:]
    sample = pd.concat([rest[rest["default"] == "Yes"].head(50),
                        rest[rest["default"] == "No"].head(150)])
    return train, sample.sample(frac=1, random_state=7).reset_index(drop=True)


def pipeline(estimator):
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = ColumnTransformer([
        ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["student"]),
        ("num", StandardScaler(), ["balance", "income"]),
    ])
    return Pipeline([("preprocess", pre), ("model", estimator)])


def logistic():
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000)


def lightgbm_classifier():
    from lightgbm import LGBMClassifier

    return LGBMClassifier(n_estimators=30, num_leaves=7, verbose=-1, n_jobs=1)


def fitted(estimator, train):
    return pipeline(estimator).fit(train.drop(columns="default"), train["default"])


def into_store(built, tmp_path):
    """A store directory holding the packaged version as production."""
    from finmaas_recipes.packaging import write_version

    store = tmp_path / "store"
    write_version(built, store / built.name / built.version)
    (store / built.name / "aliases.json").write_text(json.dumps({"production": "1"}))
    return store


def records(sample: pd.DataFrame, columns) -> list[dict]:
    return [{c: (row[c] if isinstance(row[c], str) else float(row[c])) for c in columns}
            for _, row in sample.iterrows()]


def assert_served(built, tmp_path, expected: np.ndarray, sample: pd.DataFrame, columns,
                  *, explains: bool):
    """The version passes verify and the app predicts what the source model predicts."""
    from finmaas.modelstore import open_store
    from finmaas.verify import verify_store

    store = into_store(built, tmp_path)
    reports = verify_store(open_store(str(store)))
    assert [(r.name, r.version, r.problems) for r in reports] == [(NAME, "1", [])]
    _, client, key = serve_store(store, tmp_path)
    rows = records(sample.head(20), columns)
    r = client.post(f"/v1/models/{NAME}/predict", headers={"x-api-key": key},
                    json={"instances": rows})
    assert r.status_code == 200, r.text
    served = np.array([p.get("probability", p.get("value")) for p in r.json()["predictions"]])
    np.testing.assert_allclose(served, expected[:20], atol=1e-5, rtol=1e-6)
    r = client.post(f"/v1/models/{NAME}/explain", headers={"x-api-key": key},
                    json={"instances": rows[:2]})
    assert r.status_code == (200 if explains else 404), r.text


# -- one test per kind of source ------------------------------------------------------
@pytest.mark.parametrize("make", [logistic, lightgbm_classifier])
def test_a_joblib_sklearn_pipeline_is_packaged_verified_and_served(data, tmp_path, make):
    import joblib
    from finmaas_recipes.packaging import package

    # Given a publisher's fitted pipeline saved with joblib, and a sample with the target
    train, sample = data
    model = fitted(make(), train)
    path = tmp_path / "model.joblib"
    joblib.dump(model, path)
    # When it is packaged
    built = package(NAME, path, sample, target="default", event="default", price="0.40")
    # Then the card describes the fields in business terms, with honest sample metrics
    card = built.card
    inputs = {i["name"]: i for i in card["inputs"]}
    assert inputs["student"]["type"] == "category"
    assert inputs["student"]["categories"] == ["No", "Yes"]
    assert inputs["balance"]["type"] == "number" and inputs["balance"]["minimum"] == 0
    assert card["outputs"][0]["event"] == "default"
    assert card["metrics"]["holdout"]["rows"] == len(sample)
    assert 0.5 < card["metrics"]["roc_auc"] <= 1 and "roc_auc_ci95" in card["metrics"]
    assert card["pricing"] == {"usd_per_1k_predictions": "0.40",
                               "usd_per_1k_explanations": "1.20"}
    assert card["explanation"]["file"] == "explainer.json"
    # and the server serves what the pipeline computes, and explains it
    features = ["student", "balance", "income"]
    expected = model.predict_proba(sample[features])[:, 1]
    assert_served(built, tmp_path, expected, sample, features, explains=True)


def test_a_lightgbm_booster_file_is_packaged_verified_and_served(data, tmp_path):
    import lightgbm
    from finmaas_recipes.packaging import package

    # Given a booster trained on numeric columns and saved as a model file
    train, sample = data
    columns = ["balance", "income"]
    booster = lightgbm.train({"objective": "binary", "num_leaves": 7, "verbose": -1},
                             lightgbm.Dataset(train[columns], (train["default"] == "Yes")
                                              .astype(int)), num_boost_round=25)
    path = tmp_path / "booster.txt"
    booster.save_model(path)
    sample = sample[[*columns, "default"]]
    # When it is packaged with the sample's target naming the positive class
    built = package(NAME, path, sample, target="default", event="Yes")
    # Then the version serves the booster's own probabilities, and explains them
    assert built.card["metrics"]["positive_rate"] == round(float(
        (sample["default"] == "Yes").mean()), 4)
    expected = lightgbm.Booster(model_file=str(path)).predict(
        sample[columns].to_numpy(dtype=np.float32).astype(np.float64))
    assert_served(built, tmp_path, expected, sample, columns, explains=True)


def test_an_onnx_file_is_packaged_verified_and_served(data, tmp_path):
    from finmaas_recipes import common
    from finmaas_recipes.packaging import package

    # Given an ONNX file from elsewhere, one [None, 1] input per field
    train, sample = data
    model = fitted(logistic(), train)
    path = tmp_path / "model.onnx"
    path.write_bytes(common.to_onnx_classifier(model, ["balance", "income"], ["student"],
                                               "elsewhere", "elsewhere"))
    features = sample.drop(columns="default")
    # When it is packaged without a target
    built = package(NAME, path, features, event="default")
    # Then it has no metrics to claim and no explanation, yet serves the graph's scores
    assert built.card["metrics"]["holdout"]["rows"] == 0 and "roc_auc" not in built.card[
        "metrics"]
    assert "explanation" not in built.card and built.files == {}
    expected = model.predict_proba(features)[:, 1]
    assert_served(built, tmp_path, expected, sample, list(features.columns), explains=False)


# -- what the card infers from the sample -------------------------------------------------
def test_inputs_are_inferred_from_the_sample():
    from finmaas_recipes.packaging import infer_input

    whole = infer_input(pd.Series([1, 2, 3, 40] * 20, name="dependants"))
    assert whole["type"] == "integer" and whole["required"]
    assert whole["minimum"] == 0 and whole["maximum"] == 400
    gaps = infer_input(pd.Series([1.5, None, -2.0, 7.25] * 20, name="change"))
    assert gaps["type"] == "number" and not gaps["required"]
    assert gaps["minimum"] == -20 and gaps["maximum"] == 80
    level = infer_input(pd.Series(["rent", "own", None] * 20, name="home"))
    assert level["categories"] == ["own", "rent"] and not level["required"]


def test_card_overrides_fill_what_the_sample_cannot_say(data):
    from finmaas_recipes.packaging import PackagingError, package

    train, sample = data
    model = fitted(logistic(), train)
    overrides = {"description": "Card default in the next statement",
                 "intended_use": "pre-screening",
                 "fields": {"balance": {"description": "Card balance", "unit": "USD"}}}
    built = package(NAME, model, sample, target="default", event="default",
                    overrides=overrides)
    assert built.card["description"] == overrides["description"]
    assert built.card["intended_use"] == "pre-screening"
    balance = next(i for i in built.card["inputs"] if i["name"] == "balance")
    assert (balance["description"], balance["unit"]) == ("Card balance", "USD")
    with pytest.raises(PackagingError, match=r"\['salary'\] are not inputs"):
        package(NAME, model, sample, target="default",
                overrides={"fields": {"salary": {"unit": "USD"}}})


# -- refusals -------------------------------------------------------------------------------
def test_an_unsupported_estimator_is_refused(data):
    from finmaas_recipes.packaging import PackagingError, package
    from sklearn.neighbors import KNeighborsClassifier

    train, sample = data
    model = fitted(KNeighborsClassifier(), train)
    with pytest.raises(PackagingError, match="unsupported estimator KNeighborsClassifier"):
        package(NAME, model, sample, target="default")


def test_a_free_text_column_is_refused(data):
    from finmaas_recipes.packaging import PackagingError, package
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    train, sample = data
    note = lambda df: [f"note {i}" for i in range(len(df))]  # noqa: E731
    train, sample = train.assign(note=note(train)), sample.assign(note=note(sample))
    model = Pipeline([
        ("preprocess", ColumnTransformer([
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["student", "note"]),
            ("num", "passthrough", ["balance", "income"])])),
        ("model", logistic())]).fit(train.drop(columns="default"), train["default"])
    with pytest.raises(PackagingError, match=r"'note' looks like free text \(200 distinct"):
        package(NAME, model, sample, target="default")


def test_a_sample_column_the_model_does_not_use_is_refused(data):
    from finmaas_recipes.packaging import PackagingError, package

    train, sample = data
    model = fitted(logistic(), train)
    with pytest.raises(PackagingError, match=r"\['branch'\] are not used by the pipeline"):
        package(NAME, model, sample.assign(branch="north"), target="default")


def test_a_sample_too_small_or_without_its_target_is_refused(data):
    from finmaas_recipes.packaging import PackagingError, package

    train, sample = data
    model = fitted(logistic(), train)
    with pytest.raises(PackagingError, match="49 rows; packaging needs at least 50"):
        package(NAME, model, sample.head(49), target="default")
    with pytest.raises(PackagingError, match="target column 'defaulted' is not in the sample"):
        package(NAME, model, sample, target="defaulted")


def test_a_graph_that_differs_from_the_model_is_refused_with_a_parity_report(
        data, monkeypatch):
    from finmaas_recipes import common
    from finmaas_recipes.packaging import PackagingError, package

    # Given a conversion that drifts by 1e-3 on every row
    train, sample = data
    model = fitted(lightgbm_classifier(), train)
    real = common.run_onnx
    monkeypatch.setattr(common, "run_onnx", lambda *a, **k: real(*a, **k) + 1e-3)
    # Then packaging refuses, saying by how much and on how many rows
    with pytest.raises(PackagingError, match=r"parity check failed: .*differs from the "
                                             r"trained model by 0\.001 .* on 200 of 200 rows"):
        package(NAME, model, sample, target="default")


# -- the command line -----------------------------------------------------------------------
def test_maas_models_new_writes_a_version_and_reports(data, tmp_path, capsys, monkeypatch):
    import joblib
    from finmaas.cli import main

    train, sample = data
    joblib.dump(fitted(logistic(), train), tmp_path / "model.joblib")
    sample.to_csv(tmp_path / "sample.csv", index=False)
    monkeypatch.chdir(tmp_path)
    code = main(["models", "new", NAME, "--from", "model.joblib", "--sample", "sample.csv",
                 "--target", "default", "--event", "default"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "ONNX parity on 200 sample rows" in out and "ROC AUC" in out
    assert f"written to {NAME}/1" in out
    assert sorted(p.name for p in (tmp_path / NAME / "1").iterdir()) == [
        "card.json", "explainer.json", "model.onnx"]


def test_a_parquet_sample_packages_like_a_csv_one(data, tmp_path, capsys):
    import joblib
    from finmaas.cli import main

    train, sample = data
    joblib.dump(fitted(logistic(), train), tmp_path / "model.joblib")
    sample.to_csv(tmp_path / "sample.csv", index=False)
    sample.to_parquet(tmp_path / "sample.parquet", index=False)
    cards = []
    for kind in ("csv", "parquet"):
        assert main(["models", "new", NAME, "--from", str(tmp_path / "model.joblib"),
                     "--sample", str(tmp_path / f"sample.{kind}"), "--target", "default",
                     "--event", "default", "--out", str(tmp_path / kind)]) == 0
        cards.append(json.loads((tmp_path / kind / "card.json").read_text()))
    capsys.readouterr()
    assert cards[0]["inputs"] == cards[1]["inputs"]
    assert cards[0]["metrics"] == cards[1]["metrics"]


def test_maas_models_new_says_why_it_refuses(data, tmp_path, capsys):
    import joblib
    from finmaas.cli import main

    train, sample = data
    joblib.dump(fitted(logistic(), train), tmp_path / "model.joblib")
    sample.head(10).to_csv(tmp_path / "sample.csv", index=False)
    code = main(["models", "new", NAME, "--from", str(tmp_path / "model.joblib"),
                 "--sample", str(tmp_path / "sample.csv"), "--out", str(tmp_path / "v")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("maas: not packaged: the sample has 10 rows")
    assert "Traceback" not in err and not (tmp_path / "v").exists()


def test_a_pipeline_that_reads_missing_categories_its_own_way_is_refused(data):
    from finmaas_recipes.packaging import PackagingError, package

    # Given a pipeline that learned NaN as a category of its own (the server sends "")
    train, sample = data
    gappy = lambda df: df.assign(student=df["student"].where(  # noqa: E731
        df.index % 3 != 0, np.nan))
    model = fitted(logistic(), gappy(train))
    with pytest.raises(PackagingError, match=r"scores \d+ sample row\(s\) differently when "
                                             r"category columns \['student'\] arrive"):
        package(NAME, model, gappy(sample), target="default")


def test_a_true_false_column_is_refused(data):
    from finmaas_recipes.packaging import PackagingError, infer_input

    with pytest.raises(PackagingError, match="'student' is true/false"):
        infer_input(data[1]["student"].eq("Yes").rename("student"))


def lightgbm_regressor():
    from lightgbm import LGBMRegressor

    return LGBMRegressor(n_estimators=30, num_leaves=7, verbose=-1, n_jobs=1)


def linear_regression():
    from sklearn.linear_model import LinearRegression

    return LinearRegression()


@pytest.mark.parametrize("make", [linear_regression, lightgbm_regressor])
def test_a_regressor_pipeline_is_packaged_verified_and_served(data, tmp_path, make):
    from finmaas_recipes.packaging import package

    # Given a pipeline predicting the card balance from student status and income
    train, sample = data
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    model = Pipeline([
        ("preprocess", ColumnTransformer([
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["student"]),
            ("num", "passthrough", ["income"])])),
        ("model", make())]).fit(train[["student", "income"]], train["balance"])
    sample = sample[["student", "income", "balance"]]
    # When it is packaged with the balance as target
    built = package(NAME, model, sample, target="balance")
    # Then the card is a regression with R2 on the sample, and the app serves its values
    assert built.card["task"] == "regression" and "r2" in built.card["metrics"]
    assert built.card["outputs"][0]["name"] == "value"
    expected = model.predict(sample[["student", "income"]])
    linear = make is linear_regression  # the zoo explains linear models and tree classifiers
    assert_served(built, tmp_path, expected, sample, ["student", "income"], explains=linear)


def test_an_onnx_regressor_with_whole_number_inputs_is_packaged_and_served(tmp_path):
    from finmaas_recipes.packaging import package
    from onnx import TensorProto, helper

    # Given an ONNX file from elsewhere: value = 2 * months (int64) + amount (float)
    graph = helper.make_graph(
        [helper.make_node("Cast", ["months"], ["months_f"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["months_f", "two"], ["twice"]),
         helper.make_node("Add", ["twice", "amount"], ["value"])],
        "elsewhere",
        [helper.make_tensor_value_info("months", TensorProto.INT64, [None, 1]),
         helper.make_tensor_value_info("amount", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("value", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])])
    path = tmp_path / "model.onnx"
    path.write_bytes(helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    rng = np.random.default_rng(1)
    sample = pd.DataFrame({"months": rng.integers(6, 60, 80),
                           "amount": rng.normal(0, 100, 80).round(2)})
    sample["repaid"] = 2 * sample["months"] + sample["amount"] + rng.normal(0, 1, 80)
    # When it is packaged
    built = package(NAME, path, sample, target="repaid")
    # Then months is a whole number, amount may be negative, and R2 is the sample's
    inputs = {i["name"]: i for i in built.card["inputs"]}
    assert inputs["months"]["type"] == "integer" and inputs["amount"]["minimum"] < 0
    assert built.card["task"] == "regression" and built.card["metrics"]["r2"] > 0.99
    expected = (2 * sample["months"] + sample["amount"]).to_numpy()
    assert_served(built, tmp_path, expected, sample, ["months", "amount"], explains=False)


def test_a_lightgbm_regression_booster_is_packaged_and_served(data, tmp_path):
    import lightgbm
    from finmaas_recipes.packaging import package

    train, sample = data
    booster = lightgbm.train({"objective": "regression", "num_leaves": 7, "verbose": -1},
                             lightgbm.Dataset(train[["income"]], train["balance"]),
                             num_boost_round=20)
    built = package(NAME, booster, sample[["income", "balance"]], target="balance")
    assert built.card["task"] == "regression" and "r2" in built.card["metrics"]
    expected = booster.predict(sample[["income"]].to_numpy(np.float32).astype(np.float64))
    assert_served(built, tmp_path, expected, sample, ["income"], explains=False)


def test_write_version_never_overwrites_another_model(data, tmp_path):
    from finmaas_recipes.packaging import PackagingError, package, write_version

    train, sample = data
    first = package(NAME, fitted(logistic(), train), sample, target="default")
    second = package(NAME, fitted(lightgbm_classifier(), train), sample, target="default")
    out = write_version(first, tmp_path / "v1")
    assert write_version(first, out) == out  # the same bytes again: a no-op
    with pytest.raises(PackagingError, match="already holds something else"):
        write_version(second, out)
    # the same graph at another price is another card: a published version is never
    # rewritten (it once billed callers the new price under the old version)
    repriced = package(NAME, fitted(logistic(), train), sample, target="default", price="25")
    with pytest.raises(PackagingError, match="already holds something else"):
        write_version(repriced, out)
    assert json.loads((out / "card.json").read_text()) == first.card
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(PackagingError, match="is a file"):
        write_version(first, tmp_path / "a-file")


@pytest.mark.parametrize("price", ["NaN", "sNaN", "-1", "1e3", "0.1234567"])
def test_a_price_that_is_no_price_is_refused(data, price):
    from finmaas_recipes.packaging import PackagingError, package

    train, sample = data
    with pytest.raises(PackagingError, match="not a price"):
        package(NAME, fitted(logistic(), train), sample, target="default", price=price)


def test_overrides_of_the_wrong_shape_are_refused(data):
    from finmaas_recipes.packaging import PackagingError, package

    train, sample = data
    with pytest.raises(PackagingError, match="must map each field"):
        package(NAME, fitted(logistic(), train), sample, target="default",
                overrides={"fields": {"income": 5}})


def test_a_category_level_missing_from_the_sample_is_still_accepted(data):
    from finmaas_recipes.packaging import package

    # Given a pipeline trained with a level ("Maybe") that the sample lacks
    train, sample = data
    train = train.assign(student=train["student"].mask(train.index % 50 == 0, "Maybe"))
    built = package(NAME, fitted(logistic(), train), sample, target="default")
    # Then the card accepts every level the encoder learned
    student = next(i for i in built.card["inputs"] if i["name"] == "student")
    assert student["categories"] == ["Maybe", "No", "Yes"]
