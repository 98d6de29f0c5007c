"""Lambda SnapStart for the inference function: what runs before Lambda snapshots an
initialised environment, and what every environment restored from it re-creates.

Before the snapshot (``warm``): everything the first requests would pay for is done once,
into the snapshot: every production model opened through the one door (graph, tokenizer,
explainer data), its example predicted (and explained: the TreeSHAP tables are built), the
OpenAPI document built. Nothing is billed: the models are called directly, not through
the API.

After a restore (``renew``): what must not be shared between the many environments one
snapshot becomes. Python's ``random`` is re-seeded from the OS; AWS clients are made anew
(a client holds connections and cached credentials, which must not outlive the snapshot);
the tenant directory's cache of keys and tenants is emptied.

The hooks are registered with ``snapshot_restore_py``, which Lambda's Python runtimes
include; elsewhere (tests, the local server) there is nothing to register with.
"""

from __future__ import annotations

import logging
import random
from typing import Any

log = logging.getLogger("finmaas.snapstart")


def warm(services: Any, app: Any = None) -> list[str]:
    """Open and exercise every production version; the names warmed. Never raises: a
    snapshot without a warm model is slower, a failed snapshot is a failed deploy."""
    try:
        return _warm(services, app)
    except Exception as exc:
        log.warning("warming before the snapshot failed", extra={"error": str(exc)})
        return []


def _warm(services: Any, app: Any) -> list[str]:
    warmed = []
    for entry in services.registry.catalogue():
        name, version = entry["name"], entry["default_version"]
        try:
            model = services.registry.model(name, version)
            example = model.card.raw.get("example")
            if isinstance(example, dict):
                model.predict([example])
                if model.explainer is not None:
                    model.serve("explanation", [example])
        except Exception as exc:  # a broken version must not keep the function from starting
            log.warning("not warmed before the snapshot", extra={"model": name,
                                                                 "error": str(exc)})
            continue
        warmed.append(f"{name} v{version}")
    if app is not None:
        try:
            app.openapi()
        except Exception as exc:
            log.warning("OpenAPI document not built before the snapshot",
                        extra={"error": str(exc)})
    return warmed


def clients_of(services: Any) -> list[Any]:
    """The objects holding an AWS client: the model store, the usage and tenant stores."""
    return [obj for obj in (services.registry.store, services.metering, services.tenants)
            if hasattr(getattr(obj, "client", None), "meta")]


def renew(services: Any) -> None:
    """Make this restored environment its own."""
    import boto3

    random.seed()  # from os.urandom: restored copies must not draw the same numbers
    services.directory.clear()
    services.registry.forget_moving_parts()  # aliases may have moved since the snapshot
    for holder in clients_of(services):
        meta = holder.client.meta
        try:
            holder.client = boto3.client(meta.service_model.service_name,
                                         region_name=meta.region_name)
        except Exception as exc:  # keep the old client rather than fail every request
            log.error("AWS client not renewed after the restore",
                      extra={"service": meta.service_model.service_name, "error": str(exc)})


def register(services: Any, app: Any = None) -> bool:
    """Register the hooks with Lambda's runtime; False where there is no such runtime."""
    try:
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:
        return False
    register_before_snapshot(warm, services, app)
    register_after_restore(renew, services)
    return True
