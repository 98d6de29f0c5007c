"""Recipes that build the bundled models from public data.

Each module exposes ``NAME``, ``DATASET``, ``load()``, ``prepare(df)`` and
``build(df=None, seed=SEED) -> BuiltModel``; ``build_into(store, names)`` writes them in
the bucket layout. Run them with ``maas models build [NAME]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType

from . import credit_risk, loan_default, market_volatility, mortgage_approval, text_embedding
from .common import BuiltModel, RecipeDataError, write_model

RECIPES: dict[str, ModuleType] = {
    m.NAME: m for m in (credit_risk, loan_default, mortgage_approval, market_volatility,
                        text_embedding)
}

__all__ = ["RECIPES", "BuiltModel", "RecipeDataError", "build_into"]


def build_into(
    store: Path,
    names: Iterable[str] | None = None,
    progress: Callable[[str], None] = lambda _msg: None,
) -> list[BuiltModel]:
    chosen = list(names) if names else list(RECIPES)
    unknown = [n for n in chosen if n not in RECIPES]
    if unknown:
        raise KeyError(f"no recipe named {', '.join(unknown)}; known: {', '.join(RECIPES)}")
    built = []
    for i, name in enumerate(chosen, 1):
        progress(f"[{i}/{len(chosen)}] {name}: loading {'/'.join(RECIPES[name].DATASET)}, "
                 "training, converting to ONNX, checking parity")
        model = RECIPES[name].build()
        write_model(store, model)
        progress(f"[{i}/{len(chosen)}] {name}: written to {store / name / model.version}")
        built.append(model)
    return built
