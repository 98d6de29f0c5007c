"""Rollouts: an alias that splits traffic between versions by weight (a canary) and may
name a shadow version that sees a copy of the traffic, is never returned and never
billed, and whose agreement with what was served is measured.

In ``<name>/aliases.json`` an alias is either a version (``"production": "1"``) or a
route::

    "production": {"versions": {"1": 90, "2": 10}, "stable": "1", "shadow": "3"}

Weights are percentages (up to two decimals) that sum to 100. ``stable`` is the version
a rollback returns to and a caller without a request key (the card route) sees; without
it, the version with the most traffic. Which version serves a
request is a pure function of the tenant and the usage record id (request id or
Idempotency-Key), so a retry lands where the first attempt did; and a replay of a
recorded request is answered by the version recorded, even after the weights changed.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from .cards import VERSION_RE

BASIS = 10_000  # weights in basis points: 0.01% steps


class RouteError(ValueError):
    """An alias value that is neither a version nor a valid route."""


def bucket(key: str) -> int:
    """A stable position in [0, BASIS) for an assignment key."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % BASIS


@dataclass(frozen=True)
class AliasRoute:
    weights: tuple[tuple[str, int], ...]  # (version, basis points), summing to BASIS
    shadow: str | None = None
    stable: str | None = None  # what a rollback returns to, while a canary runs

    @classmethod
    def parse(cls, value: Any) -> AliasRoute:
        if isinstance(value, str):
            if not VERSION_RE.match(value):
                raise RouteError(f"{value!r} is not a version")
            return cls(((value, BASIS),))
        if not isinstance(value, dict) or not isinstance(value.get("versions"), dict):
            raise RouteError('a route is {"versions": {"<version>": <percent>, ...}}')
        unknown = sorted(set(value) - {"versions", "shadow", "stable"})
        if unknown:
            raise RouteError(f"unknown route keys {unknown}")
        weights = []
        for version, percent in value["versions"].items():
            if not isinstance(version, str) or not VERSION_RE.match(version):
                raise RouteError(f"{version!r} is not a version")
            if isinstance(percent, bool) or not isinstance(percent, int | float):
                raise RouteError(f"weight {percent!r} of {version} must be a number")
            try:
                points = Decimal(str(percent)) * 100
            except InvalidOperation:
                raise RouteError(f"weight {percent!r} is not a number") from None
            if not points.is_finite() or points != points.to_integral_value() \
                    or not 0 < points <= BASIS:
                raise RouteError(f"weight {percent!r} of {version} must be a percentage "
                                 "above 0 with at most two decimals")
            weights.append((version, int(points)))
        if not weights or sum(w for _, w in weights) != BASIS:
            raise RouteError("the weights of a route must sum to 100")
        shadow = value.get("shadow")
        if shadow is not None and (not isinstance(shadow, str) or not VERSION_RE.match(shadow)):
            raise RouteError(f"shadow {shadow!r} is not a version")
        if shadow is not None and shadow in dict(weights):
            raise RouteError(f"shadow {shadow} also serves traffic")
        stable = value.get("stable")
        if stable is not None and stable not in dict(weights):
            raise RouteError(f"stable {stable!r} is not one of the route's versions")
        return cls(tuple(sorted(weights, key=lambda vw: (len(vw[0]), vw[0]))), shadow,
                   stable if len(weights) > 1 else None)

    @property
    def primary(self) -> str:
        """The stable version of a canary (or, unnamed, the one with the most traffic)."""
        if self.stable is not None:
            return self.stable
        return max(self.weights, key=lambda vw: vw[1])[0]

    def pick(self, key: str | None) -> str:
        """The version that serves an assignment key (the primary when there is none)."""
        if key is None or len(self.weights) == 1:
            return self.primary
        position = bucket(key)
        for version, points in self.weights:
            if position < points:
                return version
            position -= points
        return self.weights[-1][0]  # pragma: no cover - weights sum to BASIS

    def to_json(self) -> Any:
        if len(self.weights) == 1 and self.shadow is None:
            return self.weights[0][0]
        doc: dict[str, Any] = {"versions": {v: _percent(w) for v, w in self.weights}}
        if len(self.weights) > 1:
            doc["stable"] = self.primary
        if self.shadow is not None:
            doc["shadow"] = self.shadow
        return doc


