"""Errors in Anthropic's shape: ``{"type": "error", "error": {"type", "message"}}``, with the
status Anthropic would answer (so its SDKs raise their matching class). The status of a
runtime error is the one the OpenAI routes answer (:func:`~streaming.server.openai.errors.openai_status`:
a request that cannot be taken is 400, an unknown model 404)."""

from __future__ import annotations

from typing import Any

from streaming.server.errors import JSONResponse, status_for_code
from streaming.server.openai.errors import openai_status

from streaming.dialects import Failure
from streaming.errors import StreamingError

__all__ = ["anthropic_error", "error_body", "error_object", "failure_error", "failure_object", "stream_error"]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def _message(message: str, suggestion: str | None) -> str:
    return message + (f" ({suggestion})" if suggestion else "")


def error_object(status: int, message: str, code: str) -> dict[str, Any]:
    """The inner ``error``: Anthropic's ``type`` and ``message``, and our ``code``."""
    kind = _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": kind, "message": message, "code": code}


def error_body(status: int, message: str, code: str) -> dict[str, Any]:
    return {"type": "error", "error": error_object(status, message, code)}


def _raised(exc: StreamingError) -> tuple[int, dict[str, Any]]:
    status = openai_status(exc.status, exc.code)
    return status, error_body(status, _message(exc.message, exc.suggestion), exc.code)


def anthropic_error(exc: StreamingError) -> JSONResponse:
    """A runtime error raised by a route, as Anthropic's error response."""
    status, body = _raised(exc)
    headers = {"retry-after": str(int(exc.details.get("retry_after", 1)))} if status == 429 else None
    return JSONResponse(body, status_code=status, headers=headers)


def failure_error(failure: Failure) -> tuple[int, dict[str, Any]]:
    """A generation that failed or was cancelled: the status and body to answer with."""
    status = openai_status(status_for_code(failure.code), failure.code)
    return status, error_body(status, _message(failure.message, failure.suggestion), failure.code)


def failure_object(failure: Failure) -> dict[str, Any]:
    """The ``error`` object of the ``error`` event that ends a stream that failed."""
    return failure_error(failure)[1]["error"]  # type: ignore[no-any-return]


def stream_error(exc: StreamingError) -> dict[str, Any]:
    """The ``error`` event of a stream refused after its headers went out."""
    return _raised(exc)[1]
