"""The web console: models, "try it", usage and bill, for people.

Its pages are open (as ``/docs``) and hold no data: the browser script asks the public
API for everything, with the key the visitor typed, kept in the tab's session storage and
sent as ``x-api-key`` only (never in a URL or a cookie). Every call it makes is one a
user could make with curl. Charts are drawn by Chart.js, pinned and served from here.
"""

from __future__ import annotations

import html
from importlib.resources import files
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

HERE = files(__name__)
PAGES = {"models": "Models", "model": "Model", "usage": "Usage and bill"}
# The pages' own scripts and styles only; data only from this origin's API.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; "
                               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
_SHELL = (HERE / "shell.html").read_text(encoding="utf-8")


def _page(request: Request, page: str, model: str = "") -> Response:
    root = request.scope.get("root_path", "").rstrip("/")
    body = (_SHELL.replace("{root}", html.escape(root, quote=True))
            .replace("{page}", page)
            .replace("{model}", html.escape(model, quote=True))
            .replace("{title}", html.escape(f"{PAGES[page]}{' · ' + model if model else ''}")))
    return Response(body, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)


async def models(request: Request) -> Response:
    return _page(request, "models")


async def model(request: Request) -> Response:
    return _page(request, "model", request.path_params["name"])


async def usage(request: Request) -> Response:
    return _page(request, "usage")


async def home(request: Request) -> Response:
    root = request.scope.get("root_path", "").rstrip("/")
    return RedirectResponse(f"{root}/console/", status_code=307)


def routes() -> list[Any]:
    return [
        Route("/console", home, methods=["GET", "HEAD"], include_in_schema=False),
        Route("/console/", models, methods=["GET", "HEAD"], include_in_schema=False),
        Route("/console/models/{name}", model, methods=["GET", "HEAD"],
              include_in_schema=False),
        Route("/console/usage", usage, methods=["GET", "HEAD"], include_in_schema=False),
        Mount("/console/static", app=StaticFiles(directory=str(HERE / "static")),
              name="console-static"),
    ]
