"""TreeSHAP benchmark: finmaas.explain against LightGBM's pred_contrib, in one run (not a test).

    .venv/bin/python -m tests.bench.treeshap

The ensemble is shaped like credit-risk's (300 trees of 15 leaves, ~27 features, the
recipe's LightGBM parameters), trained on random data with missing values.

S1  one record: median microseconds, ours and LightGBM's (single thread), and the ratio.
S2  1,000 records: median milliseconds, ours and LightGBM's (single thread), and the ratio.
S3  the same without the lookup table (max_table_bytes=0): the per-record quadrature that
    paths beyond the table's budget fall back to.
S0  what is paid once per loaded model: building the explainer, and its lookup table.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from finmaas.explain import TreeExplainer  # noqa: E402

from tests.bench.inference import interleaved  # noqa: E402
from tests.conftest import lightgbm_trees  # noqa: E402

FEATURES = 27
PARAMS = dict(n_estimators=300, learning_rate=0.03, num_leaves=15, min_child_samples=30,
              subsample=0.8, subsample_freq=1, colsample_bytree=0.8, reg_lambda=1.0)


def credit_risk_like(seed: int = 7) -> tuple[Any, np.ndarray]:
    """A trained booster and 1,000 unseen records (5% missing, as optional inputs are)."""
    from lightgbm import LGBMClassifier

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(5000, FEATURES))
    X[:, :9] = np.round(X[:, :9] * 3)  # some coarse columns, like counts and one-hots
    X[rng.random(X.shape) < 0.05] = np.nan
    logit = np.nansum(X[:, :6] * rng.normal(size=6), axis=1) + np.nan_to_num(X[:, 6] * X[:, 7])
    y = (logit + rng.logistic(size=len(X)) > 0).astype(int)
    model = LGBMClassifier(random_state=seed, n_jobs=1, deterministic=True, verbose=-1,
                           **PARAMS).fit(X, y)
    rows = rng.normal(size=(1000, FEATURES))
    rows[:, :9] = np.round(rows[:, :9] * 3)
    rows[rng.random(rows.shape) < 0.05] = np.nan
    return model.booster_, rows


def medians(fns: dict[str, Any], rounds: int) -> dict[str, float]:
    """Median seconds per call, the contenders taking turns so drift hits both alike."""
    return {k: statistics.median(v) for k, v in interleaved(fns, rounds).items()}


def main() -> None:
    booster, rows = credit_risk_like()
    trees = lightgbm_trees(booster)
    builds = []
    for _ in range(5):
        t = time.perf_counter()
        explainer = TreeExplainer(trees, FEATURES)
        builds.append(time.perf_counter() - t)
    leaves = sum(m == "LEAF" for tree in trees for m in tree["mode"])
    # a peek inside: what the explainer holds per loaded model
    table_mb = sum(p.table.nbytes for p in explainer._parts if hasattr(p, "table")) / 2**20

    ours, theirs = explainer.shap_values(rows), booster.predict(rows, pred_contrib=True)
    parity = float(np.max(np.abs(ours - theirs[:, :-1])))
    assert parity < 1e-6, parity

    one = rows[:1]
    t1 = medians({"ours": lambda: explainer.shap_values(one),
                      "lightgbm": lambda: booster.predict(one, pred_contrib=True,
                                                          num_threads=1)}, 300)
    t2 = medians({"ours": lambda: explainer.shap_values(rows),
                      "lightgbm": lambda: booster.predict(rows, pred_contrib=True,
                                                          num_threads=1)}, 15)
    bare = TreeExplainer(trees, FEATURES, max_table_bytes=0)
    t3 = medians({"one": lambda: bare.shap_values(one),
                      "thousand": lambda: bare.shap_values(rows)}, 5)
    results = {
        "ensemble": {"trees": len(trees), "leaves": leaves, "features": FEATURES,
                     "max_depth": max(_depth(t["tree_structure"])
                                      for t in booster.dump_model()["tree_info"])},
        "S0_build_ms": round(statistics.median(builds) * 1e3, 1),
        "S0_table_mb": round(table_mb, 1),
        "S1_one_record_us": round(t1["ours"] * 1e6),
        "S1_lightgbm_us": round(t1["lightgbm"] * 1e6),
        "S1_speedup": round(t1["lightgbm"] / t1["ours"], 2),
        "S2_1000_records_ms": round(t2["ours"] * 1e3, 1),
        "S2_lightgbm_ms": round(t2["lightgbm"] * 1e3, 1),
        "S2_speedup": round(t2["lightgbm"] / t2["ours"], 2),
        "S3_no_table_one_record_us": round(t3["one"] * 1e6),
        "S3_no_table_1000_records_ms": round(t3["thousand"] * 1e3, 1),
        "parity_max_abs_diff": parity,
    }
    print(json.dumps(results, indent=2))
    print(f"\nS1: {results['S1_one_record_us']} us for one record "
          f"({results['S1_speedup']}x LightGBM pred_contrib, one thread)")
    print(f"S2: {results['S2_1000_records_ms']} ms for 1,000 records "
          f"({results['S2_speedup']}x LightGBM pred_contrib, one thread)")
    print(f"S3: without the table {results['S3_no_table_one_record_us']} us and "
          f"{results['S3_no_table_1000_records_ms']} ms")
    print(f"S0: {results['S0_build_ms']} ms to build, {results['S0_table_mb']} MB table")


def _depth(node: dict) -> int:
    if "split_feature" not in node:
        return 0
    return 1 + max(_depth(node["left_child"]), _depth(node["right_child"]))


if __name__ == "__main__":
    main()
