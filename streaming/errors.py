"""One exception tree for the runtime.

Every error the runtime raises on purpose is a :class:`StreamingError`. Each carries a
stable machine ``code`` (the ``code`` of the JSON error on the wire), an HTTP ``status``
that the server maps it to, a human ``message`` and an optional ``suggestion``::

    StreamingError
    ├── InvalidRequestError            422 invalid_request  (a body that is JSON but wrong)
    │   ├── UnknownGeneratorError      422 unknown_generator
    │   └── UnsupportedCapabilityError 422 unsupported_capability  (streaming.capabilities)
    ├── MalformedRequestError          400 malformed_request  (not JSON at all)
    ├── UnauthorizedError              401 unauthorized  (no or wrong credentials)
    ├── ForbiddenError                 403 forbidden  (a read token used beyond its scope)
    ├── NotFoundError                  404 not_found
    ├── ConflictError                  409 conflict
    │   ├── IllegalTransitionError     409 illegal_transition (a lifecycle rule was broken)
    │   └── ToolCallConflictError      409 tool_call_conflict (unknown or answered call_id)
    ├── PayloadTooLargeError           413 payload_too_large
    ├── LimitExceededError             429 limit_exceeded
    ├── GenerationCancelledError       499 cancelled  (raised into a plugin that keeps writing)
    ├── GenerationFailedError          500 <code of the failure>  (client side: the stream ended failed)
    ├── PluginError                    500 plugin_error  (the plugin raised)
    ├── ToolTimeoutError               504 tool_timeout
    ├── ModelUnavailableError          503 model_unavailable  (a model file or its extra is missing)
    ├── MaxToolRoundsError             500 max_tool_rounds
    └── StoreError                     503 store_error
        └── StoreUnavailableError      503 store_unavailable

Errors of lower libraries (pydantic's ``ValidationError``, ``json.JSONDecodeError``) are
mapped into this tree where the layers meet (``server/errors.py``), never leaked raw.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "ConflictError",
    "ForbiddenError",
    "GenerationCancelledError",
    "GenerationFailedError",
    "IllegalTransitionError",
    "InvalidRequestError",
    "LimitExceededError",
    "MalformedRequestError",
    "MaxToolRoundsError",
    "ModelUnavailableError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PluginError",
    "StoreError",
    "StoreUnavailableError",
    "StreamingError",
    "ToolCallConflictError",
    "ToolTimeoutError",
    "UnauthorizedError",
    "UnknownGeneratorError",
]


class StreamingError(Exception):
    """Base of every error the runtime raises on purpose."""

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500

    def __init__(
        self,
        message: str,
        *,
        suggestion: str | None = None,
        code: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.suggestion = suggestion
        self.details = details or {}
        if code is not None:
            # An instance may refine the class code (e.g. a failure relayed from a store).
            self.code = code  # type: ignore[misc]

    def to_dict(self) -> dict[str, Any]:
        """The ``{code, message, suggestion}`` object used on the wire."""
        out: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "suggestion": self.suggestion,
        }
        out.update(self.details)
        return out


class InvalidRequestError(StreamingError):
    code = "invalid_request"
    status = 422


class UnknownGeneratorError(InvalidRequestError):
    code = "unknown_generator"


class MalformedRequestError(StreamingError):
    code = "malformed_request"
    status = 400


class UnauthorizedError(StreamingError):
    code = "unauthorized"
    status = 401


class ForbiddenError(StreamingError):
    code = "forbidden"
    status = 403


class NotFoundError(StreamingError):
    code = "not_found"
    status = 404


class ConflictError(StreamingError):
    code = "conflict"
    status = 409


class IllegalTransitionError(ConflictError):
    code = "illegal_transition"


class ToolCallConflictError(ConflictError):
    code = "tool_call_conflict"


class PayloadTooLargeError(StreamingError):
    code = "payload_too_large"
    status = 413


class LimitExceededError(StreamingError):
    code = "limit_exceeded"
    status = 429


class GenerationCancelledError(StreamingError):
    """Raised into a plugin that writes to a generation that was cancelled."""

    code = "cancelled"
    status = 499


class GenerationFailedError(StreamingError):
    """Client side: the generation ended with ``generation.failed``."""

    code = "generation_failed"
    status = 500


class PluginError(StreamingError):
    code = "plugin_error"
    status = 500


class ModelUnavailableError(StreamingError):
    """A model (its file, or the extra that runs it) is not installed."""

    code = "model_unavailable"
    status = 503


class ToolTimeoutError(StreamingError):
    code = "tool_timeout"
    status = 504


class MaxToolRoundsError(StreamingError):
    code = "max_tool_rounds"
    status = 500


class StoreError(StreamingError):
    code = "store_error"
    status = 503


class StoreUnavailableError(StoreError):
    code = "store_unavailable"
