"""``maas serve``: the local API (gateway + app) under uvicorn, with a demo tenant and key
so the printed curl works as pasted."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..config import Settings
from ..embedded import private_home
from .common import err, open_tenants


def demo_key(settings: Settings) -> str:
    """The demo tenant's key, created on first run. Its clear text is kept only in
    ``$MAAS_HOME/demo-key`` (mode 600) so every `make serve` can print a working curl.

    Several servers may start at once on a fresh home: a lock file makes the first create
    the tenant and key while the others wait, then read the same key."""
    from ..keys import DEMO_PLAN, EVENTS_TENANT, LocalKeyIssuer
    from ..tenants.base import hash_key

    private_home(settings.home)
    path = settings.home / "demo-key"
    with _exclusive(settings.home / "demo-key.lock"):
        tenants = open_tenants(settings)
        if path.exists():
            secret = path.read_text().strip()
            found = tenants.find_key_by_hash(hash_key(secret))
            if found and found.active:
                return secret
        tenants.ensure_tenant(EVENTS_TENANT, DEMO_PLAN)
        issued = LocalKeyIssuer(tenants).create(EVENTS_TENANT)
        _write_private(path, issued.secret + "\n")
    print(f"created demo tenant {EVENTS_TENANT!r} (plan {DEMO_PLAN}) and key "
          f"{issued.key.key_id}", file=sys.stderr)
    return issued.secret


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """An advisory lock across processes, released when the file closes (also when the
    process dies). Without fcntl (Windows) concurrent first runs may each create a key;
    every key printed still works."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with os.fdopen(os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
                   "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _write_private(path: Path, text: str) -> None:
    """Readable by the owner only from its first byte, and never seen half-written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def local_app(settings: Settings) -> Any:
    from ..api import build_services, create_app
    from ..batch.local import LocalJobRunner
    from ..gateway import LocalGateway
    from ..metering.sqlite import SQLiteMeteringStore

    services = build_services(settings, offload=True)
    metering = services.metering
    if isinstance(metering, SQLiteMeteringStore):  # checkpoints off the requests' path
        metering.checkpoint_in_background()
    seed = getattr(metering, "count_requests", None)
    gateway = LocalGateway(create_app(services), services.tenants, quota_seed=seed)
    runner = services.batch.runner
    if isinstance(runner, LocalJobRunner):  # jobs a previous server left running
        for job_id in runner.resume():
            err(f"resuming batch job {job_id} where the last server left it")
    return gateway


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = Settings.from_env()
    if settings.uses_dynamodb or settings.tenants_table:
        err("maas serve runs the embedded stores; unset MAAS_*_TABLE to serve locally")
        return 2
    key = demo_key(settings)
    app = local_app(settings)
    examples, problems = servable_models(app.app.state.services.registry)
    for name, problem in problems.items():
        err(f"model {name} is not served: {problem}")
    if not examples:
        err(f"no model in {settings.model_store} can be served; the API starts empty")
    model = "credit-risk" if "credit-risk" in examples else next(iter(examples), "credit-risk")
    example = json.dumps({"instances": [examples.get(model, {})]}, separators=(",", ":"))
    base = f"http://{args.host}:{args.port}"
    print(f"\nFinMaaS local API on {base}\n"
          f"models: {settings.model_store}\n"
          f"store: {app.tenants.location}\n"
          f"API docs: {base}/docs\n\nTry it:\n\n"
          f"curl -s {base}/v1/models/{model}/predict \\\n"
          f"  -H 'x-api-key: {key}' \\\n"
          f"  -H 'content-type: application/json' \\\n"
          f"  -d '{example}'\n", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                timeout_graceful_shutdown=5)
    return 0


def _has_a_version(store: Any, name: str) -> bool:
    """Whether ``name/`` holds a version: a folder named like one, with a card."""
    from ..cards import VERSION_RE
    from ..modelstore import ObjectNotFound

    for folder in store.list_dirs(name):
        if VERSION_RE.match(folder):
            try:
                store.read_bytes(f"{name}/{folder}/card.json")
                return True
            except ObjectNotFound:
                continue
    return False


def servable_models(registry: Any) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Each model's production example, and why any model cannot be served. One garbled
    card or a missing ``aliases.json`` is reported and skipped (the API answers 503 or 404
    for that model alone); it does not keep the server from starting."""
    from ..errors import ApiError

    examples: dict[str, dict[str, Any]] = {}
    problems: dict[str, str] = {}
    for name in registry.names():
        try:
            card = registry.card(name, registry.resolve(name))
        except ApiError as exc:
            if exc.code == "model_not_found":
                if not _has_a_version(registry.store, name):
                    continue  # not a model at all (the bundled store's recipes/ folder)
                problems[name] = f"{name}/aliases.json is missing"
            else:
                problems[name] = exc.message
            continue
        example = card.raw.get("example")
        examples[name] = example if isinstance(example, dict) else {}
    return examples, problems


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the local API (gateway + app) with uvicorn")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=cmd_serve)
