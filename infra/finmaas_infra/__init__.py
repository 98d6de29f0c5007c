"""The CDK app's constructs: one folder-level module per component, composed by
``stack.FinMaaSStack``."""

from .settings import StageSettings
from .stack import FinMaaSStack

__all__ = ["FinMaaSStack", "StageSettings"]
