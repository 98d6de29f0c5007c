"""The HTTP layer: routers that only do HTTP things and hand work to ``service``."""

from __future__ import annotations

from .app import Services, build_services, create_app

__all__ = ["Services", "build_services", "create_app"]
