"""The embedded SQLite store under faults: private files, damage refused by name, and a
lock held by another process never freezing the local server's event loop."""

from __future__ import annotations

import sqlite3
import stat
import threading
import time

import pytest
from fastapi.testclient import TestClient
from finmaas.embedded import StoreDamaged, connect

from tests.conftest import example


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_store_and_a_home_it_creates_are_private(tmp_path, services, client, api_key):
    client.post("/v1/models/credit-risk/predict", headers={"x-api-key": api_key},
                json={"instances": [example("credit-risk")]})
    db = services.settings.sqlite_path
    assert mode(db.parent) == 0o700
    for f in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        assert f.exists() and mode(f) == 0o600, f


def test_an_existing_readable_store_is_made_private(tmp_path):
    db = tmp_path / "finmaas.sqlite3"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.commit()
    db.chmod(0o644)
    connect(db).close()
    assert mode(db) == 0o600


def test_a_zero_length_store_is_refused_not_started_empty(tmp_path):
    db = tmp_path / "finmaas.sqlite3"
    db.touch()
    with pytest.raises(StoreDamaged, match=str(db)):
        connect(db)


def test_a_garbled_store_is_refused_by_name(tmp_path):
    db = tmp_path / "finmaas.sqlite3"
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreDamaged, match=f"{db}.*not a usable"):
        connect(db)


def test_serve_refuses_a_damaged_store_with_a_message_not_a_traceback(tmp_path, capsys,
                                                                     monkeypatch):
    from finmaas.cli import main

    home = tmp_path / "home"
    home.mkdir()
    (home / "finmaas.sqlite3").write_bytes(b"\x00garbage" * 64)
    monkeypatch.setenv("MAAS_HOME", str(home))
    assert main(["tenants", "list"]) == 2
    err = capsys.readouterr().err
    assert "finmaas.sqlite3" in err and "Traceback" not in err


def test_a_lock_held_elsewhere_leaves_health_free_and_answers_503(services, api_key):
    from finmaas.api import create_app
    from finmaas.gateway import LocalGateway

    app = LocalGateway(create_app(services), services.tenants,
                       quota_seed=services.metering.count_requests)
    other = sqlite3.connect(services.settings.sqlite_path, isolation_level=None)
    results: dict[str, int] = {}
    writing = threading.Event()
    record = services.metering.record

    def record_and_signal(rec):
        writing.set()
        return record(rec)

    services.predictions.metering.record = record_and_signal
    with TestClient(app) as client:
        client.get("/v1/models", headers={"x-api-key": api_key})  # key cached, store warm
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            def predict() -> None:
                r = client.post("/v1/models/credit-risk/predict",
                                headers={"x-api-key": api_key},
                                json={"instances": [example("credit-risk")]})
                results["predict"] = r.status_code
                results["retry_after"] = int(r.headers.get("retry-after", 0))

            waiting = threading.Thread(target=predict)
            waiting.start()
            assert writing.wait(10)
            # While the predict waits for the lock, the event loop still answers
            health = client.get("/health")
            assert health.status_code == 200
            assert waiting.is_alive(), "the predict should still be waiting for the lock"
            waiting.join()
        finally:
            other.execute("ROLLBACK")
            other.close()
    # And the waiting call gives up with a retryable 503, billing nothing
    assert results == {"predict": 503, "retry_after": 1}


