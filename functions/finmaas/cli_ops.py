"""CLI commands beyond models: serve, invoke (filled in by later modules)."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    return None
