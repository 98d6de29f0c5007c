"""Every ``MAAS_*`` environment variable is read here and nowhere else.

An explicit argument always beats the environment: ``Settings.from_env(home=...)``.
With nothing set, every entry point runs on the embedded defaults: the repository's
``model_store/`` and a SQLite file under ``MAAS_HOME`` (see ``default_home``: never the
current directory).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_MODEL_STORE = REPO_ROOT / "model_store"
# Running from a source checkout (make serve, the tests, an editable install) rather
# than from an installed package, whose parents[2] is some lib/ directory.
CHECKOUT: Path | None = REPO_ROOT if (REPO_ROOT / "pyproject.toml").is_file() \
    and Path(__file__).resolve().parent.parent.name == "functions" else None

# Environment variable names, in one place.
ENV_HOME = "MAAS_HOME"
ENV_MODEL_STORE = "MAAS_MODEL_STORE"
ENV_USAGE_TABLE = "MAAS_USAGE_TABLE"
ENV_ROLLUPS_TABLE = "MAAS_ROLLUPS_TABLE"
ENV_TENANTS_TABLE = "MAAS_TENANTS_TABLE"
ENV_STAGE = "MAAS_STAGE"
ENV_ALIAS_TTL = "MAAS_ALIAS_TTL_SECONDS"
ENV_TENANT_TTL = "MAAS_TENANT_CACHE_SECONDS"
ENV_SESSION_CACHE = "MAAS_SESSION_CACHE_SIZE"
ENV_ORT_THREADS = "MAAS_ORT_THREADS"
ENV_CACHE_DIR = "MAAS_CACHE_DIR"
ENV_MAX_INSTANCES = "MAAS_MAX_INSTANCES"
ENV_MAX_BODY = "MAAS_MAX_BODY_BYTES"
ENV_RETENTION_DAYS = "MAAS_USAGE_RETENTION_DAYS"
ENV_ROLLUP_SHARDS = "MAAS_ROLLUP_SHARDS"
ENV_JOBS_TABLE = "MAAS_JOBS_TABLE"
ENV_BATCH_STATE_MACHINE = "MAAS_BATCH_STATE_MACHINE"
ENV_BATCH_ROOTS = "MAAS_BATCH_ROOTS"
ENV_BATCH_CHUNK_ROWS = "MAAS_BATCH_CHUNK_ROWS"
# what the `maas batch submit/status/list` client talks to (the API and a tenant's key)
ENV_API_URL = "MAAS_API_URL"
ENV_API_KEY = "MAAS_API_KEY"


def default_home(env: Mapping[str, str], checkout: Path | None = CHECKOUT) -> Path:
    """Where the embedded store lives when ``MAAS_HOME`` is unset. Never the current
    directory: ``maas`` run from elsewhere would silently start a new, empty store there.

    - In a source checkout, the repository's ``.maas``: the store ``make serve`` uses,
      whichever directory a command runs from, and the one ``make clean`` removes.
    - In an installed package, the user's data directory (XDG):
      ``$XDG_DATA_HOME/finmaas``, else ``~/.local/share/finmaas``.
    """
    if checkout is not None:
        return checkout / ".maas"
    data = env.get("XDG_DATA_HOME", "")
    if not os.path.isabs(data):  # the spec says to ignore a relative path
        user_home = env.get("HOME") or os.path.expanduser("~")
        if not os.path.isabs(user_home):  # no home at all (some sandboxes)
            return Path(tempfile.gettempdir()) / "finmaas"
        data = os.path.join(user_home, ".local", "share")
    return Path(data) / "finmaas"


def _default_threads() -> int:
    # Lambda gives one vCPU per 1,769 MB; os.cpu_count() reports the host's view, which
    # on Lambda matches the vCPUs the function may use.
    return max(1, min(os.cpu_count() or 1, 4))


@dataclass(frozen=True)
class Settings:
    """Runtime configuration of one process (a Lambda container, the local server, the CLI)."""

    home: Path = field(default_factory=lambda: default_home(os.environ))
    model_store: str = str(BUNDLED_MODEL_STORE)
    usage_table: str | None = None
    rollups_table: str | None = None
    tenants_table: str | None = None
    stage: str = "local"
    alias_ttl_seconds: float = 30.0
    # A suspension or revocation reaches a warm Lambda container within this time.
    tenant_cache_seconds: float = 5.0
    session_cache_size: int = 8
    ort_threads: int = field(default_factory=_default_threads)
    cache_dir: Path = field(default_factory=lambda: Path("/tmp/finmaas-models"))
    max_instances: int = 1000
    max_body_bytes: int = 1_000_000
    usage_retention_days: int = 400
    rollup_shards: int = 32
    jobs_table: str | None = None
    batch_state_machine: str | None = None
    # where tenants' batch jobs may read and write: <root><tenant>/ (comma-separated)
    batch_roots: tuple[str, ...] = ()
    batch_chunk_rows: int = 1000

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = dict(os.environ if env is None else env)
        s = cls()
        values: dict[str, Any] = {}
        if env.get(ENV_HOME):
            values["home"] = Path(env[ENV_HOME])
        elif "home" not in overrides:
            values["home"] = default_home(env)
        if ENV_MODEL_STORE in env:
            values["model_store"] = env[ENV_MODEL_STORE]
        for name, key in (
            (ENV_USAGE_TABLE, "usage_table"),
            (ENV_ROLLUPS_TABLE, "rollups_table"),
            (ENV_TENANTS_TABLE, "tenants_table"),
            (ENV_STAGE, "stage"),
            (ENV_JOBS_TABLE, "jobs_table"),
            (ENV_BATCH_STATE_MACHINE, "batch_state_machine"),
        ):
            if env.get(name):
                values[key] = env[name]
        for name, key, conv in (
            (ENV_ALIAS_TTL, "alias_ttl_seconds", float),
            (ENV_TENANT_TTL, "tenant_cache_seconds", float),
            (ENV_SESSION_CACHE, "session_cache_size", int),
            (ENV_ORT_THREADS, "ort_threads", int),
            (ENV_MAX_INSTANCES, "max_instances", int),
            (ENV_MAX_BODY, "max_body_bytes", int),
            (ENV_RETENTION_DAYS, "usage_retention_days", int),
            (ENV_ROLLUP_SHARDS, "rollup_shards", int),
            (ENV_BATCH_CHUNK_ROWS, "batch_chunk_rows", int),
        ):
            if env.get(name):
                try:
                    values[key] = conv(env[name])
                except ValueError as exc:
                    raise ValueError(
                        f"{name}={env[name]!r} is not a valid {conv.__name__}"
                    ) from exc
        if env.get(ENV_BATCH_ROOTS):
            values["batch_roots"] = tuple(r.strip() for r in env[ENV_BATCH_ROOTS].split(",")
                                          if r.strip())
        if ENV_CACHE_DIR in env:
            values["cache_dir"] = Path(env[ENV_CACHE_DIR])
        values.update(overrides)
        settings = replace(s, **values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.session_cache_size < 1:
            raise ValueError("MAAS_SESSION_CACHE_SIZE must be at least 1")
        if self.ort_threads < 1:
            raise ValueError("MAAS_ORT_THREADS must be at least 1")
        if not 1 <= self.max_instances <= 100_000:
            raise ValueError("MAAS_MAX_INSTANCES must be between 1 and 100000")
        if not 1 <= self.rollup_shards <= 1000:
            raise ValueError("MAAS_ROLLUP_SHARDS must be between 1 and 1000")
        if not 1 <= self.batch_chunk_rows <= 10_000:
            raise ValueError("MAAS_BATCH_CHUNK_ROWS must be between 1 and 10000")
        for root in self.batch_roots:
            if not root.startswith(("s3://", "file:///")):
                raise ValueError(f"MAAS_BATCH_ROOTS: {root!r} is not an s3:// or file:/// URL")
        tables = [self.usage_table, self.rollups_table]
        if any(tables) and not all(tables):
            raise ValueError("set both MAAS_USAGE_TABLE and MAAS_ROLLUPS_TABLE, or neither")

    @property
    def uses_dynamodb(self) -> bool:
        return bool(self.usage_table and self.rollups_table)

    @property
    def allowed_batch_roots(self) -> tuple[str, ...]:
        """``MAAS_BATCH_ROOTS``; locally, with none set, ``$MAAS_HOME/batch/``; in AWS
        (a jobs table) none unless set: the stack sets its batch bucket."""
        if self.batch_roots or self.jobs_table:
            return self.batch_roots
        return (f"file://{(self.home / 'batch').resolve()}/",)

    @property
    def sqlite_path(self) -> Path:
        return self.home / "finmaas.sqlite3"
