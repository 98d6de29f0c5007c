"""Plans are defined once, in ``plans.json``: the CDK app turns them into API Gateway
usage plans (throttle, quota) and billing reads them for included units and discounts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path

PLANS_FILE = Path(__file__).with_name("plans.json")


@dataclass(frozen=True)
class Plan:
    name: str
    description: str
    rate_limit_rps: float
    burst: int
    quota_limit: int | None  # API Gateway quota: requests per month (None: unlimited)
    included_units: int  # predictions a month at no charge
    discount_percent: Decimal

    def as_dict(self) -> dict:
        return {"name": self.name, "description": self.description,
                "rate_limit_rps": self.rate_limit_rps, "burst": self.burst,
                "monthly_request_quota": self.quota_limit,
                "included_units": self.included_units,
                "discount_percent": str(self.discount_percent)}


@cache
def load_plans(path: Path = PLANS_FILE) -> dict[str, Plan]:
    doc = json.loads(path.read_text())
    plans = {}
    for name, p in doc["plans"].items():
        quota = p.get("quota")
        if quota is not None and quota.get("period") != "MONTH":
            raise ValueError(f"plan {name}: only monthly quotas are supported")
        discount = Decimal(p["discount_percent"])
        if not 0 <= discount < 100:
            raise ValueError(f"plan {name}: discount_percent must be in [0, 100)")
        plans[name] = Plan(
            name=name,
            description=p["description"],
            rate_limit_rps=float(p["rate_limit_rps"]),
            burst=int(p["burst"]),
            quota_limit=int(quota["limit"]) if quota else None,
            included_units=int(p["included_units"]),
            discount_percent=discount,
        )
    return plans


def get_plan(name: str) -> Plan:
    plans = load_plans()
    if name not in plans:
        raise ValueError(f"unknown plan {name!r}; plans: {', '.join(plans)}")
    return plans[name]
