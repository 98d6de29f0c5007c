"""Lambda SnapStart's hooks, in-process: before the snapshot every production model is
open and exercised (nothing billed); after a restore, random state, AWS clients and the
tenant cache are the environment's own."""

from __future__ import annotations

import random
import sys
import types

import boto3
import pytest
from finmaas import snapstart
from moto import mock_aws

from tests.conftest import ALL_MODELS, billed_units, make_tenant


def test_before_the_snapshot_every_production_model_is_open_and_exercised(services,
                                                                         monkeypatch):
    from finmaas.api import LambdaApp, openapi

    make_tenant(services)
    app = LambdaApp(services)  # what the function registers
    builds = []
    real = openapi.build_document
    monkeypatch.setattr(openapi, "build_document",
                        lambda *a, **k: builds.append(1) or real(*a, **k))
    assert not app.built
    warmed = snapstart.warm(services, app)
    assert app.built  # FastAPI's application is imported and built into the snapshot
    assert builds == [1]  # and the OpenAPI document
    assert sorted(w.split(" v")[0] for w in warmed) == sorted(ALL_MODELS)
    for name in ALL_MODELS:
        model = services.registry.model(name, "1")
        if model.explainer is not None:  # the TreeSHAP tables are in the snapshot too
            assert model.explainer._engine is not None, name
    app.openapi()
    assert builds == [1]  # and not again for the first request
    assert billed_units(services) == 0


def test_a_version_that_fails_to_open_does_not_stop_the_others(services, monkeypatch):
    real = services.registry.model

    def model(name, version):
        if name == "credit-risk":
            raise RuntimeError("damaged")
        return real(name, version)

    monkeypatch.setattr(services.registry, "model", model)
    warmed = snapstart.warm(services)
    assert "credit-risk v1" not in warmed and len(warmed) == len(ALL_MODELS) - 1


@pytest.fixture
def aws_services(tmp_path, monkeypatch):
    """Services as in AWS: models from S3, usage and tenants in DynamoDB (moto)."""
    from finmaas.api import build_services
    from finmaas.config import Settings

    from tests.aws import ROLLUPS, TENANTS, USAGE, create_tables

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="eu-west-1")
        s3 = boto3.client("s3", region_name="eu-west-1")
        create_tables(dynamodb)
        s3.create_bucket(Bucket="models",
                         CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        settings = Settings.from_env(env={
            "MAAS_MODEL_STORE": "s3://models/models", "MAAS_USAGE_TABLE": USAGE,
            "MAAS_ROLLUPS_TABLE": ROLLUPS, "MAAS_TENANTS_TABLE": TENANTS},
            home=tmp_path / "home", cache_dir=tmp_path / "cache")
        yield build_services(settings, dynamodb=dynamodb, s3=s3)


def test_after_a_restore_clients_random_state_and_tenant_cache_are_its_own(aws_services):
    services = aws_services
    before = [h.client for h in snapstart.clients_of(services)]
    assert len(before) == 3  # the model store, the usage store, the tenant store
    services.tenants.create_tenant("acme", "standard")
    services.directory.lookup("some-key")  # cached, as a request before the snapshot
    snapshot = random.getstate()
    draws = []
    for _ in range(2):  # two environments restored from one snapshot
        random.setstate(snapshot)
        snapstart.renew(services)
        draws.append(random.random())
    assert draws[0] != draws[1]
    after = [h.client for h in snapstart.clients_of(services)]
    assert all(a is not b for a, b in zip(after, before, strict=True))
    assert [c.meta.service_model.service_name for c in after] == ["s3", "dynamodb",
                                                                  "dynamodb"]
    assert all(c.meta.region_name == "eu-west-1" for c in after)
    assert services.directory._cache == {}
    # the renewed clients work
    assert services.tenants.get_tenant("acme").plan == "standard"


def test_a_failing_store_does_not_fail_the_snapshot_and_a_restore_forgets_aliases(
        services, monkeypatch):
    def down():
        raise RuntimeError("S3 is down")

    monkeypatch.setattr(services.registry, "catalogue", down)
    assert snapstart.warm(services) == []
    services.registry.aliases("credit-risk")  # cached before the snapshot
    assert services.registry._aliases
    snapstart.renew(services)
    assert not services.registry._aliases and services.registry._names is None


def test_the_handler_registers_both_hooks_with_the_lambda_runtime(services, monkeypatch):
    from finmaas.lambda_handler import build_handler

    hooks: dict[str, tuple] = {}
    runtime = types.ModuleType("snapshot_restore_py")
    runtime.register_before_snapshot = lambda fn, *a: hooks.setdefault("before", (fn, a))
    runtime.register_after_restore = lambda fn, *a: hooks.setdefault("after", (fn, a))
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", runtime)
    build_handler(services=services)
    before, args = hooks["before"]
    assert before is snapstart.warm and args[0] is services
    assert sorted(w.split(" v")[0] for w in before(*args)) == sorted(ALL_MODELS)
    after, args = hooks["after"]
    assert after is snapstart.renew and args == (services,)


def test_without_the_lambda_runtime_nothing_is_registered(services, monkeypatch):
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", None)  # import fails
    assert snapstart.register(services) is False
