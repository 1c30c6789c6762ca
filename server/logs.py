"""Log formats for ``streaming serve``: plain text, or one JSON object per line; secrets
redacted in both.

A browser sends its key as ``?access_token=`` (EventSource and WebSocket cannot set a
header), and uvicorn logs every request's path with its query: the access log
(``uvicorn.access``) and the WebSocket lines (``uvicorn.error``). :class:`RedactSecrets`
replaces the value of every query parameter that names a secret (``access_token``,
``token``, ``key``, ``signature``, ``password``...) and the password of any URL
(``redis://:pw@host``) with ``***``, in the message and its arguments, before any handler
formats the record.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

__all__ = ["JsonFormatter", "RedactSecrets", "configure_logging", "redact"]

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

#: a query parameter whose name says it holds a secret, and its value
_QUERY_SECRET = re.compile(
    r"(?i)([?&;](?:[\w.%-]*(?:token|key|secret|signature|sig|password|passwd|pwd|auth|credential|session)"
    r"[\w.%-]*)=)[^&;#\s\"'\\]*"
)
#: the password of a URL: ``scheme://user:password@host``
_URL_PASSWORD = re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^:/@\s\"']*:)[^@/\s\"']*(@)")

#: a bearer credential, as an ``Authorization`` header is written
_BEARER = re.compile(r"(?i)\b(bearer\s+)[\w.~+/=-]+")

#: the loggers whose records carry request paths with their query
_URL_LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn")


def redact(text: str) -> str:
    """``text`` with secret query values, URL passwords and bearer credentials replaced
    by ``***``."""
    if "=" in text:
        text = _QUERY_SECRET.sub(r"\1***", text)
    if "@" in text:
        text = _URL_PASSWORD.sub(r"\1***\2", text)
    return _BEARER.sub(r"\1***", text)


def _redacted(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactSecrets(logging.Filter):
    """Redacts (never drops) a record: its message and each string argument, so
    formatters that read the arguments (uvicorn's access formatter) see them redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(_redacted(a) for a in args)
        elif isinstance(args, dict):
            record.args = {k: _redacted(v) for k, v in args.items()}
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", ...}`` with every ``extra`` field (such as
    ``generation_id``) as a key of its own, so logs can be searched by generation."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = _redacted(value)
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


class _RedactingText(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """The root handler in ``fmt``, and redaction on every logger that logs request
    paths (kept when uvicorn configures its own handlers later: a logger's filters are
    not reset by ``logging.config``)."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_RedactingText("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in _URL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