def test_a_small_warm_predict_is_answered_on_the_loop_and_a_lock_sends_it_to_a_thread(
        services, api_key):
    """The local server answers a one-row predict of a loaded model on its event loop
    (no thread hop); when the usage store would wait for another process's lock, nothing
    is recorded there and the same call runs in a worker thread, which waits, then
    answers 503: /health stays free and the call is billed once, or not at all."""
    from finmaas.api import create_app
    from finmaas.gateway import LocalGateway

    services.offload = True
    app = LocalGateway(create_app(services), services.tenants,
                       quota_seed=services.metering.count_requests)
    threads: list[str] = []
    writing = threading.Event()
    serve = services.predictions.serve

    def serve_and_note(*args, **kwargs):
        threads.append(threading.current_thread().name)
        writing.set()
        return serve(*args, **kwargs)

    services.predictions.serve = serve_and_note
    body = {"instances": [example("credit-risk")]}
    key = {"x-api-key": api_key}
    with TestClient(app) as client:
        assert client.post("/v1/models/credit-risk/predict", headers=key,
                           json=body).status_code == 200  # loads the model, in a thread
        threads.clear()
        assert client.post("/v1/models/credit-risk/predict", headers=key,
                           json=body).status_code == 200
        loop_thread = threads[-1]
        assert len(threads) == 1  # once, where the event loop runs
        billed = services.metering.count_requests
        other = sqlite3.connect(services.settings.sqlite_path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        results: dict[str, int] = {}
        try:
            threads.clear()
            writing.clear()
            waiting = threading.Thread(target=lambda: results.update(predict=client.post(
                "/v1/models/credit-risk/predict", headers=key, json=body).status_code))
            waiting.start()
            assert writing.wait(10)
            assert client.get("/health").status_code == 200  # the loop is free
            waiting.join()
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert results == {"predict": 503}
        assert threads[0] == loop_thread and len(threads) == 2  # tried there, then moved
        assert threads[1] != loop_thread
        month = time.strftime("%Y-%m", time.gmtime())
        key_id = next(iter(services.tenants.list_keys("acme"))).key_id
        assert billed(key_id, month) == 2  # the two 200s; the 503 billed nothing


def test_on_the_loop_the_registry_never_waits_for_a_load(services):
    """Under NO_WAIT a model not loaded yet, or a registry another thread holds (it may
    be loading a model), is WouldWait at once, never a wait; a loaded model is served."""
    from finmaas.nowait import NO_WAIT, WouldWait

    registry = services.registry
    token = NO_WAIT.set(True)
    try:
        with pytest.raises(WouldWait):
            registry.model("credit-risk", "1")  # not loaded
        NO_WAIT.set(False)
        loaded = registry.model("credit-risk", "1")
        NO_WAIT.set(True)
        assert registry.model("credit-risk", "1") is loaded
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with registry._lock:
                held.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        assert held.wait(10)
        try:
            with pytest.raises(WouldWait):
                registry.model("credit-risk", "1")
        finally:
            release.set()
            holder.join()
    finally:
        NO_WAIT.reset(token)


def test_a_busy_key_store_sends_the_key_check_to_a_thread_and_leaves_the_loop_free(
        services, api_key):
    """The gateway checks keys on the event loop; when another thread holds the key
    store, the check moves to a worker thread and waits there, while /health answers."""
    from finmaas.api import create_app
    from finmaas.gateway import LocalGateway

    services.offload = True
    app = LocalGateway(create_app(services), services.tenants,
                       quota_seed=services.metering.count_requests)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with services.tenants._lock:
            held.set()
            release.wait(10)

    with TestClient(app) as client:
        holder = threading.Thread(target=hold)
        holder.start()
        assert held.wait(10)
        answers: dict[str, int] = {}
        waiting = threading.Thread(target=lambda: answers.update(models=client.get(
            "/v1/models", headers={"x-api-key": api_key}).status_code))
        try:
            waiting.start()
            time.sleep(0.2)  # the key check is now waiting for the store, in a thread
            assert client.get("/health").status_code == 200
            assert waiting.is_alive()
        finally:
            release.set()
            holder.join()
            waiting.join()
    assert answers == {"models": 200}


def test_the_servers_checkpoints_run_beside_the_commits_not_in_them(settings):
    """With ``checkpoint_in_background`` no commit checkpoints (automatic checkpoints are
    off on the writing connection), yet the log still reaches the database file: the
    background thread folds it in."""
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal

    from finmaas.metering import UsageRecord
    from finmaas.metering.sqlite import SQLiteMeteringStore

    store = SQLiteMeteringStore(settings.sqlite_path)
    assert store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    stop = store.checkpoint_in_background(every_seconds=0.05)
    try:
        assert store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        size = settings.sqlite_path.stat().st_size
        t0 = datetime(2026, 12, 1, tzinfo=UTC)
        for i in range(2000):  # twice the pages an automatic checkpoint would wait for
            store.record(UsageRecord(
                record_id=f"r{i}", request_id=f"r{i}", tenant="acme", key_id="k",
                model="credit-risk", version="1", units=1, unit_price=Decimal("0.0005"),
                amount=Decimal("0.0005"), latency_ms=1, timestamp=t0 + timedelta(seconds=i),
                fingerprint="f" * 64))
        deadline = time.monotonic() + 30
        while settings.sqlite_path.stat().st_size <= size:  # folded in by the thread
            assert time.monotonic() < deadline, "no checkpoint reached the database file"
            time.sleep(0.05)
    finally:
        stop.set()
    assert store.count_requests("k", "2026-12") == 2000
