"""``/healthz``: liveness."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from streaming.server.context import runtime_of
from streaming.server.errors import JSONResponse

__all__ = ["ROUTES"]


async def healthz(request: Request) -> Response:
    runtime = runtime_of(request)
    body = {"status": "ok", "running": runtime.running_count, "store": runtime.store.url.split("@")[-1]}
    if runtime.dispatch is not None:  # an API process: the live workers and what they host
        body |= await runtime.dispatch.health()
    return JSONResponse(body)


ROUTES = [Route("/healthz", healthz, methods=["GET"])]
