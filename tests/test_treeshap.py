"""finmaas.explain.TreeExplainer: exact path-dependent SHAP values for tree ensembles.

The oracle is the definition itself: enumerate every subset S of features, take the
path-dependent expectation E[f(x) | x_S] (follow x where the feature is known, else the
cover-weighted average of both children) and weight the marginal gains by Shapley's
|S|!(F-|S|-1)!/F!. LightGBM's own pred_contrib is the second, independent witness.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from finmaas.explain import TreeExplainer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import lightgbm_trees

NODE_ARRAYS = ("feature", "threshold", "mode", "true_child", "false_child", "missing_true",
               "value", "cover")
# Thresholds and inputs share a grid so records land exactly on thresholds, where
# BRANCH_LEQ and BRANCH_LT disagree; +-inf is on it because LightGBM splits "missing or
# not" at +inf.
GRID = (-math.inf, -1.0, -0.5, 0.0, 0.5, 1.0, math.inf)


# -- the oracle ------------------------------------------------------------------------
def goes_true(tree: dict, node: int, x: float) -> bool:
    if math.isnan(x):
        return bool(tree["missing_true"][node])
    t = tree["threshold"][node]
    return x <= t if tree["mode"][node] == "BRANCH_LEQ" else x < t


def expectations(tree: dict, node: int, x: np.ndarray, subsets: np.ndarray) -> np.ndarray:
    """E[tree(x) | x_S] for every subset S at once (bit f of S set: feature f known)."""
    if tree["mode"][node] == "LEAF":
        return np.full(len(subsets), float(tree["value"][node]))
    f = tree["feature"][node]
    tc, fc = tree["true_child"][node], tree["false_child"][node]
    e_true, e_false = expectations(tree, tc, x, subsets), expectations(tree, fc, x, subsets)
    known = ((subsets >> f) & 1).astype(bool)
    followed = e_true if goes_true(tree, node, x[f]) else e_false
    ct, cf = tree["cover"][tc], tree["cover"][fc]
    return np.where(known, followed, (ct * e_true + cf * e_false) / (ct + cf))


def brute_force(trees: list[dict], x: np.ndarray, base: float) -> tuple[np.ndarray, np.ndarray]:
    """(phi, v): exact Shapley values by enumerating all 2^F subsets, and the game v(S)."""
    n = len(x)
    subsets = np.arange(1 << n)
    v = base + sum((expectations(t, 0, x, subsets) for t in trees), np.zeros(1 << n))
    size = np.array([bin(s).count("1") for s in subsets])
    phi = np.zeros(n)
    for i in range(n):
        without = subsets[((subsets >> i) & 1) == 0]
        s = size[without]
        weight = np.array([math.factorial(k) * math.factorial(n - k - 1) for k in s])
        phi[i] = np.sum(weight * (v[without | (1 << i)] - v[without])) / math.factorial(n)
    return phi, v


# -- random ensembles ------------------------------------------------------------------
@st.composite
def ensembles(draw: Callable) -> tuple[list[dict], int]:
    """1-4 trees of depth <= 4 over <= 8 features, with covers summing up the tree.

    Few features and deep trees make repeated tests of one feature on a path common; the
    shared grid makes contradictory ones (x <= 0, later x > 0.5) possible too.
    """
    n_features = draw(st.integers(1, 8))
    trees = []
    for _ in range(draw(st.integers(1, 4))):
        tree: dict[str, list] = {k: [] for k in NODE_ARRAYS}

        def grow(depth: int, tree: dict[str, list] = tree) -> int:
            me = len(tree["feature"])
            for column in tree.values():
                column.append(None)
            if depth == 4 or draw(st.booleans()):
                row = dict(feature=-1, threshold=0.0, mode="LEAF", true_child=-1,
                           false_child=-1, missing_true=False,
                           value=draw(st.floats(-10, 10, allow_nan=False)),
                           cover=draw(st.integers(1, 50)))
            else:
                tc, fc = grow(depth + 1), grow(depth + 1)
                row = dict(feature=draw(st.integers(0, n_features - 1)),
                           threshold=draw(st.sampled_from(GRID)),
                           mode=draw(st.sampled_from(["BRANCH_LEQ", "BRANCH_LT"])),
                           true_child=tc, false_child=fc, missing_true=draw(st.booleans()),
                           value=0.0, cover=tree["cover"][tc] + tree["cover"][fc])
            for key, value in row.items():
                tree[key][me] = value
            return me

        grow(0)
        trees.append(tree)
    return trees, n_features


def records(n_features: int) -> st.SearchStrategy:
    value = st.one_of(st.sampled_from(GRID), st.floats(-1.5, 1.5), st.just(math.nan))
    return st.lists(st.lists(value, min_size=n_features, max_size=n_features),
                    min_size=1, max_size=4).map(lambda rows: np.array(rows, dtype=np.float64))


# -- the properties --------------------------------------------------------------------
@settings(derandomize=True, max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), budget=st.sampled_from([None, 0, 200]),
       base=st.sampled_from([0.0, -1.25]))
def test_shap_values_equal_brute_force_shapley_values(data, budget, base) -> None:
    # given a random ensemble, records that hit thresholds exactly or are NaN, and a
    # table budget that puts all, none or some paths in the lookup table
    trees, n_features = data.draw(ensembles())
    X = data.draw(records(n_features))
    kwargs = {} if budget is None else {"max_table_bytes": budget}
    explainer = TreeExplainer(trees, n_features, base_offset=base, **kwargs)

    # when the explainer explains them
    phi = explainer.shap_values(X)

    # then each row is the exact Shapley value of the path-dependent game, the expected
    # value is the game with nothing known, and the raw score the game with all known
    for row, x in zip(phi, X, strict=True):
        want, v = brute_force(trees, x, base)
        np.testing.assert_allclose(row, want, rtol=0, atol=1e-9)
        assert explainer.expected_value == pytest.approx(v[0], rel=0, abs=1e-9)
        assert explainer.predict_raw(x[None])[0] == pytest.approx(v[-1], rel=0, abs=1e-9)
    np.testing.assert_allclose(explainer.expected_value + phi.sum(axis=1),
                               explainer.predict_raw(X), rtol=1e-9, atol=1e-9)


def stump(*, mode: str = "BRANCH_LEQ", missing_true: bool = True) -> dict[str, list]:
    """x0 <= 0.5 -> 1.0 (30 training rows), else 5.0 (10 rows): E[f] = 2.0."""
    return {"feature": [0, -1, -1], "threshold": [0.5, 0.0, 0.0],
            "mode": [mode, "LEAF", "LEAF"], "true_child": [1, -1, -1],
            "false_child": [2, -1, -1], "missing_true": [missing_true, False, False],
            "value": [0.0, 1.0, 5.0], "cover": [40, 30, 10]}


def test_a_stump_credits_its_feature_with_the_leaf_minus_the_average() -> None:
    # given a stump whose cover-weighted average is 2.0, and a second, unused feature
    explainer = TreeExplainer([stump()], n_features=2, base_offset=0.5)

    # when one record goes left, one right and one is missing (NaN goes left here)
    phi = explainer.shap_values(np.array([[0.0, 9.0], [3.0, 9.0], [np.nan, 9.0]]))

    # then the tested feature gets leaf - average, the unused one nothing
    assert explainer.expected_value == 2.5
    np.testing.assert_array_equal(phi, [[-1.0, 0.0], [3.0, 0.0], [-1.0, 0.0]])


def test_a_split_at_infinity_separates_missing_from_present_values() -> None:
    # given LightGBM's missingness split: every number goes true, NaN goes false
    tree = {**stump(missing_true=False), "threshold": [math.inf, 0.0, 0.0]}
    explainer = TreeExplainer([tree], n_features=1)

    # when records are a number, +inf itself, and missing
    X = np.array([[-math.inf], [math.inf], [math.nan]])

    # then numbers (infinite ones too) take the true child and NaN the false one
    np.testing.assert_array_equal(explainer.predict_raw(X), [1.0, 1.0, 5.0])
    np.testing.assert_array_equal(explainer.shap_values(X)[:, 0], [-1.0, -1.0, 3.0])


@pytest.mark.parametrize(("mode", "expected"), [("BRANCH_LEQ", 1.0), ("BRANCH_LT", 5.0)])
def test_a_record_on_the_threshold_follows_the_mode(mode: str, expected: float) -> None:
    # given a stump at 0.5 that is either x <= t or x < t
    explainer = TreeExplainer([stump(mode=mode)], n_features=1)

    # when the record equals the threshold
    X = np.array([[0.5]])

    # then <= takes the true child and < the false one, in the score and in the credit
    assert explainer.predict_raw(X)[0] == expected
    assert explainer.shap_values(X)[0, 0] == expected - 2.0


def test_an_ensemble_of_leaves_only_has_nothing_to_explain() -> None:
    # given trees that are single leaves (LightGBM writes one when no split helps)
    leaf = {"feature": [-1], "threshold": [0.0], "mode": ["LEAF"], "true_child": [-1],
            "false_child": [-1], "missing_true": [False], "value": [0.75], "cover": [3]}
    explainer = TreeExplainer([leaf, leaf], n_features=3)

    # when a record is explained, then everything is in the expected value
    assert explainer.expected_value == 1.5
    np.testing.assert_array_equal(explainer.shap_values(np.zeros((2, 3))), np.zeros((2, 3)))
    np.testing.assert_array_equal(explainer.predict_raw(np.zeros((2, 3))), [1.5, 1.5])


# -- parity with LightGBM --------------------------------------------------------------
def training_data(seed: int, rows: int = 600, features: int = 6) -> tuple[np.ndarray, ...]:
    """Numbers with NaNs in all but the last two columns (LightGBM then routes those
    columns' NaN as 0.0, the "None" missing type), and a target that uses most columns."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features))
    X[:, : features - 2][rng.random((rows, features - 2)) < 0.15] = np.nan
    signal = np.nan_to_num(X[:, 0]) * 2 - np.nan_to_num(X[:, 1]) + X[:, -1] * X[:, -2]
    signal += np.isnan(X[:, 2]) + rng.normal(scale=0.5, size=rows)
    X_new = rng.normal(size=(400, features))
    X_new[rng.random(X_new.shape) < 0.2] = np.nan  # every column, "None" ones too
    X_new[:5] = 0.0  # on the 0.0 that NaN stands for in a "None" column
    X_new[5:10] = np.inf  # beyond every split, and on the +inf of "missing or not" splits
    X_new[10:15] = -np.inf
    return X, signal, X_new


def _branches(dump: dict) -> list[dict]:
    out, stack = [], [t["tree_structure"] for t in dump["tree_info"]]
    while stack:
        node = stack.pop()
        if "split_feature" in node:
            out.append(node)
            stack += (node["left_child"], node["right_child"])
    return out


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_shap_values_match_lightgbm_pred_contrib(kind: str) -> None:
    import lightgbm

    # given a LightGBM model trained on data with missing values, converted to node arrays
    X, signal, X_new = training_data(seed=3)
    params = dict(n_estimators=40, num_leaves=15, min_child_samples=10, learning_rate=0.1,
                  random_state=0, n_jobs=1, deterministic=True, verbose=-1)
    if kind == "classifier":
        model = lightgbm.LGBMClassifier(**params).fit(X, signal > np.median(signal))
    else:
        model = lightgbm.LGBMRegressor(**params).fit(X, signal)
    booster = model.booster_
    missing_types = {n["missing_type"] for n in _branches(booster.dump_model())}
    assert missing_types == {"NaN", "None"}  # both missing routings are exercised
    explainer = TreeExplainer(lightgbm_trees(booster), n_features=X.shape[1])

    # when both explain the same new records (400 rows: several chunks)
    ours = explainer.shap_values(X_new)
    theirs = booster.predict(X_new, pred_contrib=True)

    # then the contributions, the expected value and the raw score agree
    np.testing.assert_allclose(ours, theirs[:, :-1], rtol=0, atol=1e-6)
    assert explainer.expected_value == pytest.approx(theirs[0, -1], rel=0, abs=1e-6)
    np.testing.assert_allclose(explainer.predict_raw(X_new),
                               booster.predict(X_new, raw_score=True), rtol=0, atol=1e-9)


# -- malformed trees are refused at construction ---------------------------------------
def two_level() -> dict[str, list]:
    """0: x0 <= 0 ? 1 : 2;  1: x1 < 1 ? 3 : 4;  2, 3, 4 leaves."""
    return {"feature": [0, 1, -1, -1, -1], "threshold": [0.0, 1.0, 0.0, 0.0, 0.0],
            "mode": ["BRANCH_LEQ", "BRANCH_LT", "LEAF", "LEAF", "LEAF"],
            "true_child": [1, 3, -1, -1, -1], "false_child": [2, 4, -1, -1, -1],
            "missing_true": [True, False, False, False, False],
            "value": [0.0, 0.0, 1.0, 2.0, 3.0], "cover": [10, 6, 4, 5, 1]}


def edited(**changes: tuple[int, object] | list) -> dict[str, list]:
    """two_level() with whole arrays replaced (a list) or one node changed (index, value)."""
    tree = two_level()
    for key, change in changes.items():
        if isinstance(change, list):
            tree[key] = change
        else:
            index, value = change
            tree[key][index] = value
    return tree


def without(key: str) -> dict[str, list]:
    tree = two_level()
    del tree[key]
    return tree


def with_cycle() -> dict[str, list]:
    """Nodes 5 and 7 are each other's child: one parent each, unreachable from the root."""
    tree = two_level()
    extra = {"feature": [0, -1, 0, -1], "threshold": [0.0] * 4,
             "mode": ["BRANCH_LEQ", "LEAF", "BRANCH_LEQ", "LEAF"],
             "true_child": [6, -1, 5, -1], "false_child": [7, -1, 8, -1],
             "missing_true": [False] * 4, "value": [0.0] * 4, "cover": [2, 1, 2, 1]}
    return {k: tree[k] + extra[k] for k in tree}


@pytest.mark.parametrize(("tree", "message"), [
    (without("cover"), r"missing node arrays \['cover'\]"),
    (edited(value=[0.0, 0.0, 1.0, 2.0]), "differ in length"),
    (edited(true_child=(1, 9)), "node 1 has child 9, outside 1..4"),
    (edited(false_child=(0, 0)), "node 0 has child 0"),
    (edited(false_child=(1, 3)), "node 1 has the same true and false child"),
    (edited(false_child=(1, 2)), "node 2 has more than one parent"),
    (with_cycle(), "node 5 is not reachable from the root"),
    (edited(feature=(1, 2)), "node 1 tests feature 2, outside 0..1"),
    (edited(feature=(0, 0.5)), "'feature' must hold integers"),
    (edited(feature=(3, 0)), "leaf node 3 must have feature and children -1"),
    (edited(mode=(0, "BRANCH_GT")), r"unknown mode \['BRANCH_GT'\]"),
    (edited(missing_true=(0, "False")), "'missing_true' must hold booleans"),
    (edited(threshold=(1, math.nan)), "thresholds must be numbers, not NaN"),
    (edited(value=(4, math.inf)), "leaf values must be finite"),
    (edited(cover=(4, 0)), "cover must be a finite number > 0"),
    (edited(cover=(0, 11)), "node 0 has cover 11 but its children 10"),
    (edited(**{k: [] for k in NODE_ARRAYS}), "has no nodes"),
])
def test_malformed_trees_are_refused_with_the_node_at_fault(tree: dict, message: str) -> None:
    # given a healthy tree and a malformed second one, when an explainer is built,
    # then it refuses, naming the tree and what is wrong
    with pytest.raises(ValueError, match=rf"^tree 1: .*{message}"):
        TreeExplainer([two_level(), tree], n_features=2)


def test_a_healthy_two_level_tree_is_accepted_as_python_or_onnx_values() -> None:
    # given the tree the malformed ones were edited from (so each refusal above is the
    # edit's doing), and the same tree as ONNX attributes hold it: bytes modes, 0/1 flags
    as_onnx = {**two_level(), "mode": [m.encode() for m in two_level()["mode"]],
               "missing_true": np.array([1, 0, 0, 0, 0], dtype=np.int64),
               "threshold": np.array(two_level()["threshold"], dtype=np.float32)}
    X = np.array([[1.0, 0.0], [-1.0, 0.0], [-1.0, 2.0], [np.nan, np.nan]])

    # when both explain the same records, then they agree
    plain, onnx = TreeExplainer([two_level()], 2), TreeExplainer([as_onnx], 2)
    np.testing.assert_array_equal(onnx.shap_values(X), plain.shap_values(X))
    np.testing.assert_array_equal(onnx.predict_raw(X), [1.0, 2.0, 3.0, 3.0])


@pytest.mark.parametrize(("build", "message"), [
    (lambda: TreeExplainer([two_level()], 0), "n_features must be a positive integer"),
    (lambda: TreeExplainer(two_level(), 2), "trees must be a sequence"),
    (lambda: TreeExplainer([two_level()], 2, base_offset=math.nan), "base_offset must be finite"),
])
def test_bad_constructor_arguments_are_refused(build: Callable, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize("shape", [(3,), (2, 3), (1, 2, 2)])
def test_records_of_the_wrong_shape_are_refused(shape: tuple[int, ...]) -> None:
    # given an explainer of two features, when records of another shape arrive,
    # then both entry points refuse them instead of reading the wrong columns
    explainer = TreeExplainer([two_level()], n_features=2)
    for method in (explainer.shap_values, explainer.predict_raw):
        with pytest.raises(ValueError, match=r"X must have shape \[N, 2\]"):
            method(np.zeros(shape))
