"""The web console: models, "try it", usage and bill, for people.

Its pages are open (as ``/docs``) and hold no data: the browser script asks the public
API for everything, with the key the visitor typed, kept in the tab's session storage and
sent as ``x-api-key`` only (never in a URL or a cookie). Every call it makes is one a
user could make with curl. Charts are drawn by Chart.js, pinned and served from here.
"""

from __future__ import annotations

import html
import re
from importlib.resources import files
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..errors import NotFound

HERE = files(__name__)
PAGES = {"models": "Models", "model": "Model", "usage": "Usage and bill"}
# The console's files, by name: nothing else under static/ is ever read. Served by a plain
# route (not a Mount) so they resolve the same under API Gateway's stage prefix.
STATIC = {"console.js": "text/javascript; charset=utf-8",
          "console.css": "text/css; charset=utf-8",
          "chart.umd.min.js": "text/javascript; charset=utf-8"}
PLACEHOLDER = re.compile(r"\{(root|page|model|title)\}")
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
    values = {"root": root, "page": page, "model": model,
              "title": f"{PAGES[page]}{' · ' + model if model else ''}"}
    # one pass: a value that looks like a placeholder ("{title}") is never expanded
    body = PLACEHOLDER.sub(lambda m: html.escape(values[m[1]], quote=True), _SHELL)
    return Response(body, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)


_FILES: dict[str, bytes] = {}


async def static(request: Request) -> Response:
    name = request.path_params["file"]
    if name not in STATIC:
        raise NotFound(f"no console file {name!r}", code="route_not_found")
    if name not in _FILES:
        _FILES[name] = (HERE / "static" / name).read_bytes()
    return Response(_FILES[name], media_type=STATIC[name], headers={
        "Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"})


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
        Route("/console/static/{file}", static, methods=["GET", "HEAD"],
              include_in_schema=False),
    ]
