"""``maas serve`` as a user runs it (gateway, key checks, SQLite metering, access log),
for a tenant whose plan's rate limit is raised above the benchmark's load: the limiter
still runs on every request, it only never refuses one. Prints the tenant's key first."""

from __future__ import annotations

import dataclasses
import os
import sys

from finmaas import plans
from finmaas.cli import main

TENANT, PLAN = "bench", "enterprise"

if __name__ == "__main__":
    unlimited = {name: dataclasses.replace(p, rate_limit_rps=1e9, burst=10**9)
                 if name == PLAN else p for name, p in plans.load_plans().items()}
    plans.load_plans = lambda path=plans.PLANS_FILE: unlimited
    from finmaas.config import Settings
    from finmaas.keys import LocalKeyIssuer
    from finmaas.tenants import open_tenant_store

    store = open_tenant_store(Settings.from_env())
    store.ensure_tenant(TENANT, PLAN)
    key = LocalKeyIssuer(store).create(TENANT).secret
    with open(os.environ["PEER_KEY_FILE"], "w") as f:
        f.write(key)
    sys.exit(main(["serve", "--port", os.environ["PEER_PORT"]]))
