"""Code that may run on the local server's event loop must not wait there: while
``NO_WAIT`` is set (``api.app.Services.serve`` sets it for a small prediction), a store or
cache that would wait for a lock, a writer or the network raises ``WouldWait`` instead,
before it has changed anything, and the caller runs the whole call again in a worker
thread, where waiting is allowed."""

from __future__ import annotations

from contextvars import ContextVar

NO_WAIT: ContextVar[bool] = ContextVar("finmaas_no_wait", default=False)


class WouldWait(Exception):
    """Raised instead of waiting while ``NO_WAIT`` is set; nothing was changed."""
