"""Package a publisher's own model as a FinMaaS version: ONNX graph, card and explainer data.

``package(name, source, sample, ...)`` takes a fitted scikit-learn Pipeline
(ColumnTransformer + LogisticRegression, LGBMClassifier, LinearRegression or LGBMRegressor),
a LightGBM booster (binary or regression, numeric columns) or an ONNX file with one
``[None, 1]`` input per field, and a sample of the data the model scores. It converts with
the zoo's own code (``common.export_classifier``/``export_regressor``: preprocessing
inside the graph, exact tree thresholds, the parity gate, explainer data), infers the
card from the sample and opens the result through the server's door
(``finmaas.runtime.open_version``) before anyone writes it.
``write_version(built, out_dir)`` writes ``model.onnx``, ``card.json`` and the other files.

Training extra only: pandas, scikit-learn, LightGBM and the converters never enter the
Lambda bundle. Unpickling runs code: only package files you (the publisher) made.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from finmaas.cards import PRICE_PATTERN

from . import common, explainers

MIN_SAMPLE_ROWS = 50
MAX_CATEGORIES = 50
# Fields of the card a publisher may set in the overrides file (JSON).
OVERRIDABLE = ("description", "intended_use", "limitations", "training_data",
               "missing_values", "fields")
FIELD_OVERRIDES = ("description", "unit", "minimum", "maximum", "required", "categories",
                   "unknown_category")


class PackagingError(ValueError):
    """The model or its sample cannot become a served version; the message says why."""


# -- reading the publisher's files -----------------------------------------------------
def load_source(path: str | Path) -> Any:
    """The model in ``path``: ``.onnx`` bytes, a LightGBM booster (``.txt``/``.lgb``) or a
    joblib/pickle file (anything else)."""
    path = Path(path)
    if not path.is_file():
        raise PackagingError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return path.read_bytes()
    if suffix in (".txt", ".lgb", ".model"):
        import lightgbm

        try:
            return lightgbm.Booster(model_file=str(path))
        except Exception as exc:  # LightGBM raises its own LightGBMError with the reason
            raise PackagingError(f"{path}: not a LightGBM model file: {exc}") from exc
    import joblib

    try:
        return joblib.load(path)
    except Exception as exc:
        raise PackagingError(f"{path}: cannot be unpickled: {exc}") from exc


def load_sample(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise PackagingError(f"{path}: no such file")
    if path.suffix.lower() == ".parquet":
        try:
            return pd.read_parquet(path)
        except ImportError as exc:
            raise PackagingError(f"{path}: reading parquet needs pyarrow "
                                 "(pip install pyarrow), or give a .csv") from exc
    if path.suffix.lower() == ".csv":
        return pd.read_csv(path)
    raise PackagingError(f"{path}: the sample must be a .csv or .parquet file")


def load_overrides(path: str | Path) -> dict[str, Any]:
    """The publisher's card overrides: a JSON object (PyYAML is not a declared
    dependency of FinMaaS, so the overrides file is JSON)."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise PackagingError(f"{path}: no such file") from exc
    except OSError as exc:
        raise PackagingError(f"{path}: cannot read it: {exc}") from exc
    except (ValueError, RecursionError) as exc:
        raise PackagingError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise PackagingError(f"{path}: must be a JSON object")
    return doc


