"""Explainer data for a served graph, written beside it at export time (``explainer.json``,
covered by its sha256 in the card): what the graph computes with (its trees or its
coefficients, read from the ONNX graph itself), what the graph lacks (each tree node's
training cover, from the booster), and the map from the graph's feature columns back to
the card's business fields. The server computes exact attributions from it
(``finmaas.explain``); nothing here enters the Lambda bundle.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

FEATURES = "features"  # graph output: the estimator's input, after the graph's preprocessing
ESTIMATORS = ("TreeEnsembleClassifier", "TreeEnsembleRegressor", "LinearClassifier",
              "LinearRegressor")


def estimator_node(onx: Any) -> Any:
    nodes = [n for n in onx.graph.node if n.op_type in ESTIMATORS]
    if len(nodes) != 1:
        raise RuntimeError(f"expected one estimator node, found {[n.op_type for n in nodes]}")
    return nodes[0]


def expose_features(onx: Any, tensor: str | None = None) -> None:
    """Add the estimator's input as the graph output ``features`` (float, [rows, columns]):
    the explainer reads the same preprocessed values the estimator scored."""
    from onnx import TensorProto, helper

    source = tensor or estimator_node(onx).input[0]
    onx.graph.node.append(helper.make_node("Identity", [source], [FEATURES],
                                           name="explainer_features"))
    elem = TensorProto.DOUBLE if tensor else TensorProto.FLOAT
    onx.graph.output.append(helper.make_tensor_value_info(FEATURES, elem, [None, None]))


def column_fields(pre: Any, X: pd.DataFrame) -> list[str]:
    """The card field each preprocessed column comes from, found by experiment: change one
    field at a time and see which columns move. Works for any column transformer (one-hot,
    scaling, passthrough) without reading its internals."""
    base = np.asarray(pre.transform(X), dtype=np.float64)
    owner: list[str | None] = [None] * base.shape[1]
    for field in X.columns:
        changed = X.copy()
        changed[field] = np.roll(X[field].to_numpy(), 1)
        moved = np.flatnonzero(
            (~np.isclose(np.asarray(pre.transform(changed), dtype=np.float64), base,
                         equal_nan=True)).any(axis=0))
        for col in moved:
            if owner[col] is not None:
                raise RuntimeError(f"column {col} depends on {owner[col]} and {field}")
            owner[col] = field
    missing = [i for i, o in enumerate(owner) if o is None]
    if missing:
        raise RuntimeError(f"columns {missing} moved with no field: too few distinct rows")
    return [o for o in owner if o is not None]


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def tree_explainer(onx: Any, booster: Any, columns: Sequence[str]) -> dict[str, Any]:
    """The served TreeEnsemble's trees as node arrays, with LightGBM's node counts as
    covers (matched by walking both trees from the root in step)."""
    node = estimator_node(onx)
    a = _attrs(node)
    if a.get("post_transform", b"NONE") not in (b"LOGISTIC", b"NONE"):
        raise RuntimeError(f"unsupported post_transform {a['post_transform']!r}")
    if set(a.get("class_ids", [0])) != {0}:
        raise RuntimeError("expected one score (binary or regression) per tree leaf")
    index: dict[tuple[int, int], int] = {}
    for i, (t, n) in enumerate(zip(a["nodes_treeids"], a["nodes_nodeids"], strict=True)):
        index[(t, n)] = i
    weights: dict[tuple[int, int], float] = {}
    for t, n, w in zip(a["class_treeids"], a["class_nodeids"], a["class_weights"],
                       strict=True):
        weights[(t, n)] = weights.get((t, n), 0.0) + float(w)
    dumps = {info["tree_index"]: info["tree_structure"]
             for info in booster.dump_model()["tree_info"]}
    trees = []
    for tree_id in sorted(set(a["nodes_treeids"])):
        ids = sorted(n for (t, n) in index if t == tree_id)
        children = {a["nodes_truenodeids"][index[(tree_id, n)]] for n in ids
                    if a["nodes_modes"][index[(tree_id, n)]] != b"LEAF"}
        children |= {a["nodes_falsenodeids"][index[(tree_id, n)]] for n in ids
                     if a["nodes_modes"][index[(tree_id, n)]] != b"LEAF"}
        (root,) = [n for n in ids if n not in children]
        # node 0 is the root in the explainer's arrays
        local = {n: k for k, n in enumerate([root, *(n for n in ids if n != root)])}
        tree: dict[str, list[Any]] = {k: [None] * len(ids) for k in (
            "feature", "threshold", "mode", "true_child", "false_child", "missing_true",
            "value", "cover")}
        _walk(a, index, weights, tree_id, root, dumps[tree_id], local, tree)
        trees.append(tree)
    return {"method": "tree_path_dependent", "columns": list(columns),
            "n_features": len(columns), "base_offset": float(sum(a.get("base_values", [0]))),
            "trees": trees}


def _walk(a: dict[str, Any], index: dict[tuple[int, int], int],
          weights: dict[tuple[int, int], float], tree_id: int, onnx_id: int,
          lgb: dict[str, Any], local: dict[int, int], tree: dict[str, list[Any]]) -> None:
    i = index[(tree_id, onnx_id)]
    k = local[onnx_id]
    mode = a["nodes_modes"][i].decode()
    if mode == "LEAF":
        if "leaf_value" not in lgb:
            raise RuntimeError(f"tree {tree_id}: graph leaf where LightGBM splits")
        tree["feature"][k], tree["threshold"][k], tree["mode"][k] = -1, 0.0, "LEAF"
        tree["true_child"][k] = tree["false_child"][k] = -1
        tree["missing_true"][k] = False
        tree["value"][k] = weights.get((tree_id, onnx_id), 0.0)
        tree["cover"][k] = int(lgb["leaf_count"])
        return
    if "split_feature" not in lgb or lgb["split_feature"] != a["nodes_featureids"][i]:
        raise RuntimeError(f"tree {tree_id}: graph and LightGBM disagree at node {onnx_id}")
    tree["feature"][k] = int(a["nodes_featureids"][i])
    tree["threshold"][k] = float(a["nodes_values"][i])
    tree["mode"][k] = mode
    tree["missing_true"][k] = bool(a["nodes_missing_value_tracks_true"][i])
    tree["value"][k] = 0.0
    tree["cover"][k] = int(lgb["internal_count"])
    true_id, false_id = a["nodes_truenodeids"][i], a["nodes_falsenodeids"][i]
    tree["true_child"][k], tree["false_child"][k] = local[true_id], local[false_id]
    # LightGBM's "<=" split sends x <= threshold left, as BRANCH_LEQ sends it to "true"
    _walk(a, index, weights, tree_id, true_id, lgb["left_child"], local, tree)
    _walk(a, index, weights, tree_id, false_id, lgb["right_child"], local, tree)


def linear_explainer(onx: Any, train_features: np.ndarray, columns: Sequence[str]
                     ) -> dict[str, Any]:
    """The served LinearClassifier's positive-class coefficients and intercept, and the
    training means of its (preprocessed) inputs: linear SHAP's baseline."""
    a = _attrs(estimator_node(onx))
    coef = np.asarray(a["coefficients"], dtype=np.float64).reshape(len(a["intercepts"]), -1)
    return linear_data(coef[-1], float(a["intercepts"][-1]), train_features, columns)


def linear_data(coefficients: np.ndarray, intercept: float, train_features: np.ndarray,
                columns: Sequence[str]) -> dict[str, Any]:
    means = np.asarray(train_features, dtype=np.float64).mean(axis=0)
    if len(coefficients) != len(columns) or len(means) != len(columns):
        raise RuntimeError("coefficients, means and columns differ in length")
    return {"method": "linear", "columns": list(columns), "n_features": len(columns),
            "coefficients": [float(c) for c in coefficients], "intercept": float(intercept),
            "means": [float(m) for m in means]}


def explainer_bytes(data: dict[str, Any]) -> bytes:
    """Deterministic JSON (sorted keys, shortest round-trip floats): a rebuild writes the
    same bytes, so the card's sha256 is reproducible."""
    return (json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n").encode()
