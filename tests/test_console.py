"""The web console in a real browser: Debian's Chromium (installed by `make test`), driven
by Playwright without downloading any browser, against a running `maas serve`.

Every run takes a screenshot of each page, into the test's temporary folder, or into
``MAAS_SCREENSHOTS_DIR``: `make console-screenshots` refreshes the README's, in
tests/console-screenshots/."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, new_key
from tests.server import Server

pytestmark = pytest.mark.slow
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    chosen = os.environ.get("MAAS_SCREENSHOTS_DIR")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("console-home")
    server = Server(home).start()
    server.key = new_key(home, "acme", "free")  # the free plan: 2 requests/s, bursts of 5
    server.other_key = new_key(home, "globex", "standard")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: `make test` installs it (apt-get)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server, shots):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.shots = shots
    page.requests = []
    page.on("request", lambda r: page.requests.append(r))
    page.console_errors = []
    page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
    page.on("pageerror", lambda e: page.console_errors.append(f"uncaught: {e}"))
    yield page
    context.close()


def ready(page) -> None:
    page.wait_for_selector("body[data-ready='true']", timeout=15_000)


def enter_key(page, key: str) -> None:
    ready(page)
    page.evaluate("document.body.dataset.ready = 'false'")
    page.fill("#api-key", key)
    page.click("#key-form button[type=submit]")
    ready(page)


def shot(page, name: str) -> None:
    path = page.shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000  # a page was drawn, not a blank


def test_predict_from_the_form_then_see_it_counted_in_usage_and_the_invoice(page, server):
    # Given the console's models page and a key typed once
    page.goto(f"{server.url}/console/")
    ready(page)
    assert "Type your API key" in page.inner_text("main")
    enter_key(page, server.key)
    assert "Key accepted: tenant acme, plan free" in page.inner_text("#key-status")
    assert page.locator("main table tbody tr").count() >= 5
    shot(page, "models")
    # When the visitor opens a model, sees its card and runs the prefilled example
    page.click("text=credit-risk")
    page.wait_for_url("**/console/models/credit-risk")
    ready(page)
    text = page.inner_text("main")
    assert "ROC AUC" in text and "95% CI" in text and "Calibration" in text
    assert "[object" not in text and "\nnull\n" not in text and "undefined" not in text
    assert page.evaluate("window.finmaasCharts.calibration.data.datasets[0].data.length") > 5
    assert page.evaluate("window.finmaasCharts.importance.data.labels.length") >= 5
    page.click("button[value=explain]")
    page.wait_for_selector("#try-answer table")
    answer = page.inner_text("#try-answer")
    assert "probability of default" in answer and "Reasons" in answer
    assert page.evaluate("window.finmaasCharts.waterfall.data.labels.length") >= 3
    shot(page, "model")
    # Then the usage page counts it, charts it and bills it
    page.click("nav >> text=Usage and bill")
    page.wait_for_url("**/console/usage")
    ready(page)
    page.wait_for_selector("#usage-out table")
    usage = page.inner_text("#usage-out")
    assert "credit-risk" in usage and "explanation" in usage
    points = page.evaluate(
        "window.finmaasCharts.usage.data.datasets.flatMap(d => d.data).filter(v => v > 0)")
    assert points == [1]
    invoice = page.inner_text("#invoice-out")
    assert "credit-risk" in invoice and "explanation" in invoice and "0.0015" in invoice
    plan = page.inner_text("main")
    assert "1,000 calls a month" in plan and "1 request (the quota counts" in plan
    shot(page, "usage")
    # and the key never left the headers: not in a URL, not in a cookie
    assert all(server.key not in r.url for r in page.requests)
    assert not page.context.cookies()
    sent = [r for r in page.requests if "/v1/" in r.url]
    assert sent and all(r.headers.get("x-api-key") == server.key for r in sent)
    # no script error; the free plan's bursts were met with 429s the console waited out
    assert [e for e in page.console_errors if "status of 429" not in e] == []


def test_a_wrong_key_gets_a_clear_message(page, server):
    page.goto(f"{server.url}/console/usage")
    ready(page)
    enter_key(page, "fmk_this_is_not_a_key")
    status = page.inner_text("#key-status")
    assert "This key was refused (invalid_api_key)" in status
    assert "cannot be shown: This key was refused" in page.inner_text("main")


def test_the_apis_error_is_shown_next_to_the_field_it_names(page, server):
    page.goto(f"{server.url}/console/models/credit-risk")
    enter_key(page, server.other_key)
    page.wait_for_selector("#try-form")
    page.fill("#field-age", "12")  # below the card's minimum of 18
    page.select_option("#field-home", "rent")
    page.click("button[value=predict]")
    page.wait_for_selector("#try-answer .message.error")
    assert "must be >= 18" in page.inner_text("[data-field='age'] .field-error")
    assert page.inner_text("[data-field='income'] .field-error") == ""
    shot(page, "form-error")


def test_the_text_model_routes_a_message_into_typed_labels(page, server):
    page.goto(f"{server.url}/console/models/text-embedding")
    enter_key(page, server.other_key)
    page.wait_for_selector("#try-form")
    page.fill("#field-text", "someone stole my wallet with my debit card in it")
    page.fill("#field-labels", "card_lost: the customer lost their card or had it stolen\n"
                               "balance: the customer asks for their balance")
    page.click("button[value=predict]")
    page.wait_for_selector("#try-answer table")
    assert "card_lost" in page.inner_text("#try-answer")
    assert "tokens" in page.inner_text("#try-answer")
    page.fill("#field-labels", "card_lost\ncard_lost")  # a label given twice
    page.click("button[value=predict]")
    page.wait_for_selector("#try-answer .message.error")
    assert "given twice" in page.inner_text("[data-field='labels'] .field-error")


def test_at_phone_width_the_pages_fit_and_keep_their_tables(browser, server, shots):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.shots = shots
    page.goto(f"{server.url}/console/")
    enter_key(page, server.other_key)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390 + 1  # no page-wide horizontal scroll; wide tables scroll inside
    shot(page, "models-phone")
    context.close()


def test_pages_are_open_but_data_is_not_and_nothing_comes_from_elsewhere(server):
    for path in ("/console", "/console/", "/console/models/credit-risk", "/console/usage"):
        r = httpx.get(f"{server.url}{path}", follow_redirects=True)
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert "http://" not in r.text.replace(server.url, "") and "https://" not in r.text
    assert httpx.get(f"{server.url}/v1/account").status_code == 401
    assert httpx.get(f"{server.url}/console/static/chart.umd.min.js").status_code == 200


def test_the_charting_library_is_the_pinned_npm_package():
    """Served from the app (no CDN), byte for byte the version package.json pins."""
    pinned = json.loads((REPO / "package.json").read_text())["devDependencies"]["chart.js"]
    installed = REPO / "node_modules" / "chart.js"
    assert json.loads((installed / "package.json").read_text())["version"] == pinned
    served = REPO / "functions" / "finmaas" / "console" / "static" / "chart.umd.min.js"
    assert hashlib.sha256(served.read_bytes()).hexdigest() == hashlib.sha256(
        (installed / "dist" / "chart.umd.min.js").read_bytes()).hexdigest()
    assert f"Chart.js v{pinned}" in served.read_text()[:200]


def test_a_model_name_that_looks_like_a_placeholder_is_just_text(server):
    r = httpx.get(f"{server.url}/console/models/%7Btitle%7D")
    assert 'data-model="{title}"' in r.text
