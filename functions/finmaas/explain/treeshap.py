"""Exact path-dependent TreeSHAP for a tree ensemble, in numpy alone.

This computes what LightGBM's ``predict(..., pred_contrib=True)`` and shap's
``TreeExplainer(feature_perturbation="tree_path_dependent")`` compute, but inside the Lambda
bundle, where only numpy and onnxruntime exist. The ensemble arrives as node arrays (the
served ONNX graph's TreeEnsemble node plus the training row counts per node).

How it stays exact and fast:

* Every root-to-leaf path is a small cooperative game. On a path, the repeated tests of
  one feature merge into one *player* with a zero fraction ``z`` (the share of training
  rows that took that feature's edges) and a one fraction ``o(x)`` (1 if ``x`` takes all
  of them, else 0). The path-dependent expectation ``E[f(x) | x_S]`` is the sum over paths
  of ``v * prod_{m in S} o_m * prod_{m not in S} z_m``, so the ensemble's Shapley values
  are the sum of each path game's Shapley values (GPUTreeShap's formulation).
* A path game's Shapley value for player ``j`` is
  ``v (o_j - z_j) * integral_0^1 prod_{m != j} (z_m (1 - t) + o_m t) dt``, because the
  Shapley weight ``s!(k-1-s)!/k!`` is the Beta integral of ``t^s (1-t)^(k-1-s)``. The
  integrand is a polynomial of degree ``k - 1``, so Gauss-Legendre quadrature with
  ``ceil(k/2)`` nodes integrates it exactly (up to float rounding, ~1e-15 relative).
* ``o`` is 0 or 1, so a path of ``k`` players has only ``2^k`` possible answers. They are
  computed once at construction into a lookup table; explaining a record then costs, per
  (path, player): two comparisons, one bit, one table read and one scatter-add. Paths too
  long for the table's memory budget are computed per record by the quadrature itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

__all__ = ["TreeExplainer"]

_REQUIRED = ("feature", "threshold", "mode", "true_child", "false_child", "missing_true",
             "value", "cover")
_LEAF, _LEQ, _LT = "LEAF", "BRANCH_LEQ", "BRANCH_LT"
# LightGBM counts are integers; weighted covers may carry float rounding from the export.
_COVER_RTOL = 1e-6
# Temporaries per chunk of records (the table read and the per-record quadrature).
_CHUNK_BYTES = 16 * 2**20
_TABLE_BYTES = 32 * 2**20


class _Tree(NamedTuple):
    """One validated tree: numpy arrays indexed by node id, node 0 the root."""

    feature: np.ndarray  # int64, -1 for a leaf
    threshold: np.ndarray  # float64
    strict: np.ndarray  # bool: BRANCH_LT
    true_child: np.ndarray  # int64, -1 for a leaf
    false_child: np.ndarray  # int64, -1 for a leaf
    missing_true: np.ndarray  # bool
    value: np.ndarray  # float64
    cover: np.ndarray  # float64
    depth: int  # edges on the longest root-to-leaf path


class _Path(NamedTuple):
    """A root-to-leaf path with its repeated features merged into players."""

    value: float
    features: tuple[int, ...]
    zero: tuple[float, ...]  # share of the parent's cover on the feature's edges, multiplied
    lo: tuple[float, ...]  # the feature's edges accept exactly lo <= x <= hi ...
    hi: tuple[float, ...]
    nan_ok: tuple[bool, ...]  # ... and NaN when every edge sends NaN this way


def _integral_array(tree: Mapping[str, Sequence], key: str, where: str) -> np.ndarray:
    """Integer-valued entries as int64 (an export may hand over 3.0 for node id 3)."""
    try:
        raw = np.asarray(tree[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: '{key}' must hold integers") from None
    if raw.ndim != 1 or not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
        raise ValueError(f"{where}: '{key}' must hold integers")
    return raw.astype(np.int64)


def _float_array(tree: Mapping[str, Sequence], key: str, where: str) -> np.ndarray:
    try:
        arr = np.asarray(tree[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: '{key}' must hold numbers") from None
    if arr.ndim != 1:
        raise ValueError(f"{where}: '{key}' must be a flat list")
    return arr


def _parse_tree(index: int, tree: Mapping[str, Sequence], n_features: int) -> _Tree:
    """Check one tree's node arrays; a malformed export fails here, not inside a request."""
    where = f"tree {index}"
    if not isinstance(tree, Mapping):
        raise ValueError(f"{where}: expected a mapping of node arrays, got {type(tree).__name__}")
    missing = [k for k in _REQUIRED if k not in tree]
    if missing:
        raise ValueError(f"{where}: missing node arrays {missing}")
    lengths = {k: len(tree[k]) for k in _REQUIRED}
    n = lengths["feature"]
    if n == 0:
        raise ValueError(f"{where}: has no nodes")
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{where}: node arrays differ in length {lengths}")

    feature = _integral_array(tree, "feature", where)
    true_child = _integral_array(tree, "true_child", where)
    false_child = _integral_array(tree, "false_child", where)
    threshold = _float_array(tree, "threshold", where)
    value = _float_array(tree, "value", where)
    cover = _float_array(tree, "cover", where)
    # ONNX attributes hold modes as bytes (b"BRANCH_LEQ"); accept them as the export reads them
    mode = [m.decode() if isinstance(m, bytes) else str(m) for m in tree["mode"]]
    missing_true = np.asarray(tree["missing_true"])
    if missing_true.ndim != 1 or missing_true.dtype.kind not in "biu" \
            or np.any((missing_true != 0) & (missing_true != 1)):
        raise ValueError(f"{where}: 'missing_true' must hold booleans (or 0 and 1)")
    missing_true = missing_true.astype(bool)

    unknown = sorted({m for m in mode if m not in (_LEAF, _LEQ, _LT)})
    if unknown:
        raise ValueError(f"{where}: unknown mode {unknown}; expected {_LEQ}, {_LT} or {_LEAF}")
    leaf = np.asarray([m == _LEAF for m in mode])
    branch = ~leaf

    def first(bad: np.ndarray) -> int:
        return int(np.argmax(bad))

    bad = leaf & ((feature != -1) | (true_child != -1) | (false_child != -1))
    if bad.any():
        raise ValueError(f"{where}: leaf node {first(bad)} must have feature and children -1")
    bad = branch & ((feature < 0) | (feature >= n_features))
    if bad.any():
        node = first(bad)
        raise ValueError(f"{where}: node {node} tests feature {feature[node]}, outside "
                         f"0..{n_features - 1}")
    for child in (true_child, false_child):
        bad = branch & ((child < 1) | (child >= n))
        if bad.any():
            node = first(bad)
            raise ValueError(f"{where}: node {node} has child {child[node]}, outside "
                             f"1..{n - 1}")
    bad = branch & (true_child == false_child)
    if bad.any():
        raise ValueError(f"{where}: node {first(bad)} has the same true and false child")
    if np.any(np.isnan(threshold[branch])):
        # +-inf is fine: LightGBM splits "missing or not" at +inf (dumped as 1e300, which
        # an export's float32 rounds back to inf)
        raise ValueError(f"{where}: branch thresholds must be numbers, not NaN")
    if not np.all(np.isfinite(value[leaf])):
        raise ValueError(f"{where}: leaf values must be finite")
    if not np.all(np.isfinite(cover) & (cover > 0)):
        raise ValueError(f"{where}: every node's cover must be a finite number > 0")

    children = np.concatenate([true_child[branch], false_child[branch]])
    counts = np.bincount(children, minlength=n)
    if np.any(counts > 1):
        raise ValueError(f"{where}: node {first(counts > 1)} has more than one parent")
    # Every node but the root has exactly one parent; walking from the root then reaches
    # every node exactly when there is no cycle hanging off on its own.
    depth = [-1] * n
    depth[0] = 0
    stack = [0]
    tc, fc, is_branch = true_child.tolist(), false_child.tolist(), branch.tolist()
    while stack:
        node = stack.pop()
        if is_branch[node]:
            depth[tc[node]] = depth[fc[node]] = depth[node] + 1
            stack += (tc[node], fc[node])
    if min(depth) < 0:
        raise ValueError(f"{where}: node {depth.index(-1)} is not reachable from the root")

    sums = cover[true_child[branch]] + cover[false_child[branch]]
    bad = np.abs(cover[branch] - sums) > _COVER_RTOL * cover[branch]
    if np.any(bad):
        node = int(np.flatnonzero(branch)[first(bad)])
        raise ValueError(f"{where}: node {node} has cover {cover[node]:g} but its children "
                         f"{cover[true_child[node]] + cover[false_child[node]]:g}")

    return _Tree(feature, threshold, np.asarray([m == _LT for m in mode]), true_child,
                 false_child, missing_true, value, cover, max(depth))


