"""The maas CLI as an operator uses it, locally and against AWS (moto)."""

from __future__ import annotations

import json

import boto3
import pytest
from finmaas.cli import main
from moto import mock_aws

from tests.aws import ROLLUPS, TENANTS, USAGE, create_tables
from tests.conftest import EVENTS


@pytest.fixture
def home(tmp_path, monkeypatch):
    for var in ("MAAS_TENANTS_TABLE", "MAAS_USAGE_TABLE", "MAAS_ROLLUPS_TABLE",
                "MAAS_MODEL_STORE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MAAS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MAAS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "home"


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_tenant_key_predict_usage_invoice_walkthrough(home, capsys):
    from fastapi.testclient import TestClient
    from finmaas.cli.serve import local_app
    from finmaas.config import Settings

    from tests.conftest import example

    assert run(capsys, "tenants", "create", "acme", "--plan", "free")[0] == 0
    code, out, err = run(capsys, "keys", "create", "--tenant", "acme")
    assert code == 0 and "shown once" in err
    key = out.strip().splitlines()[-1]
    assert key.startswith("fmk_") and len(key) > 30
    client = TestClient(local_app(Settings.from_env()))
    r = client.post("/v1/models/credit-risk/predict", headers={"x-api-key": key},
                    json={"instances": [example("credit-risk")] * 2})
    assert r.status_code == 200
    code, out, _ = run(capsys, "tenants", "list")
    assert "acme" in out and "free" in out
    code, out, _ = run(capsys, "invoices", "show", "--tenant", "acme", "--json")
    invoice = json.loads(out)
    assert invoice["lines"][0]["units"] == 2 and invoice["total_usd"] == "0.00"
    code, out, _ = run(capsys, "invoices", "show", "--tenant", "acme")
    assert "credit-risk" in out and "total" in out
    # revoke stops the key
    from finmaas.tenants import open_tenant_store

    key_id = open_tenant_store(Settings.from_env()).list_keys("acme")[0].key_id
    code, out, _ = run(capsys, "keys", "list", "--tenant", "acme")
    row = out.splitlines()[-1].split()
    assert code == 0 and row[0] == key_id and row[-1] == "-"  # revoked column: not yet
    assert run(capsys, "keys", "revoke", key_id)[0] == 0
    row = run(capsys, "keys", "list", "--tenant", "acme")[1].splitlines()[-1].split()
    assert row[0] == key_id and row[-1].startswith("20")  # revoked at <timestamp>
    fresh = TestClient(local_app(Settings.from_env()))
    assert fresh.get("/v1/models", headers={"x-api-key": key}).status_code == 401


def test_usage_export_writes_cloudevents(home, capsys, tmp_path):
    from datetime import UTC, datetime

    code, out, _ = run(capsys, "invoke", "inference", str(EVENTS / "predict-loan-default.json"))
    assert code == 0 and json.loads(out)["statusCode"] == 200
    month = datetime.now(UTC).strftime("%Y-%m")
    target = tmp_path / "usage.jsonl"
    code, _, err = run(capsys, "usage", "export", "--month", month, "--out", str(target))
    assert code == 0 and "exported 1" in err
    event = json.loads(target.read_text())
    assert event["specversion"] == "1.0" and event["type"] == "finmaas.prediction"
    assert event["id"] == "5e7b1f0c-0000-4000-8000-000000000006"
    assert event["subject"] == "demo" and event["data"]["units"] == 1
    assert event["data"]["amount_usd"] == "0.0005"


def test_invoke_prints_the_lambda_response(home, capsys):
    code, out, _ = run(capsys, "invoke", "inference", str(EVENTS / "bad-unknown-model.json"))
    response = json.loads(out)
    assert code == 0 and response["statusCode"] == 404
    assert json.loads(response["body"])["error"]["code"] == "model_not_found"


def test_cli_errors_are_clear(home, capsys):
    code, _, err = run(capsys, "keys", "create", "--tenant", "ghost")
    assert code == 1 and "ghost" in err
    code, _, err = run(capsys, "invoke", "nosuchfn", str(EVENTS / "health.json"))
    assert code == 2 and "no function" in err
    code, _, err = run(capsys, "usage", "export", "--month", "2026-1")
    assert code == 2


def test_tenants_create_with_exist_ok_succeeds_again_on_the_same_plan_only(home, capsys):
    assert run(capsys, "tenants", "create", "acme", "--plan", "free")[0] == 0
    code, _, err = run(capsys, "tenants", "create", "acme", "--plan", "free")
    assert code == 1 and "already exists" in err  # a typo'd name must not pass silently
    code, out, _ = run(capsys, "tenants", "create", "acme", "--plan", "free", "--exist-ok")
    assert code == 0 and "tenant acme already exists on plan free" in out
    code, _, err = run(capsys, "tenants", "create", "acme", "--plan", "standard",
                       "--exist-ok")
    assert code == 1 and "already exists on plan free" in err


def _billed_requests(tenant: str) -> int:
    from datetime import UTC, datetime

    from finmaas.config import Settings
    from finmaas.metering import open_metering_store

    rows = open_metering_store(Settings.from_env()).month_usage(
        tenant, datetime.now(UTC).strftime("%Y-%m"))
    return sum(r.requests for r in rows)


def test_suspend_stops_a_live_servers_predictions_at_once_and_resume_restores_them(
        home, capsys):
    """Given a running app that has already served (and cached) the tenant's key, when
    the operator suspends the tenant, the very next call is refused and billed nothing."""
    from fastapi.testclient import TestClient
    from finmaas.cli.serve import local_app
    from finmaas.config import Settings

    from tests.conftest import example

    run(capsys, "tenants", "create", "acme", "--plan", "standard")
    key = run(capsys, "keys", "create", "--tenant", "acme")[1].strip()
    client = TestClient(local_app(Settings.from_env()))

    def predict():
        return client.post("/v1/models/credit-risk/predict", headers={"x-api-key": key},
                           json={"instances": [example("credit-risk")]})

    assert predict().status_code == 200 and _billed_requests("acme") == 1
    code, out, _ = run(capsys, "tenants", "suspend", "acme")
    assert code == 0 and "suspended tenant acme" in out
    refused = predict()
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "tenant_suspended"
    assert refused.json()["error"]["details"] == []
    assert client.get("/v1/usage", headers={"x-api-key": key}).status_code == 403
    assert _billed_requests("acme") == 1
    assert "suspended" in run(capsys, "tenants", "list")[1]
    code, out, _ = run(capsys, "tenants", "resume", "acme")
    assert code == 0 and "resumed tenant acme" in out
    assert predict().status_code == 200 and _billed_requests("acme") == 2


def test_the_app_sees_a_suspension_within_seconds_even_without_the_local_gateway(home, capsys):
    """In Lambda the app's own tenant directory is the last check; its default cache
    must not keep serving a suspended tenant for a minute."""
    from finmaas.api.identity import TenantDirectory
    from finmaas.config import Settings
    from finmaas.tenants import open_tenant_store

    from tests.conftest import Clock

    run(capsys, "tenants", "create", "acme", "--plan", "standard")
    run(capsys, "keys", "create", "--tenant", "acme")
    settings = Settings.from_env()
    store = open_tenant_store(settings)
    key_id = store.list_keys("acme")[0].key_id
    clock = Clock()
    directory = TenantDirectory(store, ttl=settings.tenant_cache_seconds, clock=clock)
    assert directory.lookup(key_id)[1].active
    run(capsys, "tenants", "suspend", "acme")
    clock.now += 6  # a few seconds later, not a minute
    assert not directory.lookup(key_id)[1].active


def test_suspend_and_resume_name_unknown_tenants_clearly(home, capsys):
    for verb in ("suspend", "resume"):
        code, _, err = run(capsys, "tenants", verb, "nosuch")
        assert code == 1 and "maas: no tenant 'nosuch'" in err


@pytest.fixture
def aws(monkeypatch, home):
    with mock_aws():
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        ddb = boto3.client("dynamodb")
        create_tables(ddb)
        apigw = boto3.client("apigateway")
        plans = {}
        for plan in ("free", "standard", "enterprise"):
            plans[plan] = apigw.create_usage_plan(name=f"finmaas-test-{plan}")["id"]
        monkeypatch.setenv("MAAS_TENANTS_TABLE", TENANTS)
        monkeypatch.setenv("MAAS_USAGE_TABLE", USAGE)
        monkeypatch.setenv("MAAS_ROLLUPS_TABLE", ROLLUPS)
        monkeypatch.setenv("MAAS_STAGE", "test")
        yield apigw, plans


def test_keys_against_aws_create_an_api_gateway_key_on_the_plans_usage_plan(aws, capsys):
    apigw, plans = aws
    assert run(capsys, "tenants", "create", "bank", "--plan", "enterprise")[0] == 0
    _code, out, _ = run(capsys, "keys", "create", "--tenant", "bank")
    secret = out.strip().splitlines()[-1]
    keys = apigw.get_api_keys(includeValues=True)["items"]
    assert len(keys) == 1 and keys[0]["value"] == secret and keys[0]["enabled"]
    linked = apigw.get_usage_plan_keys(usagePlanId=plans["enterprise"])["items"]
    assert [k["id"] for k in linked] == [keys[0]["id"]]
    from finmaas.config import Settings
    from finmaas.tenants import open_tenant_store

    store = open_tenant_store(Settings.from_env())
    assert store.get_key(keys[0]["id"]).tenant == "bank"
    assert run(capsys, "keys", "revoke", keys[0]["id"])[0] == 0
    assert not apigw.get_api_key(apiKey=keys[0]["id"])["enabled"]
    assert not store.get_key(keys[0]["id"]).active


def test_keys_against_aws_fail_clearly_without_the_usage_plan(aws, capsys, monkeypatch):
    monkeypatch.setenv("MAAS_STAGE", "prod")
    run(capsys, "tenants", "create", "bank", "--plan", "standard")
    code, _, err = run(capsys, "keys", "create", "--tenant", "bank")
    assert code == 1 and "finmaas-prod-standard" in err


def test_suspending_a_tenant_in_aws_disables_its_gateway_keys_and_resume_enables_live_ones(
        aws, capsys):
    apigw, _plans = aws
    from finmaas.config import Settings
    from finmaas.tenants import open_tenant_store

    run(capsys, "tenants", "create", "bank", "--plan", "standard")
    run(capsys, "keys", "create", "--tenant", "bank")
    run(capsys, "keys", "create", "--tenant", "bank")
    first, second = (k["id"] for k in apigw.get_api_keys()["items"])
    run(capsys, "keys", "revoke", second)

    code, out, _ = run(capsys, "tenants", "suspend", "bank")
    assert code == 0 and "suspended tenant bank" in out
    assert not open_tenant_store(Settings.from_env()).get_tenant("bank").active
    assert not apigw.get_api_key(apiKey=first)["enabled"]
    # a key issued while suspended is born disabled
    run(capsys, "keys", "create", "--tenant", "bank")
    third = next(k["id"] for k in apigw.get_api_keys()["items"] if k["id"] not in
                 (first, second))
    assert not apigw.get_api_key(apiKey=third)["enabled"]

    code, out, _ = run(capsys, "tenants", "resume", "bank")
    assert code == 0 and "resumed tenant bank" in out
    assert open_tenant_store(Settings.from_env()).get_tenant("bank").active
    enabled = {k["id"]: k["enabled"] for k in apigw.get_api_keys()["items"]}
    assert enabled == {first: True, second: False, third: True}  # revoked stays off


DEMO_KEY_RACER = """
import pathlib, sys, time
import finmaas.keys
from finmaas.cli.serve import demo_key
from finmaas.config import Settings
from finmaas.tenants import open_tenant_store

settings = Settings.from_env()
open_tenant_store(settings)  # imports and schema done: the race is on the demo tenant
go = pathlib.Path(sys.argv[1])
(go.parent / f"ready-{sys.argv[2]}").touch()
while not go.exists():
    time.sleep(0.0005)
print(demo_key(settings))
"""


def test_concurrent_first_serves_share_one_working_demo_key(home, tmp_path):
    """Given a fresh MAAS_HOME, when several `maas serve` start at once, each one creates
    or finds the demo tenant and they all print the same working key."""
    import os
    import subprocess
    import sys
    import time

    from finmaas.config import Settings
    from finmaas.tenants import open_tenant_store
    from finmaas.tenants.base import hash_key

    racers = 4
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", DEMO_KEY_RACER, str(go), str(i)],
                              env=os.environ.copy(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(racers)]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < racers and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # release them together
    results = [(p.wait(60), *p.communicate()) for p in procs]
    assert [code for code, _, _ in results] == [0] * racers, [err for _, _, err in results]
    printed = {out.strip() for _, out, _ in results}
    assert len(printed) == 1
    (secret,) = printed
    assert (home / "demo-key").read_text().strip() == secret
    assert (home / "demo-key").stat().st_mode & 0o777 == 0o600
    assert not list(home.glob(".demo-key.*"))  # no temporary files left behind
    store = open_tenant_store(Settings.from_env())
    assert store.find_key_by_hash(hash_key(secret)).active
    assert len(store.list_keys("demo")) == 1  # no orphan keys from the losers


# -- for people who script ------------------------------------------------------------
def test_version_prints_the_package_version(capsys):
    from finmaas import __version__

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out == f"maas {__version__}\n"


def test_list_commands_print_json_for_scripts(home, capsys):
    run(capsys, "tenants", "create", "acme", "--plan", "free")
    run(capsys, "tenants", "create", "bank", "--plan", "enterprise")
    run(capsys, "keys", "create", "--tenant", "acme")
    code, out, _ = run(capsys, "tenants", "list", "--json")
    tenants = json.loads(out)
    assert code == 0 and [(t["name"], t["plan"], t["status"], t["active_keys"])
                          for t in tenants] == [("acme", "free", "active", 1),
                                                ("bank", "enterprise", "active", 0)]
    assert tenants[0]["created_at"].startswith("20")
    code, out, _ = run(capsys, "keys", "list", "--tenant", "acme", "--json")
    (key,) = json.loads(out)
    assert code == 0 and key["tenant"] == "acme" and key["key_id"].startswith("lk")
    assert key["revoked_at"] is None and key["active"] is True


@pytest.mark.parametrize("argv", [
    ["keys", "create", "--tenant", "nosuch"],
    ["keys", "list", "--tenant", "nosuch"],
    ["keys", "list", "--tenant", "nosuch", "--json"],
    ["invoices", "show", "--tenant", "nosuch"],
    ["invoices", "show", "--tenant", "nosuch", "--json"],
    ["tenants", "suspend", "nosuch"],
    ["tenants", "resume", "nosuch"],
])
def test_an_unknown_tenant_is_named_clearly(home, capsys, argv):
    code, out, err = run(capsys, *argv)
    assert (code, out) == (1, "") and err.splitlines()[-1].startswith("maas: no tenant 'nosuch'")


def test_an_unknown_key_is_named_clearly_against_aws_too(aws, capsys):
    code, out, err = run(capsys, "keys", "revoke", "nosuchkey")
    assert (code, out) == (1, "") and err.splitlines()[-1] == "maas: no key 'nosuchkey'"


@pytest.mark.parametrize("argv", [
    ["models", "list"],
    ["tenants", "list", "--json"],
    ["usage", "export", "--month", "this"],
])
def test_output_into_a_closed_pipe_ends_quietly(home, capsys, argv):
    """`maas ... | head -1`: the reader leaves early; maas stops like `yes | head` does,
    with no traceback, and exits 141 (128 + SIGPIPE) for `set -o pipefail` scripts."""
    import os
    import subprocess
    import sys
    from datetime import UTC, datetime

    run(capsys, "tenants", "create", "acme", "--plan", "free")
    run(capsys, "invoke", "inference", str(EVENTS / "predict-loan-default.json"))  # a record
    argv = [datetime.now(UTC).strftime("%Y-%m") if a == "this" else a for a in argv]
    proc = subprocess.Popen([sys.executable, "-m", "finmaas.cli", *argv], env=os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before maas writes a byte
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 141 and b"Traceback" not in err and b"Broken pipe" not in err


# -- which store ----------------------------------------------------------------------
def test_maas_home_defaults_to_the_checkouts_store_from_any_directory(tmp_path, monkeypatch):
    """Standing in another directory must not start a new, empty store there."""
    from finmaas.config import REPO_ROOT, Settings

    monkeypatch.chdir(tmp_path)
    assert Settings.from_env(env={}).home == REPO_ROOT / ".maas"
    assert Settings.from_env(env={"MAAS_HOME": "elsewhere"}).home.name == "elsewhere"


def test_an_installed_package_keeps_its_store_in_the_users_data_directory(tmp_path):
    from finmaas.config import default_home

    data, home = tmp_path / "data", tmp_path / "user"
    assert default_home({"XDG_DATA_HOME": str(data)}, checkout=None) == data / "finmaas"
    assert default_home({"HOME": str(home)}, checkout=None) == home / ".local/share/finmaas"
    # the XDG spec says to ignore a relative XDG_DATA_HOME
    assert default_home({"XDG_DATA_HOME": "rel", "HOME": str(home)}, checkout=None) == \
        home / ".local/share/finmaas"


def test_commands_that_write_name_the_store_they_wrote_to(home, capsys):
    where = f"store: SQLite {(home / 'finmaas.sqlite3').resolve()}\n"
    for argv in (["tenants", "create", "acme", "--plan", "free"],
                 ["keys", "create", "--tenant", "acme"],
                 ["tenants", "suspend", "acme"], ["tenants", "resume", "acme"]):
        code, _, err = run(capsys, *argv)
        assert code == 0 and where in err, argv
    code, out, _ = run(capsys, "keys", "list", "--tenant", "acme", "--json")
    code, _, err = run(capsys, "keys", "revoke", json.loads(out)[0]["key_id"])
    assert code == 0 and where in err


def test_commands_that_write_to_aws_name_the_table_and_region(aws, capsys):
    code, _, err = run(capsys, "tenants", "create", "bank", "--plan", "free")
    assert code == 0 and f"store: DynamoDB table {TENANTS} in us-east-1\n" in err


def test_the_serve_banner_names_the_store(home):
    import os
    import subprocess
    import sys

    from tests.server import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "finmaas.cli", "serve", "--port", str(port),
                             "--log-level", "warning"], env=os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Try it"):
                break
    finally:
        proc.terminate()
        proc.wait(10)
    banner = "".join(lines)
    # the bundled store's recipes/ folder is no model, and no model of it is damaged
    assert "not served" not in proc.stderr.read()
    assert f"store: SQLite {(home / 'finmaas.sqlite3').resolve()}" in banner, banner


def test_serve_reports_and_skips_a_damaged_model_and_serves_the_rest(home, store_copy,
                                                                       monkeypatch):
    import httpx

    from tests.conftest import example
    from tests.server import Server

    # Given one garbled card and one model without aliases.json
    (store_copy / "credit-risk" / "1" / "card.json").write_text("{not json")
    (store_copy / "market-volatility" / "aliases.json").unlink()
    monkeypatch.setenv("MAAS_MODEL_STORE", str(store_copy))
    # When the server starts, it starts
    server = Server(home).start()
    try:
        key = (home / "demo-key").read_text().strip()
        h = {"x-api-key": key}
        # Then the healthy models answer, the damaged ones alone do not
        ok = httpx.post(f"{server.url}/v1/models/loan-default/predict", headers=h,
                        json={"instances": [example("loan-default")]})
        assert ok.status_code == 200
        bad = httpx.post(f"{server.url}/v1/models/credit-risk/predict", headers=h,
                         json={"instances": [example("credit-risk")]})
        assert bad.status_code == 503 and bad.json()["error"]["code"] == "store_corrupt"
        assert str(store_copy) not in bad.text
        listed = httpx.get(f"{server.url}/v1/models", headers=h).json()["models"]
        assert sorted(m["name"] for m in listed) == ["loan-default", "mortgage-approval",
                                                         "text-embedding"]
    finally:
        server.stop()
    # And the home the server made is private, its lock file too
    assert (home.stat().st_mode & 0o777, (home / "demo-key.lock").stat().st_mode & 0o777) == (
        0o700, 0o600)
    # And the operator was told which models are not served, and why
    err = server.log.decode()
    assert "model credit-risk is not served: credit-risk/1/card.json" in err
    assert "model market-volatility is not served: market-volatility/aliases.json is " \
           "missing" in err
