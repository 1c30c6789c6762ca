"""What a route reads from its request: the app's runtime, settings and auth, and the body.

``create_app`` puts the runtime, the settings and the auth config on ``app.state``; routes
reach them only through these helpers. This module imports no route and no app (routes
import it; the app imports the routes), so the server package has no import circle.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from streaming.server.auth import AuthConfig
from streaming.server.errors import validation_error
from streaming.server.settings import ServerSettings

from streaming.errors import MalformedRequestError, PayloadTooLargeError
from streaming.runtime import Runtime
from streaming.textcheck import loads

__all__ = ["auth_of", "read_json", "runtime_of", "settings_of"]


def runtime_of(request: Any) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def settings_of(request: Any) -> ServerSettings:
    settings: ServerSettings = request.app.state.settings
    return settings


def auth_of(request: Any) -> AuthConfig:
    auth: AuthConfig = request.app.state.auth
    return auth


async def read_json(request: Request, model: type[BaseModel] | None = None) -> Any:
    """The body as JSON (validated into ``model`` if given): the door every route's body
    goes through, before anything is stored or run.

    Raises:
        PayloadTooLargeError: the body is over the server's limit.
        MalformedRequestError: it is not JSON, or not text a route can take (codes
            ``too_deep``, ``invalid_text``, ``invalid_number``: see
            :mod:`streaming.textcheck`).
        InvalidRequestError: it does not fit ``model``.
    """
    settings = settings_of(request)
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit():
        if len(declared) > 18 or int(declared) > limit:
            raise PayloadTooLargeError(f"the body is over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLargeError(f"the body is over {limit} bytes")
    data = loads(body, max_depth=settings.max_json_depth)
    if model is None:
        return data
    if not isinstance(data, dict):
        raise MalformedRequestError("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from exc
