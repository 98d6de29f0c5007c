"""Explanations: how much each input moved one prediction of a served model.

``ModelExplainer`` (``attribution``) answers in the card's terms: contributions per field
or component, the base value, reasons. Underneath, ``LinearExplainer`` (``linear``) is
exact linear SHAP against the training means, and ``TreeExplainer`` computes exact
path-dependent SHAP values (what LightGBM's ``pred_contrib`` computes) with numpy alone,
so it runs inside the Lambda bundle. It takes
the ensemble as node arrays, one mapping per tree, every list indexed by node id (node 0
the root):

``feature``
    the feature column a branch tests; -1 for a leaf
``threshold``
    a branch's threshold (+-inf allowed, NaN not)
``mode``
    ``"BRANCH_LEQ"`` (the true child takes ``x <= threshold``), ``"BRANCH_LT"``
    (``x < threshold``) or ``"LEAF"``
``true_child``, ``false_child``
    child node ids; -1 for a leaf
``missing_true``
    a NaN goes to the true child (else to the false child)
``value``
    a leaf's raw output; the raw score is the sum over trees plus ``base_offset``
``cover``
    training rows (or weight) that reached the node, > 0; a branch's equals its children's
"""

from finmaas.explain.attribution import ExplainerMismatch, ModelExplainer
from finmaas.explain.linear import LinearExplainer
from finmaas.explain.treeshap import TreeExplainer

__all__ = ["ExplainerMismatch", "LinearExplainer", "ModelExplainer", "TreeExplainer"]
