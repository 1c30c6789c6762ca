"""``/files/{id}``: a conversation and its blocks."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from server.app import runtime_of

__all__ = ["ROUTES"]


async def read(request: Request) -> Response:
    file = await runtime_of(request).get_file(request.path_params["id"])
    return JSONResponse(file.model_dump(mode="json"))


ROUTES = [Route("/files/{id}", read, methods=["GET"])]
