"""Errors in OpenAI's shape: ``{"error": {message, type, param, code}}``, with the status
OpenAI would answer (so each SDK raises its matching class)."""

from __future__ import annotations

from typing import Any

from streaming.server.errors import JSONResponse, status_for_code

from streaming.dialects import Failure
from streaming.errors import StreamingError

__all__ = ["error_body", "failure_error", "openai_error", "openai_status", "stream_error"]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(status: int, message: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def openai_status(status: int, code: str) -> int:
    """Our status as OpenAI answers: a request it cannot take is 400 (not 422), an unknown
    model 404, a cancelled generation 409 (not 499)."""
    if code == "unknown_generator":
        return 404
    if status == 422:
        return 400
    if status == 499:
        return 409
    return status


def _message(message: str, suggestion: str | None) -> str:
    return message + (f" ({suggestion})" if suggestion else "")


def _raised(exc: StreamingError) -> tuple[int, dict[str, Any]]:
    status = openai_status(exc.status, exc.code)
    param = exc.details.get("param")
    code = "model_not_found" if exc.code == "unknown_generator" else exc.code
    body = error_body(status, _message(exc.message, exc.suggestion), code, param if isinstance(param, str) else None)
    return status, body


def openai_error(exc: StreamingError) -> JSONResponse:
    """A runtime error raised by a route, as OpenAI's error response."""
    status, body = _raised(exc)
    return JSONResponse(body, status_code=status)


def failure_error(failure: Failure) -> tuple[int, dict[str, Any]]:
    """A generation that failed or was cancelled: the status and body to answer with.

    The status is the one of the failure's code (as the native routes map error classes,
    :func:`~streaming.server.errors.status_for_code`): a model refusing the conversation
    (``invalid_request``) is a 400 with its reason, not a 500."""
    status = openai_status(status_for_code(failure.code), failure.code)
    return status, error_body(status, _message(failure.message, failure.suggestion), failure.code)


def stream_error(problem: Failure | StreamingError) -> dict[str, Any]:
    """The error frame that ends a stream (the SDKs raise it)."""
    return (failure_error(problem) if isinstance(problem, Failure) else _raised(problem))[1]
