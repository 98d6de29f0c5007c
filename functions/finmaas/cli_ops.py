"""Moved: the CLI's commands live in the ``finmaas.cli`` package, one module per noun.
This alias only keeps ``tests/test_events.py``'s import working; delete it once that
test imports ``finmaas.cli.invoke``."""

from __future__ import annotations

from .cli.invoke import load_function

__all__ = ["load_function"]