def _paths(tree: _Tree) -> list[_Path]:
    """Every root-to-leaf path, each feature's edges merged into one interval and share.

    A strict bound becomes a closed one on the neighbouring float (``x > t`` is
    ``x >= nextafter(t, +inf)`` for every float64 ``x``), so one ``lo <= x <= hi`` test
    covers both modes. ``x > +inf`` and ``x < -inf`` hold for no number: the interval
    becomes empty (lo = +inf > hi = -inf), which later edges cannot reopen.
    """
    out: list[_Path] = []
    # Python lists: the walk reads single nodes, which numpy scalars make ~5x slower.
    feature, threshold, strict = (a.tolist() for a in (tree.feature, tree.threshold,
                                                       tree.strict))
    true_child, false_child, missing_true = (a.tolist() for a in (
        tree.true_child, tree.false_child, tree.missing_true))
    value, cover = tree.value.tolist(), tree.cover.tolist()
    # players: feature -> (zero, lo, hi, nan_ok)
    stack: list[tuple[int, dict[int, tuple[float, float, float, bool]]]] = [(0, {})]
    while stack:
        node, players = stack.pop()
        f = feature[node]
        if f < 0:
            feats = tuple(players)
            cols = list(zip(*(players[k] for k in feats), strict=True)) or [(), (), (), ()]
            out.append(_Path(value[node], feats, *map(tuple, cols)))
            continue
        t, lt = threshold[node], strict[node]
        tc, fc = true_child[node], false_child[node]
        total = cover[tc] + cover[fc]
        zero, lo, hi, nan_ok = players.get(f, (1.0, -math.inf, math.inf, True))
        nan_true = missing_true[node]
        if lt and t == -math.inf:
            true_lo, true_hi = math.inf, -math.inf
        else:
            true_lo, true_hi = lo, min(hi, math.nextafter(t, -math.inf) if lt else t)
        if not lt and t == math.inf:
            false_lo, false_hi = math.inf, -math.inf
        else:
            false_lo, false_hi = max(lo, t if lt else math.nextafter(t, math.inf)), hi
        stack.append((fc, {**players, f: (zero * cover[fc] / total, false_lo, false_hi,
                                          nan_ok and not nan_true)}))
        stack.append((tc, {**players, f: (zero * cover[tc] / total, true_lo, true_hi,
                                          nan_ok and nan_true)}))
    return out


