"""Invoices and usage: exact money, plan rules, and one tenant never sees another's."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from finmaas.billing import build_invoice, parse_month, parse_range
from finmaas.errors import NotFound, Unprocessable
from finmaas.metering import DailyUsage
from finmaas.plans import get_plan, load_plans

from tests.conftest import example, make_tenant

TODAY = date(2026, 11, 23)


def row(day, model, units, price, version="1", requests=1, kind="prediction"):
    return DailyUsage(day, model, version, requests, units, Decimal(price) * units, kind)


def test_plans_file_defines_free_standard_enterprise():
    plans = load_plans()
    assert {"free", "standard", "enterprise"} <= set(plans)
    assert plans["free"].included_units == 1000 and plans["free"].quota_limit
    assert plans["enterprise"].discount_percent > 0
    assert plans["enterprise"].rate_limit_rps > plans["standard"].rate_limit_rps > \
        plans["free"].rate_limit_rps


def test_explanations_are_their_own_line_and_not_covered_by_included_predictions():
    rows = [row("2026-10-01", "credit-risk", 3, "0.0005"),
            row("2026-10-01", "credit-risk", 2, "0.002", kind="explanation")]
    inv = build_invoice("acme", get_plan("free"), "2026-10", rows, TODAY)
    assert [(ln["kind"], ln["units"], ln["amount_usd"]) for ln in inv["lines"]] == [
        ("explanation", 2, "0.004"), ("prediction", 3, "0.0015")]
    assert inv["included_units"]["used"] == 3 and inv["total_usd"] == "0.00"
    assert inv["subtotal_usd"] == "0.0055"


def test_batch_rows_use_the_included_units_like_predicted_rows_on_their_own_line():
    rows = [row("2026-10-01", "credit-risk", 600, "0.0005"),
            row("2026-10-02", "credit-risk", 700, "0.0005", kind="batch_prediction"),
            row("2026-10-02", "credit-risk", 5, "0.0015", kind="batch_explanation")]
    inv = build_invoice("acme", get_plan("free"), "2026-10", rows, TODAY)
    assert [(ln["kind"], ln["units"]) for ln in inv["lines"]] == [
        ("batch_explanation", 5), ("batch_prediction", 700), ("prediction", 600)]
    # 1,000 included rows: 600 predicted, then 400 of the batch's; explained rows are paid
    assert inv["included_units"] == {"allowance": 1000, "used": 1000, "credit_usd": "0.5"}


def test_a_usage_range_ends_today_at_the_latest():
    # no store is ever asked for a month after today (DynamoDB's month walk once met year 10000)
    assert parse_range("2026-11-01", "9999-12-31", TODAY) == (date(2026, 11, 1), TODAY)


def test_invoice_lines_per_model_and_version_with_exact_amounts():
    rows = [row("2026-10-01", "credit-risk", 3, "0.0005"),
            row("2026-10-02", "credit-risk", 7, "0.0005", requests=2),
            row("2026-10-02", "credit-risk", 1, "0.0006", version="2"),
            row("2026-10-03", "mortgage-approval", 1, "0.001")]
    inv = build_invoice("acme", get_plan("standard"), "2026-10", rows, TODAY)
    assert [(ln["model"], ln["version"], ln["requests"], ln["units"], ln["unit_price_usd"],
             ln["amount_usd"]) for ln in inv["lines"]] == [
        ("credit-risk", "1", 3, 10, "0.0005", "0.005"),
        ("credit-risk", "2", 1, 1, "0.0006", "0.0006"),
        ("mortgage-approval", "1", 1, 1, "0.001", "0.001"),
    ]
    assert inv["subtotal_usd"] == "0.0066" and inv["total_usd"] == "0.01"  # 0.0066 -> 0.01
    assert inv["status"] == "final" and inv["currency"] == "USD"


def test_free_plan_included_units_are_the_months_first_rows():
    rows = [row("2026-11-01", "mortgage-approval", 600, "0.001"),
            row("2026-11-02", "credit-risk", 900, "0.0005")]
    inv = build_invoice("acme", get_plan("free"), "2026-11", rows, TODAY)
    # 600 mortgage rows + 400 credit rows are free; 500 credit rows are billed
    assert inv["included_units"] == {"allowance": 1000, "used": 1000, "credit_usd": "0.8"}
    assert inv["subtotal_usd"] == "1.05" and inv["total_usd"] == "0.25"
    assert inv["status"] == "open"


def test_enterprise_discount_and_half_up_rounding():
    rows = [row("2026-10-05", "credit-risk", 1010, "0.0005")]  # 0.505
    inv = build_invoice("acme", get_plan("enterprise"), "2026-10", rows, TODAY)
    assert inv["discount"] == {"percent": "15", "amount_usd": "0.07575"}
    assert inv["total_usd"] == "0.43"  # 0.42925 -> 0.43
    half = build_invoice("acme", get_plan("standard"), "2026-10",
                         [row("2026-10-05", "credit-risk", 10, "0.0005")], TODAY)
    assert half["total_usd"] == "0.01"  # 0.005 rounds half-up, not to even


def test_month_and_range_validation():
    assert parse_month("2026-11", TODAY) == "2026-11"
    with pytest.raises(Unprocessable):
        parse_month("2026-13", TODAY)
    with pytest.raises(NotFound):
        parse_month("2026-12", TODAY)
    assert parse_range(None, None, TODAY) == (date(2026, 11, 1), TODAY)
    for bad in [("2026-11-05", "2026-11-01"), ("2024-01-01", "2026-01-01"), ("x", None)]:
        with pytest.raises(Unprocessable):
            parse_range(*bad, TODAY)


def test_usage_and_invoice_api_show_only_the_callers_tenant(client, services):
    acme = make_tenant(services, "acme")
    bank = make_tenant(services, "bank", "enterprise")
    assert client.post("/v1/models/credit-risk/predict", headers={"x-api-key": acme},
                       json={"instances": [example("credit-risk")] * 4}).status_code == 200
    assert client.post("/v1/models/loan-default/predict", headers={"x-api-key": bank},
                       json={"instances": [example("loan-default")]}).status_code == 200
    month = date.today().strftime("%Y-%m")
    a = client.get("/v1/usage", headers={"x-api-key": acme}).json()
    b = client.get("/v1/usage", headers={"x-api-key": bank}).json()
    assert a["tenant"] == "acme" and [d["model"] for d in a["days"]] == ["credit-risk"]
    assert b["tenant"] == "bank" and [d["model"] for d in b["days"]] == ["loan-default"]
    assert a["totals"] == {"requests": 1, "units": {"row": 4}, "amount_usd": "0.002"}
    inv = client.get(f"/v1/invoices/{month}", headers={"x-api-key": bank}).json()
    assert inv["tenant"] == "bank" and inv["plan"] == "enterprise" and inv["status"] == "open"
    assert [ln["model"] for ln in inv["lines"]] == ["loan-default"]
    # no parameter lets a caller name another tenant
    assert client.get("/v1/usage?tenant=acme", headers={"x-api-key": bank}).json()[
        "tenant"] == "bank"


def test_invoice_api_errors(client, api_key):
    h = {"x-api-key": api_key}
    assert client.get("/v1/invoices/2026-1", headers=h).json()["error"]["code"] == \
        "invalid_month"
    assert client.get("/v1/invoices/2999-01", headers=h).status_code == 404
    assert client.get("/v1/usage?start=2026-13-01", headers=h).status_code == 422
