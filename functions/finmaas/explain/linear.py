"""Exact SHAP values of a linear score: ``coef * (x - mean)`` per column, against the
training means (the baseline stored with the version)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class LinearExplainer:
    def __init__(self, coefficients: Sequence[float], intercept: float,
                 means: Sequence[float]) -> None:
        self.coefficients = np.asarray(coefficients, dtype=np.float64)
        self.means = np.asarray(means, dtype=np.float64)
        if self.coefficients.shape != self.means.shape or self.coefficients.ndim != 1:
            raise ValueError("coefficients and means must be vectors of the same length")
        if not (np.isfinite(self.coefficients).all() and np.isfinite(self.means).all()):
            raise ValueError("coefficients and means must be finite")
        self.intercept = float(intercept)
        self.n_features = len(self.coefficients)

    @property
    def expected_value(self) -> float:
        return float(self.coefficients @ self.means) + self.intercept

    def predict_raw(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) @ self.coefficients + self.intercept

    def shap_values(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, dtype=np.float64) - self.means) * self.coefficients
