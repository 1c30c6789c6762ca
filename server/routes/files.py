"""``/files/{id}``: a conversation and its blocks."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from streaming.server.auth import principal, require_key
from streaming.server.context import runtime_of
from streaming.server.errors import JSONResponse

from streaming.errors import NotFoundError

__all__ = ["ROUTES"]


async def read(request: Request) -> Response:
    require_key(request)
    file_id = request.path_params["id"]
    file = await runtime_of(request).get_file(file_id)
    who = principal(request)
    if who is not None and not (file.owner and hmac.compare_digest(file.owner, who.owner or "")):
        raise NotFoundError(f"no conversation {file_id!r}")
    return JSONResponse(file.model_dump(mode="json", exclude={"owner"}))


ROUTES = [Route("/files/{id}", read, methods=["GET"])]
