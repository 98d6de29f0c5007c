"""Proofs of the metering rules against a real local server process.

Exactness: concurrent clients, retries with the same Idempotency-Key, bad requests mixed
in; billed units must equal the rows of distinct successful requests, to the unit.
Crash: the server is SIGKILLed under load; every request that got its 200 has its record.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from datetime import UTC, datetime

import httpx
import pytest
from finmaas.metering.sqlite import SQLiteMeteringStore

from tests.conftest import MODEL_NAMES, example, new_key
from tests.server import Server

pytestmark = pytest.mark.slow


def client_loop(url, key, seed, n, successes, lock, stop=None):
    rng = random.Random(seed)
    with httpx.Client(base_url=url, headers={"x-api-key": key}, timeout=30) as http:
        for i in range(n):
            if stop is not None and stop.is_set():
                return
            model = rng.choice(MODEL_NAMES)
            rows = rng.randint(1, 5)
            body = {"instances": [example(model)] * rows}
            headers = {}
            if rng.random() < 0.1:  # a bad request: must bill nothing
                body = {"instances": [{**example(model), "unexpected": 1}]}
            if rng.random() < 0.4:
                headers["Idempotency-Key"] = f"c{seed}-{i}"
            tries = 1 + (rng.random() < 0.3) * rng.randint(1, 2) if headers else 1
            for _ in range(tries):
                try:
                    r = http.post(f"/v1/models/{model}/predict", json=body, headers=headers)
                except httpx.HTTPError:
                    if stop is not None:
                        return  # the server was killed under us
                    raise
                if r.status_code == 200:
                    data = r.json()
                    with lock:
                        prev = successes.setdefault(data["request_id"], data["usage"]["units"])
                        assert prev == data["usage"]["units"]


def test_billed_units_equal_rows_of_distinct_successful_requests(tmp_path):
    home = tmp_path / "home"
    key = new_key(home, "loadtest", "enterprise")
    server = Server(home).start()
    successes: dict[str, int] = {}
    lock = threading.Lock()
    try:
        threads = [threading.Thread(target=client_loop,
                                    args=(server.url, key, s, 40, successes, lock))
                   for s in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        usage = httpx.get(f"{server.url}/v1/usage", headers={"x-api-key": key}).json()
    finally:
        server.stop()
    assert len(successes) > 200
    expected_units = sum(successes.values())
    assert usage["totals"]["units"] == {"row": expected_units}
    assert usage["totals"]["requests"] == len(successes)
    store = SQLiteMeteringStore(home / "finmaas.sqlite3")
    records = list(store.export(datetime.now(UTC).strftime("%Y-%m")))
    assert sorted(r.request_id for r in records) == sorted(successes)
    assert sum(r.units for r in records) == expected_units


def test_sigkill_under_load_loses_no_record_of_an_answered_request(tmp_path):
    home = tmp_path / "home"
    key = new_key(home, "loadtest", "enterprise")
    server = Server(home).start()
    successes: dict[str, int] = {}
    lock = threading.Lock()
    stop = threading.Event()
    threads = [threading.Thread(target=client_loop,
                                args=(server.url, key, s, 10_000, successes, lock, stop))
               for s in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(successes) < 150 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(30)
    answered = dict(successes)
    assert len(answered) >= 150
    store = SQLiteMeteringStore(home / "finmaas.sqlite3")
    records = {r.request_id: r for r in store.export(datetime.now(UTC).strftime("%Y-%m"))}
    missing = [rid for rid in answered if rid not in records]
    assert not missing, f"{len(missing)} answered requests have no usage record"
    # and the rollups agree with the records after the crash
    rows = store.month_usage("loadtest", datetime.now(UTC).strftime("%Y-%m"))
    assert sum(r.units for r in rows) == sum(r.units for r in records.values())
