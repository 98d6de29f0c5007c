"""The embedded SQLite file that the local tenant and metering stores share: private to
its owner, never waiting long for a lock, and refused (not silently recreated) when
damaged."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from .nowait import NO_WAIT, WouldWait

# A write that cannot get the lock within this many seconds fails (503, Retry-After)
# instead of holding a worker thread, and a client, for half a minute.
BUSY_TIMEOUT_SECONDS = 2.0
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


class StoreDamaged(ValueError):
    """The database file exists but is not a usable store; its path is in the message."""


def _create(path: Path) -> None:
    """Create the file whole: an empty WAL database written aside, then linked into place
    (so a zero-length file is never a store in the making, and two processes starting at
    once both end up with the same file)."""
    fd, tmp = tempfile.mkstemp(prefix=".finmaas-", suffix=".sqlite3", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, PRIVATE_FILE)
        conn = sqlite3.connect(tmp)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.close()
        with contextlib.suppress(FileExistsError):  # another process won the race
            os.link(tmp, path)
    finally:
        for leftover in (tmp, f"{tmp}-wal", f"{tmp}-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)


def private_home(home: Path) -> Path:
    """The store's folder, created owner-only (0700): it holds the database, the demo key
    and their lock files."""
    if not home.exists():
        home.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    return home


def connect(path: Path) -> sqlite3.Connection:
    """One connection per store. WAL so readers never block the writer; NORMAL sync is
    durable across a process crash (a committed record survives SIGKILL). Files are 0600
    and a home this creates is 0700: the file holds all usage and the key hashes."""
    private_home(path.parent)
    if not path.exists():
        _create(path)
    elif path.stat().st_size == 0:
        raise StoreDamaged(
            f"{path} is empty (0 bytes), so its tenants, keys and usage are gone; restore it "
            "from a backup, or delete it to start a new store")
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(FileNotFoundError, PermissionError):
            if file.stat().st_mode & 0o777 != PRIVATE_FILE:
                file.chmod(PRIVATE_FILE)
    try:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                               timeout=BUSY_TIMEOUT_SECONDS)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        raise  # locked or busy: a fault to retry, not damage
    except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed"
        raise StoreDamaged(f"{path} is not a usable FinMaaS store ({exc}); restore it from "
                           "a backup, or move it aside to start a new store") from exc
    conn.row_factory = sqlite3.Row
    return conn


@contextlib.contextmanager
def using(conn: sqlite3.Connection, lock: threading.Lock) -> Iterator[sqlite3.Connection]:
    """A store's connection, under the store's lock. While ``NO_WAIT`` is set (the local
    server's event loop) it is taken only if free, with SQLite's busy timeout off: a
    lock another thread holds, or a database another process is writing, is WouldWait
    at once instead of a wait of up to ``BUSY_TIMEOUT_SECONDS``. SQLite refuses a busy
    write at ``BEGIN IMMEDIATE``, before anything is written."""
    if not NO_WAIT.get():
        with lock:
            yield conn
        return
    if not lock.acquire(blocking=False):
        raise WouldWait("the store is in use by another thread")
    try:
        conn.execute("PRAGMA busy_timeout=0")
        try:
            yield conn
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise WouldWait(str(exc)) from exc
            raise
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
    finally:
        lock.release()
