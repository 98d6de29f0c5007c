"""``maas batch run`` over 100,000 rows generated from the card's ranges, SIGKILLed
midway and resumed: every row is in the output once, in order, and the tenant is billed
for exactly the rows that scored."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import MODEL_STORE, REPO

ROWS = 100_000
BAD_EVERY = 997  # an unknown category: fails alone, never billed


def generate(path: Path, card: dict) -> int:
    """Rows drawn within each input's range (categories from the card); returns how many
    are meant to fail."""
    rng = random.Random(20261204)
    specs = card["inputs"]
    bad = 0
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["row_id"] + [s["name"] for s in specs])
        writer.writeheader()
        for i in range(ROWS):
            row: dict = {"row_id": f"loan-{i:06d}"}
            for spec in specs:
                if spec["type"] == "category":
                    row[spec["name"]] = rng.choice(spec["categories"])
                else:
                    lo = spec.get("minimum", 0)
                    hi = min(spec.get("maximum", lo + 1000), lo + 10_000)
                    value = rng.uniform(lo, hi)
                    row[spec["name"]] = int(value) if spec["type"] == "integer" else \
                        round(value, 2)
            if i % BAD_EVERY == 0:
                row["home"] = "castle"
                bad += 1
            writer.writerow(row)
    return bad


def maas_batch(home: Path, source: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "MAAS_HOME": str(home), "MAAS_MODEL_STORE": str(MODEL_STORE),
           "MAAS_CACHE_DIR": str(home / "cache"), "MAAS_ORT_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "finmaas.cli", "batch", "run", "credit-risk", "--input",
         str(source), "--output", str(out), "--chunk-rows", "500", "--workers", "2",
         "--json"], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_a_killed_run_resumes_with_every_row_once_and_usage_equal_to_the_rows(tmp_path):
    from finmaas.config import Settings
    from finmaas.metering.sqlite import SQLiteMeteringStore
    from finmaas.tenants.sqlite import SQLiteTenantStore

    home = tmp_path / "home"
    settings = Settings.from_env(env={}, home=home)
    SQLiteTenantStore(settings.sqlite_path).create_tenant("demo", "standard")
    card = json.loads((MODEL_STORE / "credit-risk" / "1" / "card.json").read_text())
    source, out = tmp_path / "book.csv", tmp_path / "scores.jsonl"
    bad = generate(source, card)
    parts = out.with_name(out.name + ".parts")

    first = maas_batch(home, source, out)
    deadline = time.monotonic() + 120
    while len(list(parts.glob("chunk-*.jsonl"))) < 40:  # 20,000 of the 100,000 rows
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first run wrote no chunks"
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait()
    done_before = len(list(parts.glob("chunk-*.jsonl")))
    assert not out.exists() and done_before < ROWS // 500  # killed midway

    second = maas_batch(home, source, out)
    stdout, stderr = second.communicate(timeout=300)
    assert second.returncode == 0, stderr.decode()
    assert b"resuming job" in stderr
    job = json.loads(stdout)
    assert (job["status"], job["rows_done"], job["rows_failed"]) == (
        "succeeded", ROWS - bad, bad)
    assert job["chunks"] == ROWS // 500  # each chunk counted once, before or after the kill

    ids = []
    errors = 0
    with out.open() as f:
        for line in f:
            doc = json.loads(line)
            ids.append(doc["row_id"])
            errors += "error" in doc
    assert ids == [f"loan-{i:06d}" for i in range(ROWS)]  # every row once, in order
    assert errors == bad
    assert not parts.exists()

    usage = SQLiteMeteringStore(settings.sqlite_path).month_usage(
        "demo", time.strftime("%Y-%m", time.gmtime()))
    assert sum(r.units for r in usage) == ROWS - bad  # to the unit
    assert {r.kind for r in usage} == {"batch_prediction"}
    assert sum(r.requests for r in usage) == ROWS // 500  # one record per chunk, none twice
