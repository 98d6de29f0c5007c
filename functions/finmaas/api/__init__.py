"""The HTTP layer: routers that only do HTTP things and hand work to ``service``."""

from __future__ import annotations

from .app import LambdaApp, Services, build_services, create_app

__all__ = ["LambdaApp", "Services", "build_services", "create_app"]