def _percent(points: int) -> int | float:
    return points // 100 if points % 100 == 0 else points / 100


# -- changing a route (the CLI's rollout, promote, rollback, shadow) ---------------------
def with_canary(route: AliasRoute, version: str, percent: float) -> AliasRoute:
    """``version`` takes ``percent`` of the traffic, the stable version the rest (a
    canary ramps up by running this again with a larger percent)."""
    points = Decimal(str(percent)) * 100
    if not points.is_finite() or points != points.to_integral_value() \
            or not 0 < points < BASIS:
        raise RouteError("--percent must be above 0 and below 100, two decimals at most "
                         "(send all the traffic with promote)")
    stable = route.primary
    if version == stable:
        raise RouteError(f"{version} is the stable version; roll out another one")
    shadow = None if route.shadow == version else route.shadow
    return AliasRoute.parse({"versions": {stable: (BASIS - int(points)) / 100,
                                          version: int(points) / 100},
                             "stable": stable, **({"shadow": shadow} if shadow else {})})


def promoted(route: AliasRoute, version: str | None = None) -> AliasRoute:
    """All traffic to the canary (or ``version``): the rollout ends, the shadow stays."""
    canaries = [v for v, _ in route.weights if v != route.primary]
    target = version or (canaries[0] if len(canaries) == 1 else None)
    if target is None:
        raise RouteError("no canary to promote: name the version (--version)")
    return AliasRoute(((target, BASIS),), route.shadow if route.shadow != target else None)


def rolled_back(route: AliasRoute) -> AliasRoute:
    """All traffic back to the stable version."""
    if len(route.weights) == 1:
        raise RouteError(f"no rollout to roll back: all traffic already goes to "
                         f"{route.primary} (promote --version V to go back to another)")
    return AliasRoute(((route.primary, BASIS),), route.shadow)


def with_shadow(route: AliasRoute, version: str | None) -> AliasRoute:
    if version is not None and version in dict(route.weights):
        raise RouteError(f"{version} serves traffic; a shadow must not")
    return AliasRoute(route.weights, version)


# -- how a shadow agrees with what was served --------------------------------------------
@dataclass
class Agreement:
    requests: int = 0
    rows: int = 0
    abs_diff_sum: float = 0.0
    flips: int = 0
    decided_rows: int = 0  # rows with a decision to flip (classifiers, zero-shot labels)
    failures: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "rows": self.rows, "failures": self.failures,
                "mean_abs_diff": self.abs_diff_sum / self.rows if self.rows else None,
                "flip_rate": self.flips / self.decided_rows if self.decided_rows else None}


@dataclass
class ShadowStats:
    """Agreement of each shadow version with the versions it shadowed, in this process
    (the CloudWatch metrics ``ShadowAbsDiff`` and ``ShadowFlips`` add up all of them)."""

    _by_key: dict[tuple[str, str, str], Agreement] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, model: str, served: str, shadow: str, *, rows: int = 0,
            abs_diff_sum: float = 0.0, flips: int | None = None,
            failed: bool = False) -> None:
        """``flips`` is None where the model has no decision (a regression, an embedding)."""
        with self._lock:
            agreement = self._by_key.setdefault((model, served, shadow), Agreement())
            agreement.requests += 1
            agreement.failures += int(failed)
            agreement.rows += rows
            agreement.abs_diff_sum += abs_diff_sum
            if flips is not None:
                agreement.flips += flips
                agreement.decided_rows += rows

    def of(self, model: str) -> list[dict[str, Any]]:
        with self._lock:
            return [{"shadow": sh, "served": served, **a.as_dict()}
                    for (m, served, sh), a in sorted(self._by_key.items()) if m == model]
