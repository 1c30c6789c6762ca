"""The demo chat page (``/``), the browser client (``/static/streaming-client.js``), the
page's own assets (``/static/<name>``) and ``/generators`` (what the page offers to pick).

Files come from the ``clients`` package (``clients/js`` and ``clients/static``), so they
ship in the wheel; only names found in those folders are served (no path traversal).
"""

from __future__ import annotations

from pathlib import Path

import streaming.client as client_package
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route
from streaming.server.context import runtime_of
from streaming.server.errors import JSONResponse

from streaming.errors import NotFoundError
from streaming.readiness import describe

__all__ = ["ROUTES", "asset_path"]

_ROOT = Path(client_package.__file__).resolve().parent
_JS = _ROOT / "js"
_STATIC = _ROOT / "static"

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def asset_path(name: str) -> Path:
    """The file behind ``/static/<name>``. Raises NotFoundError."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise NotFoundError(f"no static file {name!r}")
    for folder in (_JS, _STATIC):
        path = folder / name
        try:
            found = path.is_file() and path.suffix in _TYPES
        except (OSError, ValueError):  # a name too long for the file system, a NUL
            found = False
        if found:
            return path
    raise NotFoundError(f"no static file {name!r}")


def _file(path: Path) -> Response:
    return FileResponse(path, media_type=_TYPES[path.suffix], headers=_HEADERS)


async def index(request: Request) -> Response:
    return _file(_STATIC / "index.html")


async def asset(request: Request) -> Response:
    return _file(asset_path(request.path_params["name"]))


async def generators(request: Request) -> Response:
    """The registered names, and for each whether it answers a chat as it is (and if not,
    why): what the demo page and ``streaming chat`` offer."""
    registry = runtime_of(request).generators
    names = registry.names()
    details = [await describe(name, registry.get(name)) for name in names]
    return JSONResponse({"generators": names, "details": details})


ROUTES = [
    Route("/", index, methods=["GET", "HEAD"]),
    Route("/static/{name}", asset, methods=["GET", "HEAD"]),
    Route("/generators", generators, methods=["GET"]),
]
