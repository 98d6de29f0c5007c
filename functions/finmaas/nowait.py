"""Code that may run on the local server's event loop must not wait there: while
``NO_WAIT`` is set (``api.app.Services.serve`` sets it for a small prediction), a store or
cache that would wait for a lock, a writer or the network raises ``WouldWait`` instead,
before it has changed anything, and the caller runs the whole call again in a worker
thread, where waiting is allowed."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

NO_WAIT: ContextVar[bool] = ContextVar("finmaas_no_wait", default=False)


class WouldWait(Exception):
    """Raised instead of waiting while ``NO_WAIT`` is set; nothing was changed."""


WOULD_WAIT: Any = object()  # what ``try_now`` returns when the call would have waited


def try_now(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` with ``NO_WAIT`` set: its result, or ``WOULD_WAIT`` (then nothing
    was changed, and the caller runs it again where waiting is allowed). The flag is off
    again before this returns, so a worker thread the caller hops to may wait."""
    token = NO_WAIT.set(True)
    try:
        return fn(*args)
    except WouldWait:
        return WOULD_WAIT
    finally:
        NO_WAIT.reset(token)
