"""A served model's explanations in the card's terms: exact contributions per input field
(one-hot columns folded back into their field) or per derived component, the base value
they add up from, and the reasons an applicant reads."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..cards import ModelCard
from .linear import LinearExplainer
from .treeshap import TreeExplainer

FEATURES_OUTPUT = "features"  # the graph output holding the estimator's input columns
TOP_REASONS = 4
# The served score is float32 in most graphs; the explainer's raw score is float64.
LINK_TOLERANCE = 1e-5


class ExplainerMismatch(ValueError):
    """The explainer data does not describe the served graph: never answer with it."""


def _sigmoid(raw: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-raw))


class ModelExplainer:
    """Exact attributions for one model version, loaded once with it (see
    ``runtime.open_version``)."""

    def __init__(self, card: ModelCard, data: dict[str, Any], *, lazy: bool = False) -> None:
        """``lazy`` defers building the engine (TreeSHAP's tables take ~0.2 s for a
        300-tree ensemble) to the first explanation, so a predict-only cold start does
        not pay for it; every explanation still checks that it reproduces the score."""
        spec = card.explanation
        if spec is None:
            raise ExplainerMismatch("the card has no explanation section")
        columns = data.get("columns")
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise ExplainerMismatch("explainer columns must be a list of names")
        method = data.get("method")
        if method != spec.method:
            raise ExplainerMismatch(f"explainer method {method!r} != card's {spec.method!r}")
        self._data: dict[str, Any] | None = data
        self._engine: TreeExplainer | LinearExplainer | None = None
        self._building = threading.Lock()
        self._columns = columns
        if not lazy:
            _ = self.engine
        if spec.attribution == "fields":
            order = [n for n in card.input_names if n in set(columns)]
        else:
            order = list(dict.fromkeys(columns))
        unknown = sorted(set(columns) - set(order))
        if unknown:
            raise ExplainerMismatch(f"explainer columns name no card field: {unknown}")
        missing = sorted(set(order) - set(spec.reasons))
        if missing:
            raise ExplainerMismatch(f"the card has no reason texts for {missing}")
        self.card = card
        self.spec = spec
        self.names: tuple[str, ...] = tuple(order)
        index = {n: k for k, n in enumerate(order)}
        self._fold = np.zeros((len(columns), len(order)))
        for c, name in enumerate(columns):
            self._fold[c, index[name]] = 1.0
        # a component's own value (volatility models) is its column in the features
        self._component_column = {n: columns.index(n) for n in order}
        self.link = "identity" if card.task == "regression" else "logistic"

    @property
    def engine(self) -> TreeExplainer | LinearExplainer:
        if self._engine is None:
            with self._building:  # the local server explains from several threads
                if self._engine is None:
                    self._build()
        assert self._engine is not None
        return self._engine

    def _build(self) -> None:
        data, columns = self._data or {}, self._columns
        try:
            if data.get("method") == "tree_path_dependent":
                engine: TreeExplainer | LinearExplainer = TreeExplainer(
                    data["trees"], len(columns), base_offset=float(data.get("base_offset", 0)))
            else:
                engine = LinearExplainer(data["coefficients"], data["intercept"],
                                         data["means"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ExplainerMismatch(f"explainer data is malformed: {exc}") from exc
        if engine.n_features != len(columns):
            raise ExplainerMismatch("explainer columns and model features differ in number")
        self._engine, self._data = engine, None  # the arrays now live in the engine

    @property
    def base_value(self) -> float:
        return float(self.engine.expected_value)

    @classmethod
    def from_bytes(cls, card: ModelCard, raw: bytes, *, lazy: bool = False
                   ) -> ModelExplainer:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ExplainerMismatch(f"explainer data is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ExplainerMismatch("explainer data must be a JSON object")
        return cls(card, data, lazy=lazy)

    def describe(self) -> dict[str, Any]:
        """What every explained record's numbers mean (stated once per response)."""
        return {"method": self.spec.method, "exact": True,
                "output_space": self.spec.output_space,
                "link": self.link, "attribution": self.spec.attribution,
                "base_value": self.base_value}

    def attributions(self, features: np.ndarray, served: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Contributions per name [rows, names] and raw scores [rows]; refuses to explain
        a score the explainer does not reproduce."""
        phi = self.engine.shap_values(np.asarray(features, dtype=np.float64))
        raw = self.base_value + phi.sum(axis=1)
        linked = _sigmoid(raw) if self.link == "logistic" else raw
        scale = 1.0 if self.link == "logistic" else max(1.0, float(np.max(np.abs(served))))
        gap = float(np.max(np.abs(linked - served))) if len(served) else 0.0
        if not gap <= LINK_TOLERANCE * scale:
            raise ExplainerMismatch(f"explainer reproduces the served score only within "
                                    f"{gap:.3g}")
        return phi @ self._fold, raw

    def records(self, instances: Sequence[dict[str, Any]], features: np.ndarray,
                contributions: np.ndarray, raw: np.ndarray) -> list[dict[str, Any]]:
        out = []
        names = self.names
        for i, row in enumerate(contributions.tolist()):
            by_name = dict(zip(names, row, strict=True))
            toward = sorted((k for k in range(len(names)) if row[k] > 0),
                            key=lambda k: -row[k])[:TOP_REASONS]
            reasons = []
            for k in toward:
                name = names[k]
                value = self._value_of(name, instances[i], features[i])
                text = self.spec.reasons[name][0].replace("{value}", _shown(value))
                reasons.append({"field": name, "value": value, "contribution": row[k],
                                "text": text})
            out.append({"raw_score": float(raw[i]), "contributions": by_name,
                        "reasons": reasons})
        return out

    def _value_of(self, name: str, record: dict[str, Any], features: np.ndarray) -> Any:
        if self.spec.attribution == "fields":
            return record.get(name)
        value = float(features[self._component_column[name]])
        return round(value, 6) if math.isfinite(value) else None


def _shown(value: Any) -> str:
    if value is None:
        return "none declared"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