# -- inferring the card's inputs from the sample -----------------------------------------
def _is_category(series: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(series)


def infer_input(series: pd.Series) -> dict[str, Any]:
    """A card input from one sample column: category (with its levels), integer (all
    whole) or number, a range with a margin, and required unless values are missing."""
    name = str(series.name)
    required = not bool(series.isna().any())
    present = series.dropna()
    if present.empty:
        raise PackagingError(f"column {name!r} has no values in the sample")
    if pd.api.types.is_bool_dtype(series) or {type(v) for v in present} == {bool}:
        raise PackagingError(f"column {name!r} is true/false, which JSON callers cannot send "
                             "to a graph: train and sample it as 0/1 or as text ('yes'/'no')")
    if _is_category(series):
        levels = sorted({str(v) for v in present})
        if len(levels) > MAX_CATEGORIES:
            raise PackagingError(
                f"column {name!r} looks like free text ({len(levels)} distinct values, "
                f"more than {MAX_CATEGORIES}): FinMaaS serves tabular models whose text "
                "columns are categories; drop it or map it to a few categories")
        desc = "one of the categories seen in the sample"
        if not required:
            desc += "; omitted is allowed"
        return common.category_input(name, levels, desc, required=required)
    values = present.astype(np.float64)
    integer = bool((values == np.floor(values)).all())
    low, high = float(values.min()), float(values.max())
    minimum: float | int = 0 if low >= 0 else -common.generous_maximum(-values)
    maximum: float | int = common.generous_maximum(values) if high > 0 else 0
    desc = f"{'whole ' if integer else ''}number; sample range {low:g} to {high:g}"
    if not required:
        desc += "; omit if unknown"
    return common.number_input(name, desc, integer=integer, required=required,
                               minimum=minimum, maximum=maximum)


def _clean(sample: pd.DataFrame, inputs: list[dict[str, Any]]) -> pd.DataFrame:
    """The sample as the server feeds it: categories as strings ("" when omitted),
    numbers at float32 precision (what the graph computes with)."""
    categories = [i["name"] for i in inputs if i["type"] == "category"]
    numbers = [i["name"] for i in inputs if i["type"] != "category"]
    out = common.categorical(sample[[i["name"] for i in inputs]], categories)
    for c in numbers:
        out[c] = out[c].astype(np.float64).astype(np.float32).astype(np.float64)
    return out


# -- the three kinds of source ------------------------------------------------------------
def _pipeline_columns(model: Any) -> list[str]:
    from sklearn.pipeline import Pipeline

    if not isinstance(model, Pipeline) or len(model.steps) != 2:
        raise PackagingError(
            f"unsupported model {type(model).__name__}: give a fitted scikit-learn Pipeline "
            "of a ColumnTransformer and an estimator, a LightGBM model file or an .onnx file")
    pre = model.steps[0][1]
    names = getattr(pre, "feature_names_in_", None)
    if names is None:
        raise PackagingError("the pipeline's first step was not fitted on a DataFrame, so "
                             "its input columns have no names; refit it on a DataFrame")
    return [str(n) for n in names]


def _check_columns(used: list[str], sample: pd.DataFrame, what: str) -> None:
    extra = [c for c in sample.columns if c not in used]
    missing = [c for c in used if c not in sample.columns]
    problems = []
    if extra:
        problems.append(f"sample column(s) {extra} are not used by the {what}; drop them "
                        "(every card input must be a model input), or name the outcome "
                        "column with --target")
    if missing:
        problems.append(f"the {what} needs column(s) {missing}, absent from the sample")
    if problems:
        raise PackagingError("; ".join(problems))


def _estimator_kind(estimator: Any) -> str:
    """"classifier" or "regressor" for the estimators FinMaaS converts and explains."""
    from lightgbm import LGBMClassifier, LGBMRegressor
    from sklearn.linear_model import LinearRegression, LogisticRegression

    if isinstance(estimator, (LogisticRegression, LGBMClassifier)):
        return "classifier"
    if isinstance(estimator, (LinearRegression, LGBMRegressor)):
        return "regressor"
    raise PackagingError(
        f"unsupported estimator {type(estimator).__name__}: FinMaaS packages pipelines "
        "ending in LogisticRegression, LGBMClassifier, LinearRegression or LGBMRegressor "
        "(or export the model to ONNX yourself and package the .onnx file)")


def _from_pipeline(name: str, model: Any, X: pd.DataFrame,
                   inputs: list[dict[str, Any]]) -> dict[str, Any]:
    final = model.steps[-1][1]
    classifier = _estimator_kind(final) == "classifier"
    if classifier and len(final.classes_) != 2:
        raise PackagingError(f"only binary classifiers are supported; this one has "
                             f"{len(final.classes_)} classes")
    numbers = [i["name"] for i in inputs if i["type"] != "category"]
    categories = [i["name"] for i in inputs if i["type"] == "category"]
    export = common.export_classifier if classifier else common.export_regressor
    try:
        exported = export(name, model, X, X, numbers, categories,
                          f"{name}: packaged by FinMaaS", probe=_probe(X, inputs))
    except common.ParityError as exc:
        raise PackagingError(f"parity check failed: {exc}") from exc
    except Exception as exc:
        raise PackagingError(f"cannot convert the pipeline to ONNX: {exc}") from exc
    return {"task": "binary_classification" if classifier else "regression",
            "onnx": exported.onnx_bytes, "reference": exported.reference,
            "parity": exported.parity, "explainer": exported.explainer or None,
            "serving": ({"output": "probabilities", "column": 1} if classifier
                        else {"output": "variable", "column": 0}),
            "positive": final.classes_[1] if classifier else None,
            "algorithm": f"scikit-learn Pipeline: {type(model.steps[0][1]).__name__} + "
                         f"{type(final).__name__}"}


def _probe(X: pd.DataFrame, inputs: list[dict[str, Any]]) -> pd.DataFrame:
    """The sample plus a row for every category level it lacks, so that each encoded
    column of the pipeline moves with its field (explainers.column_fields)."""
    extra = []
    for spec in inputs:
        if spec["type"] != "category":
            continue
        for level in sorted(set(spec["categories"]) - set(X[spec["name"]])):
            row = X.iloc[[len(extra) % len(X)]].copy()
            row[spec["name"]] = level
            extra.append(row)
    return pd.concat([X, *extra], ignore_index=True) if extra else X


def _add_encoder_levels(model: Any, inputs: list[dict[str, Any]]) -> None:
    """A category's levels are the sample's plus those the pipeline's OneHotEncoder
    learned in training: a level too rare to be in the sample is still a valid input."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    by_name = {i["name"]: i for i in inputs if i["type"] == "category"}
    for _, step, columns in getattr(model.steps[0][1], "transformers_", []):
        if isinstance(step, Pipeline):
            step = step.steps[-1][1]
        if not isinstance(step, OneHotEncoder) or isinstance(columns, str):
            continue
        for column, levels in zip(columns, step.categories_, strict=False):
            spec = by_name.get(str(column))
            if spec is not None:
                learned = {v for v in levels.tolist() if isinstance(v, str) and v}
                spec["categories"] = sorted(set(spec["categories"]) | learned)


def _check_served_categories(model: Any, raw: pd.DataFrame, served: pd.DataFrame,
                             inputs: list[dict[str, Any]]) -> None:
    """The server sends categories as strings, "" when omitted. A pipeline that learned
    something else for a gap (NaN as its own category) or for non-string values would
    score the caller's record differently from the publisher's: refuse it."""
    categories = [i["name"] for i in inputs if i["type"] == "category"]
    if not categories:
        return
    as_given = served.copy()
    for c in categories:
        as_given[c] = raw[c].to_numpy()

    def score(X: pd.DataFrame) -> np.ndarray:
        if hasattr(model, "predict_proba"):
            return model.predict_proba(X)[:, 1]
        return np.asarray(model.predict(X), dtype=np.float64).reshape(-1)

    try:
        before = score(as_given)
    except Exception as exc:
        raise PackagingError(f"the pipeline cannot score the sample as given: {exc}") from exc
    after = score(served)
    scale = 1.0 if hasattr(model, "predict_proba") else max(1.0, float(np.abs(before).max()))
    gaps = np.abs(before - after) / scale
    if float(gaps.max()) > common.PARITY_TOLERANCE:
        rows = int((gaps > common.PARITY_TOLERANCE).sum())
        raise PackagingError(
            f"the pipeline scores {rows} sample row(s) differently when category columns "
            f"{categories} arrive as the server sends them (text, \"\" when omitted): train "
            "it on text categories, with missing ones filled with \"\"")


def _per_field_inputs(onx: Any, fields: list[str], tensor: str) -> None:
    """Replace the graph's one matrix input by one ``[None, 1]`` float input per field,
    concatenated in the model's column order (the server feeds named fields)."""
    from onnx import TensorProto, helper

    del onx.graph.input[:]
    for f in fields:
        onx.graph.input.append(helper.make_tensor_value_info(f, TensorProto.FLOAT, [None, 1]))
    onx.graph.node.insert(0, helper.make_node("Concat", fields, [tensor], axis=1,
                                              name="fields_to_matrix"))


def _from_booster(name: str, booster: Any, X: pd.DataFrame,
                  inputs: list[dict[str, Any]]) -> dict[str, Any]:
    from onnxmltools import convert_lightgbm
    from onnxmltools.convert.common.data_types import FloatTensorType

    fields = list(booster.feature_name())
    if any(i["type"] == "category" for i in inputs):
        bad = [i["name"] for i in inputs if i["type"] == "category"]
        raise PackagingError(f"a LightGBM model file reads numbers only; column(s) {bad} "
                             "are text: encode them as numbers, or package a Pipeline")
    objective = booster.dump_model().get("objective", "")
    binary = objective.startswith(("binary", "cross_entropy"))
    if not binary and not objective.startswith(("regression", "huber", "fair", "quantile")):
        raise PackagingError(f"unsupported LightGBM objective {objective!r}: binary "
                             "classification or regression")
    try:
        onx = convert_lightgbm(booster, name=name, zipmap=False,
                               initial_types=[("matrix", FloatTensorType([None, len(fields)]))],
                               target_opset=15)
        common.exact_tree_thresholds(onx, booster)
        _per_field_inputs(onx, fields, "matrix")
        explainer = None
        if binary:  # the zoo's tree explainer reads classifier trees (one score a leaf)
            explainers.expose_features(onx)
            explainer = explainers.tree_explainer(onx, booster, fields)
    except Exception as exc:
        raise PackagingError(f"cannot convert the LightGBM model to ONNX: {exc}") from exc
    onnx_bytes = onx.SerializeToString()
    outputs = [o.name for o in onx.graph.output]
    serving = ({"output": "probabilities", "column": 1} if binary
               else {"output": outputs[0], "column": 0})
    reference = booster.predict(X[fields].to_numpy(dtype=np.float64))
    served = common.run_onnx(onnx_bytes, common.onnx_feeds(X, fields, []),
                             serving["output"], serving["column"])
    # a regressor's value is in its own units: float32 arithmetic is exact to ~1e-7 of
    # its magnitude, so parity is measured relative to the largest value (at least 1)
    scale = 1.0 if binary else max(1.0, float(np.max(np.abs(reference))))
    try:
        parity = common.check_parity(name, reference / scale, served / scale)
    except common.ParityError as exc:
        raise PackagingError(f"parity check failed: {exc}") from exc
    return {"task": "binary_classification" if binary else "regression", "onnx": onnx_bytes,
            "reference": reference, "parity": parity, "explainer": explainer,
            "serving": serving, "positive": 1,
            "algorithm": f"LightGBM booster ({objective}, {booster.num_trees()} trees)"}


def _from_onnx(name: str, onnx_bytes: bytes, X: pd.DataFrame,
               inputs: list[dict[str, Any]]) -> dict[str, Any]:
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise PackagingError(f"the ONNX file does not load: {exc}") from exc
    graph_inputs = {i.name: i for i in sess.get_inputs()}
    _check_columns(list(graph_inputs), X, "ONNX graph")
    bad_shape = [n for n, i in graph_inputs.items() if len(i.shape) != 2 or i.shape[1] != 1]
    if bad_shape:
        raise PackagingError(f"graph input(s) {bad_shape} are not [None, 1]: FinMaaS feeds "
                             "one named column per field")
    feeds: dict[str, np.ndarray] = {}
    for spec in inputs:
        typ = graph_inputs[spec["name"]].type
        if typ == "tensor(string)":
            if spec["type"] != "category":
                raise PackagingError(f"{spec['name']}: the graph wants text, the sample "
                                     "has numbers")
            feeds[spec["name"]] = X[[spec["name"]]].to_numpy(dtype=object)
        elif spec["type"] == "category":
            raise PackagingError(f"{spec['name']}: the graph wants {typ}, the sample has text")
        elif typ in ("tensor(int64)", "tensor(int32)"):
            if spec["type"] != "integer":
                raise PackagingError(f"{spec['name']}: the graph wants whole numbers, the "
                                     "sample has fractions")
            if not spec["required"]:
                raise PackagingError(f"{spec['name']}: the graph wants whole numbers, which "
                                     "cannot be missing, but the sample has gaps")
            feeds[spec["name"]] = X[[spec["name"]]].to_numpy(
                dtype=np.int64 if typ == "tensor(int64)" else np.int32)
        else:
            feeds[spec["name"]] = X[[spec["name"]]].to_numpy(
                dtype=np.float64 if typ == "tensor(double)" else np.float32)
    outputs = {o.name: o for o in sess.get_outputs()}
    if "probabilities" in outputs:
        task, serving = "binary_classification", {"output": "probabilities", "column": 1}
    else:
        numeric_out = [o for o in sess.get_outputs()
                       if o.type in ("tensor(float)", "tensor(double)")]
        if not numeric_out:
            raise PackagingError(f"no numeric graph output among {sorted(outputs)}")
        first = numeric_out[0]
        two = len(first.shape) == 2 and first.shape[1] == 2
        task = "binary_classification" if two else "regression"
        serving = {"output": first.name, "column": 1 if two else 0}
    try:
        out = sess.run([serving["output"]], feeds)[0]
    except Exception as exc:
        raise PackagingError(f"the ONNX graph fails on the sample: {exc}") from exc
    out = np.asarray(out)
    scores = (out[:, serving["column"]] if out.ndim == 2 else out).reshape(-1)
    if len(scores) != len(X) or not np.isfinite(scores).all():
        raise PackagingError("the ONNX graph does not give one finite score per sample row")
    # the file is its own reference: parity here is the server's feeding of the sample
    # (float32 columns, "" for omitted categories) against the graph, checked again by
    # open_version's example below
    return {"task": task, "onnx": onnx_bytes, "reference": scores.astype(np.float64),
            "parity": 0.0, "explainer": None, "serving": serving, "positive": 1,
            "algorithm": "ONNX graph provided by the publisher",
            "parity_note": "the served graph is the publisher's file, unchanged"}


# -- the card -------------------------------------------------------------------------------
def _price(text: str, what: str) -> str:
    """The card's own rule for prices (a decimal string, at most six decimals), checked
    here so a bad flag is a clear refusal, not a card that fails its schema."""
    if not re.fullmatch(PRICE_PATTERN, str(text)):
        raise PackagingError(f"{what} {text!r} is not a price in USD per 1,000 (a decimal "
                             "such as 0.50, at most six decimals)")
    return str(text)


def _metrics(task: str, y: np.ndarray | None, reference: np.ndarray, rows: int,
             target: str | None) -> dict[str, Any]:
    if y is None:
        return {"holdout": {"method": "none: no target column was given, so no metrics "
                                      "were computed", "rows": 0}}
    if task == "binary_classification":
        metrics = common.classification_metrics(y, reference)
    else:
        metrics = dict(common.regression_metrics(y, reference))
    metrics["holdout"] = {
        "method": f"the publisher's sample, with target column {target!r}, is the holdout; "
                  "FinMaaS cannot tell whether the model saw these rows in training",
        "rows": rows,
    }
    if task == "binary_classification":
        metrics["holdout"]["positives"] = int(y.sum())
    return metrics


def _target(sample: pd.DataFrame, target: str, task: str, positive: Any,
            event: str | None) -> np.ndarray:
    series = sample[target]
    if series.isna().any():
        raise PackagingError(f"target column {target!r} has {int(series.isna().sum())} "
                             "missing values")
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(series):
            raise PackagingError(f"target column {target!r} must be numeric for a regressor")
        return series.to_numpy(dtype=np.float64)
    levels = set(series.unique().tolist())
    if levels <= {0, 1}:  # True and False compare equal to 1 and 0
        y = series.astype(np.int64).to_numpy()
    elif len(levels) == 2 and event in {str(v) for v in levels}:
        y = (series.astype(str) == event).to_numpy(dtype=np.int64)
    elif len(levels) <= 2 and str(positive) in {str(v) for v in levels}:
        y = (series.astype(str) == str(positive)).to_numpy(dtype=np.int64)
    else:
        raise PackagingError(
            f"target column {target!r} takes {sorted(map(str, levels))}: give 0/1, or two "
            f"values one of which is the model's positive class ({positive!r}) or --event")
    if y.min() == y.max():
        raise PackagingError(f"target column {target!r} has only one outcome in the sample; "
                             "holdout metrics need rows of both")
    return y


def _apply_overrides(card: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    unknown = sorted(set(overrides) - set(OVERRIDABLE))
    if unknown:
        raise PackagingError(f"overrides: unknown key(s) {unknown}; allowed: "
                             f"{', '.join(OVERRIDABLE)}")
    for key, value in overrides.items():
        if key != "fields":
            card[key] = value
    fields = overrides.get("fields") or {}
    if not isinstance(fields, dict) or not all(isinstance(v, dict) for v in fields.values()):
        raise PackagingError('overrides: "fields" must map each field to an object, e.g. '
                             '{"income": {"description": "...", "unit": "USD"}}')
    by_name = {i["name"]: i for i in card["inputs"]}
    unknown = sorted(set(fields) - set(by_name))
    if unknown:
        raise PackagingError(f"overrides: field(s) {unknown} are not inputs of the model")
    for field_name, spec in fields.items():
        bad = sorted(set(spec) - set(FIELD_OVERRIDES))
        if bad:
            raise PackagingError(f"overrides: {field_name}: unknown key(s) {bad}; allowed: "
                                 f"{', '.join(FIELD_OVERRIDES)}")
        by_name[field_name].update(spec)


def package(name: str, source: Any, sample: pd.DataFrame, *, target: str | None = None,
            event: str | None = None, price: str = "0.50", version: str = "1",
            explain_price: str | None = None,
            overrides: Mapping[str, Any] | None = None) -> common.BuiltModel:
    """A publisher's model as a checked FinMaaS version (see the module docstring).

    ``source`` is a fitted Pipeline, a ``lightgbm.Booster``, ONNX bytes, or a path to any
    of them (``load_source``). ``sample`` holds the model's input columns (and ``target``
    when given; it becomes the holdout of the card's metrics). ``event`` names the
    positive class in the card (``"default"``). A model that explains is priced
    ``explain_price`` per 1,000 explanations (default: three times ``price``, the zoo's
    ratio). Raises ``PackagingError`` with the reason (a parity report when the graph and
    the source model disagree on the sample)."""
    from finmaas.cards import NAME_RE, VERSION_RE, CardError
    from finmaas.runtime import VersionRejected

    if not NAME_RE.match(name):
        raise PackagingError(f"name {name!r}: 3-64 lowercase letters, digits and dashes")
    if not VERSION_RE.match(version):
        raise PackagingError(f"version {version!r}: letters, digits, '.', '_', '-'")
    _price(price, "price")
    if isinstance(source, (str, Path)):
        source = load_source(source)
    if not isinstance(sample, pd.DataFrame):
        raise PackagingError(f"the sample must be a pandas DataFrame, got "
                             f"{type(sample).__name__}")
    if len(sample) < MIN_SAMPLE_ROWS:
        raise PackagingError(f"the sample has {len(sample)} rows; packaging needs at least "
                             f"{MIN_SAMPLE_ROWS} to infer the inputs and check parity")
    if target is not None and target not in sample.columns:
        raise PackagingError(f"target column {target!r} is not in the sample; columns: "
                             f"{list(sample.columns)}")
    features = sample.drop(columns=[target]) if target else sample
    features = features.rename(columns=str)
    if isinstance(source, bytes):
        kind = "onnx"
    elif type(source).__name__ == "Booster":
        kind = "booster"
        _check_columns(list(source.feature_name()), features, "LightGBM model")
    else:
        kind = "pipeline"
        _check_columns(_pipeline_columns(source), features, "pipeline's ColumnTransformer")
    inputs = [infer_input(features[c]) for c in features.columns]
    if kind == "pipeline":
        _add_encoder_levels(source, inputs)
    X = _clean(features, inputs)
    if kind == "pipeline":
        _estimator_kind(source.steps[-1][1])
        _check_served_categories(source, features, X, inputs)
    converted = {"onnx": _from_onnx, "booster": _from_booster,
                 "pipeline": _from_pipeline}[kind](name, source, X, inputs)
    task = converted["task"]
    y = _target(sample, target, task, converted["positive"], event) if target else None
    event = event or (str(converted["positive"]) if task == "binary_classification" else None)
    if task == "binary_classification":
        description = f"Probability of {event}, from {len(inputs)} fields."
        outputs = common.probability_output(event, f"Probability of {event}")
    else:
        description = f"A value predicted from {len(inputs)} fields."
        outputs = [{"name": "value", "type": "number", "description": "the predicted value"}]
    card: dict[str, Any] = {
        "name": name, "version": version, "task": task, "description": description,
        "inputs": inputs,
        "example": common.example_record(X.iloc[0], inputs),
        "outputs": outputs,
        "serving": converted["serving"],
        "metrics": _metrics(task, y, converted["reference"], len(X), target),
        "training_data": {"source": "provided by the publisher",
                          "sample_rows": len(X)},
        "model": {"algorithm": converted["algorithm"], "packaged_by": "maas models new"},
        "parity": {"max_abs_diff_vs_source_model": converted["parity"], "rows": len(X),
                   **({"note": converted["parity_note"]} if "parity_note" in converted
                      else {})},
        "built_with": common.library_versions("scikit-learn", "lightgbm", "skl2onnx",
                                              "onnxmltools", "onnx", "onnxruntime"),
        "pricing": {"usd_per_1k_predictions": price},
    }
    files: dict[str, bytes] = {}
    explainer = converted["explainer"]
    if explainer is not None:
        card["pricing"]["usd_per_1k_explanations"] = _price(
            explain_price or str(Decimal(price) * 3), "explanation price")
        labels = {n: f"{n} ({{value}})" for n in set(explainer["columns"])}
        if task == "binary_classification":
            outcome, space = f"the probability of {event}", f"log-odds of {event}"
        else:
            outcome = space = f"the predicted {target or 'value'}"
        card.update(common.explanation_sections(explainer, labels, outcome=outcome,
                                                output_space=space))
        files[common.EXPLAINER_FILE] = explainers.explainer_bytes(explainer)
    _apply_overrides(card, overrides or {})
    built = common.BuiltModel(name, version, converted["onnx"], card, converted["parity"],
                              X if explainer is not None else None, converted["reference"],
                              files=files, model=source)
    try:
        built.card = common.checked_card(built)
    except CardError as exc:
        raise PackagingError(f"the card would be invalid: {exc}") from exc
    except VersionRejected as exc:
        raise PackagingError(f"the packaged version would not be served: {exc}") from exc
    return built


def write_version(built: common.BuiltModel, out_dir: str | Path) -> Path:
    """Write the version directory (``model.onnx``, ``card.json``, explainer data) ready
    for ``maas models verify`` and ``maas models publish --from``. Writes only into an
    empty or absent directory, or one holding exactly this version already (versions are
    immutable once published: a new price or card is a new version)."""
    out = Path(out_dir)
    card_text = json.dumps(built.card, indent=2) + "\n"
    files = {"model.onnx": built.onnx_bytes, **built.files, "card.json": card_text.encode()}
    if out.exists() and not out.is_dir():
        raise PackagingError(f"{out} is a file, not a directory; choose another --out")
    if out.is_dir():
        present = {p.name for p in out.iterdir()}
        if present and not (present == set(files) and all(
                (out / f).is_file() and (out / f).read_bytes() == d for f, d in files.items())):
            raise PackagingError(f"{out} already holds something else (another model, "
                                 "version or card); choose another --out or --version")
        if present:
            return out  # exactly this version, already written
    try:
        out.mkdir(parents=True, exist_ok=True)
        for file, data in files.items():  # the card last: a version exists once it does
            tmp = out / f".{file}.part"
            tmp.write_bytes(data)
            tmp.replace(out / file)
    except OSError as exc:
        raise PackagingError(f"cannot write {out}: {exc}") from exc
    return out