@lru_cache(maxsize=64)
def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights on [0, 1], exact for polynomials of degree <= 2n - 1."""
    x, w = np.polynomial.legendre.leggauss(n)
    return (x + 1.0) / 2.0, w / 2.0


def _path_shapley(z: np.ndarray, o: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Shapley values of path games with k players (last axis), all broadcast together.

    ``phi_j = v (o_j - z_j) * integral_0^1 prod_{m != j} (z_m (1 - t) + o_m t) dt``. The
    product of the others is the full product divided by player j's own factor, which is
    at least ``z_j (1 - t) > 0`` at every (interior) quadrature node, so it never divides by 0.
    """
    k = z.shape[-1]
    t, w = _gauss_legendre(max(1, (k + 1) // 2))
    factor = z[..., None] * (1.0 - t) + o[..., None] * t  # [..., k, q]
    others = np.prod(factor, axis=-2, keepdims=True) / factor
    return v[..., None] * (o - z) * (others @ w)


@dataclass(frozen=True)
class _Players:
    """Paths' players flattened path by path: the per-record test of each one."""

    feature: np.ndarray  # int64
    lo: np.ndarray
    hi: np.ndarray
    nan_ok: np.ndarray

    def one(self, X: np.ndarray, has_nan: bool) -> np.ndarray:
        """o: does each record take all of this player's edges on its path?"""
        x = np.take(X, self.feature, axis=1)
        o = (x >= self.lo) & (x <= self.hi)
        if has_nan:
            o |= np.isnan(x) & self.nan_ok
        return o


def _players(paths: Sequence[_Path], shape: tuple[int, ...]) -> _Players:
    def column(name: str, dtype: type) -> np.ndarray:
        flat = [x for p in paths for x in getattr(p, name)]
        return np.asarray(flat, dtype=dtype).reshape(shape)

    return _Players(column("features", np.int64), column("lo", np.float64),
                    column("hi", np.float64), column("nan_ok", np.bool_))


class _TablePaths:
    """Paths whose every answer (2^k players' patterns) is precomputed.

    Table layout: per path, ``2^k`` rows (the pattern: bit j set when player j's ``o`` is
    1) of ``k`` contributions, so one record's reads on one path share a cache line. The
    paths come sorted by player count, so each count's rows form one block to fill.
    """

    def __init__(self, paths: Sequence[_Path]) -> None:
        k = np.asarray([len(p.features) for p in paths], dtype=np.int64)
        self.k = k
        self.size = int(np.sum(k << k))
        self.players = _players(paths, (int(k.sum()),))
        self.starts = np.concatenate([[0], np.cumsum(k)[:-1]]).astype(np.int64)
        self.offset = np.concatenate([[0], np.cumsum(k << k)[:-1]]).astype(np.int64)
        self.bit = np.concatenate([1 << np.arange(n, dtype=np.int64) for n in k])
        self.slot = np.concatenate([np.arange(n, dtype=np.int64) for n in k])
        self.table = np.empty(self.size, dtype=np.float64)
        for n in np.unique(k):
            self._fill(paths, np.flatnonzero(k == n), int(n))

    def _fill(self, paths: Sequence[_Path], which: np.ndarray, k: int) -> None:
        z = np.asarray([paths[i].zero for i in which], dtype=np.float64)
        v = np.asarray([paths[i].value for i in which], dtype=np.float64)
        patterns = 1 << k
        codes = np.arange(patterns, dtype=np.int64)
        o = ((codes[:, None] >> np.arange(k)) & 1).astype(np.float64)  # [2^k, k]
        rows = self.table[self.offset[which[0]]: self.offset[which[-1]] + (k << k)]
        rows = rows.reshape(len(which), patterns, k)
        q = (k + 1) // 2
        block = max(1, _CHUNK_BYTES // (24 * k * q))  # (path, pattern) pairs per block
        code_step = min(patterns, block)
        path_step = max(1, block // code_step)
        for p0 in range(0, len(which), path_step):
            p1 = min(p0 + path_step, len(which))
            for c0 in range(0, patterns, code_step):
                c1 = min(c0 + code_step, patterns)
                rows[p0:p1, c0:c1] = _path_shapley(z[p0:p1, None, :], o[None, c0:c1],
                                                   v[p0:p1, None])

    def row_bytes(self) -> int:
        return 64 * len(self.slot)

    def add(self, X: np.ndarray, has_nan: bool, phi: np.ndarray) -> None:
        o = self.players.one(X, has_nan)
        code = np.add.reduceat(o * self.bit, self.starts, axis=1)
        at = np.repeat(code * self.k + self.offset, self.k, axis=1)
        at += self.slot
        _scatter(self.table[at], self.players.feature, phi)


class _DirectPaths:
    """Paths of k players beyond the table's budget: quadrature per record."""

    def __init__(self, paths: Sequence[_Path]) -> None:
        self.k = len(paths[0].features)
        self.players = _players(paths, (len(paths), self.k))
        self.zero = np.asarray([p.zero for p in paths], dtype=np.float64)
        self.value = np.asarray([p.value for p in paths], dtype=np.float64)

    def row_bytes(self) -> int:
        return 32 * self.zero.size * ((self.k + 1) // 2 + 1)

    def add(self, X: np.ndarray, has_nan: bool, phi: np.ndarray) -> None:
        o = self.players.one(X, has_nan).astype(np.float64)
        contribution = _path_shapley(self.zero, o, self.value)
        _scatter(contribution.reshape(len(X), -1), self.players.feature.ravel(), phi)


def _scatter(contribution: np.ndarray, feature: np.ndarray, phi: np.ndarray) -> None:
    """phi[r, f] += the sum of row r's contributions to players testing feature f."""
    n, width = phi.shape
    at = feature + width * np.arange(n, dtype=np.int64)[:, None]
    phi += np.bincount(at.ravel(), weights=contribution.ravel(),
                       minlength=n * width).reshape(n, width)


def _cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.empty(0, dtype)


class _Routing:
    """All trees' nodes in flat arrays for a level-by-level walk of every record."""

    def __init__(self, trees: Sequence[_Tree]) -> None:
        sizes = [len(t.feature) for t in trees]
        base = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.roots = base
        self.depth = max((t.depth for t in trees), default=0)
        feature, true_max, missing_true, true_to, false_to, value = [], [], [], [], [], []
        for b, t in zip(base, trees, strict=True):
            ids = b + np.arange(len(t.feature), dtype=np.int64)
            leaf = t.feature < 0
            feature.append(np.where(leaf, 0, t.feature))
            # x < t is x <= the float below t, so one comparison serves both modes; x < -inf
            # holds for no number, and x <= NaN is false for every one
            below = np.where(t.threshold == -np.inf, np.nan,
                             np.nextafter(t.threshold, -np.inf))
            true_max.append(np.where(t.strict, below, t.threshold))
            missing_true.append(t.missing_true)
            true_to.append(np.where(leaf, ids, b + t.true_child))  # a leaf stays put
            false_to.append(np.where(leaf, ids, b + t.false_child))
            value.append(np.where(leaf, t.value, 0.0))
        self.feature = _cat(feature, np.int64)
        self.true_max = _cat(true_max, np.float64)
        self.missing_true = _cat(missing_true, np.bool_)
        self.true_to = _cat(true_to, np.int64)
        self.false_to = _cat(false_to, np.int64)
        self.value = _cat(value, np.float64)

    def leaf_values(self, X: np.ndarray) -> np.ndarray:
        """Sum over trees of the reached leaf's value, per record."""
        node = np.broadcast_to(self.roots, (len(X), len(self.roots)))
        has_nan = bool(np.isnan(X).any())
        for _ in range(self.depth):
            x = np.take_along_axis(X, self.feature[node], axis=1)
            go_true = x <= self.true_max[node]
            if has_nan:
                go_true = np.where(np.isnan(x), self.missing_true[node], go_true)
            node = np.where(go_true, self.true_to[node], self.false_to[node])
        return self.value[node].sum(axis=1)


class TreeExplainer:
    """Per-feature contributions (SHAP values) to a tree ensemble's raw score.

    The trees are node arrays (see the module docstring of ``finmaas.explain``); they are
    checked here, and everything that does not depend on the records is precomputed, so
    one explainer is built per loaded model and reused across requests.

    ``max_table_bytes`` caps the lookup table of precomputed path answers; paths beyond it
    are computed per record (exact too, several times slower). 0 disables the table.
    """

    def __init__(self, trees: Sequence[Mapping[str, Sequence]], n_features: int, *,
                 base_offset: float = 0.0, max_table_bytes: int = _TABLE_BYTES) -> None:
        if isinstance(n_features, bool) or not isinstance(n_features, int | np.integer) \
                or n_features < 1:
            raise ValueError(f"n_features must be a positive integer, got {n_features!r}")
        if not math.isfinite(base_offset):
            raise ValueError(f"base_offset must be finite, got {base_offset!r}")
        if isinstance(trees, Mapping | str | bytes):
            raise ValueError("trees must be a sequence of trees, each a mapping of node arrays")
        self._n_features = int(n_features)
        parsed = [_parse_tree(i, t, self._n_features) for i, t in enumerate(trees)]
        self._routing = _Routing(parsed)
        self._base_offset = float(base_offset)

        paths = [p for t in parsed for p in _paths(t)]
        self._expected = self._base_offset + math.fsum(p.value * math.prod(p.zero)
                                                       for p in paths)
        # Short paths first into the table: they are most of the reads and the cheapest rows.
        paths = sorted((p for p in paths if p.features), key=lambda p: len(p.features))
        budget, cut = max_table_bytes // 8, 0
        while cut < len(paths) and budget >= (k := len(paths[cut].features)) << k:
            budget -= k << k
            cut += 1
        self._parts: list[_TablePaths | _DirectPaths] = []
        if cut:
            self._parts.append(_TablePaths(paths[:cut]))
        rest = paths[cut:]
        for k in sorted({len(p.features) for p in rest}):
            self._parts.append(_DirectPaths([p for p in rest if len(p.features) == k]))
        self._rows_per_chunk = max(1, _CHUNK_BYTES // max(1, sum(p.row_bytes()
                                                                 for p in self._parts)))

    @property
    def expected_value(self) -> float:
        """E[f] when each branch splits rows as its training covers did, plus base_offset:
        the score a record gets before any of its features is known."""
        return self._expected

    @property
    def n_features(self) -> int:
        return self._n_features

    def _records(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self._n_features:
            raise ValueError(f"X must have shape [N, {self._n_features}], got {X.shape}")
        return X

    def predict_raw(self, X: np.ndarray) -> np.ndarray:
        """[N] raw scores (sum of reached leaves plus base_offset), by walking the trees:
        an independent check on the Shapley values' additivity."""
        X = self._records(X)
        out = np.empty(len(X), dtype=np.float64)
        step = max(1, _CHUNK_BYTES // (48 * max(1, len(self._routing.roots))))
        for r0 in range(0, len(X), step):
            out[r0:r0 + step] = self._routing.leaf_values(X[r0:r0 + step])
        return out + self._base_offset

    def shap_values(self, X: np.ndarray) -> np.ndarray:
        """[N, n_features] contributions; ``expected_value + row sum == predict_raw(X)``.

        NaN follows each branch's missing routing; records are processed in chunks so the
        temporaries stay near 16 MB whatever N.
        """
        X = self._records(X)
        phi = np.zeros((len(X), self._n_features), dtype=np.float64)
        step = self._rows_per_chunk
        for r0 in range(0, len(X), step):
            chunk, out = X[r0:r0 + step], phi[r0:r0 + step]
            has_nan = bool(np.isnan(chunk).any())
            for part in self._parts:
                part.add(chunk, has_nan, out)
        return phi
