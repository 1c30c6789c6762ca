"""Exceptions to JSON errors: ``{"error": {"code", "message", "suggestion"}}``.

Where the layers meet, lower libraries' errors are mapped into the runtime's tree
(:mod:`streaming.errors`): pydantic's ``ValidationError`` to ``invalid_request`` (422), a
body that is not JSON to ``malformed_request`` (400), Starlette's HTTP errors to their
status. Anything unexpected is logged and answered as a JSON 500, never a trace.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSON
from starlette.responses import Response

import streaming.errors
from streaming.errors import InvalidRequestError, StreamingError
from streaming.events import encode_json

__all__ = ["EXCEPTION_HANDLERS", "JSONResponse", "error_response", "status_for_code", "validation_error"]


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity as null (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class JSONResponse(_StarletteJSON):
    """Starlette's JSON answer, but one that anything stored can be answered with: a lone
    surrogate (written by a plugin, or by an older version, before the door refused them)
    goes out as its JSON escape and a NaN as null, instead of a 500 on every read."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except (UnicodeEncodeError, ValueError):
            return encode_json(_finite(content)).encode()

logger = logging.getLogger("streaming.server")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "limit_exceeded",
}


#: the status of each error class's code (streaming/errors.py), as a route raising it answers
_STATUS_OF_CODE: dict[str, int] = {
    cls.code: cls.status
    for cls in vars(streaming.errors).values()
    if isinstance(cls, type) and issubclass(cls, StreamingError)
}
# Codes raised as an instance's refinement of a class, or by classes above the core.
_STATUS_OF_CODE.update(
    {
        "unsupported_capability": 422,  # UnsupportedCapabilityError (streaming.capabilities)
        "unsupported_content": 422,
        "context_length_exceeded": 422,  # an InvalidRequestError of the local model
        "upstream_timeout": 504,
        "shutdown": 503,
        "interrupted": 503,
        # refinements of malformed_request at the door (streaming.textcheck)
        "too_deep": 400,
        "invalid_text": 400,
        "invalid_number": 400,
    }
)


def status_for_code(code: str) -> int:
    """The HTTP status of an error ``code``: the one its class in :mod:`streaming.errors`
    has (``invalid_request`` 422, ``tool_timeout`` 504, ...), as a route that raised it
    would answer. For a generation that failed, whose event carries only the code.
    Unknown codes are 500, but ``upstream_*`` (an upstream model's failure) is 502."""
    status = _STATUS_OF_CODE.get(code)
    if status is not None:
        return status
    return 502 if code.startswith("upstream") else 500


def error_response(
    status: int, code: str, message: str, suggestion: str | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message, "suggestion": suggestion}
    body.update(extra)
    return JSONResponse({"error": body}, status_code=status)


def validation_error(exc: ValidationError) -> InvalidRequestError:
    """A pydantic error as an ``invalid_request`` naming each bad field."""
    problems = []
    for err in exc.errors()[:10]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        problems.append(f"{where}: {err['msg']}")
    return InvalidRequestError(
        "invalid request: " + "; ".join(problems),
        suggestion="see the route's body in docs/protocol.md or /openapi.json",
    )


async def _streaming_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StreamingError)
    headers = {}
    if exc.status == 429:
        headers["Retry-After"] = str(int(exc.details.get("retry_after", 1)))
    resp = JSONResponse({"error": exc.to_dict()}, status_code=exc.status, headers=headers)
    return resp


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    return await _streaming_error(request, validation_error(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code
    if exc.status_code == 404:
        message = f"no route {request.url.path}"
    return JSONResponse(
        {"error": {"code": code, "message": message, "suggestion": None}},
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(
        500, "internal_error", "the server hit an unexpected error", "retry; if it persists, report it"
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {
    StreamingError: _streaming_error,
    ValidationError: _validation_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
