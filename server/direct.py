"""A body write that never waits, where the HTTP server allows one: uvicorn's httptools
protocol, which ``streaming serve`` runs.

An event written through ASGI costs three coroutines (uvicorn's ``send`` and the two
Starlette wrappers above it), a message dict and uvicorn's checks before the one
``transport.write`` that matters; at a model's pace, with every token its own event, that
is about a tenth of a token's server CPU. When the response has started with chunked
encoding and its transport accepts more without pausing, :class:`DirectBody` frames the
chunk and writes it to the transport itself, exactly as uvicorn would (a test compares
the bytes); otherwise it declines and the caller sends through ASGI as usual. Nothing else
changes: the response's start, its end, heartbeats and a write that has to wait all go
through ``send``.

``streaming serve`` wraps its app in :class:`ServerSend`, which hands the server's own
``send`` down in the scope (``scope["streaming.server_send"]``); an app served any other
way simply has no direct writes.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["SERVER_SEND", "DirectBody", "ServerSend", "direct_body"]

#: where :class:`ServerSend` puts the server's ``send`` in the scope
SERVER_SEND = "streaming.server_send"

_HTTPTOOLS_CYCLE = ("uvicorn.protocols.http.httptools_impl", "RequestResponseCycle")
_CYCLE_FIELDS = ("transport", "flow", "chunked_encoding", "response_started", "response_complete", "disconnected")


class ServerSend:
    """The outermost ASGI layer of ``streaming serve``: puts the server's ``send`` in the
    scope and calls the app (no frame of its own: it returns the app's coroutine)."""

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        scope[SERVER_SEND] = send
        return self.app(scope, receive, send)


class DirectBody:
    """Writes a response body chunk straight to uvicorn's transport when it can do so at
    once (see the module's doc)."""

    __slots__ = ("cycle",)

    def __init__(self, cycle: Any) -> None:
        self.cycle = cycle

    def write(self, body: bytes) -> bool:
        """Write ``body`` as one chunk now; False (nothing written) if it cannot: the
        response has not started, is not chunked (a HEAD, an HTTP/1.0 client), has ended,
        the client is gone or going, or the transport asked the server to pause."""
        cycle = self.cycle
        transport = cycle.transport
        if (
            cycle.disconnected
            or cycle.flow.write_paused
            or cycle.response_complete
            or not cycle.response_started
            or cycle.chunked_encoding is not True
            or transport.is_closing()
        ):
            return False
        transport.write(b"%x\r\n%b\r\n" % (len(body), body))
        return True


def direct_body(scope: Scope) -> DirectBody | None:
    """A :class:`DirectBody` for this request, if its server is uvicorn's httptools
    protocol (as handed down by :class:`ServerSend`); None otherwise."""
    send = scope.get(SERVER_SEND)
    cycle = getattr(send, "__self__", None)
    if cycle is None:
        return None
    kind = type(cycle)
    if (kind.__module__, kind.__qualname__) != _HTTPTOOLS_CYCLE:
        return None
    if not all(hasattr(cycle, name) for name in _CYCLE_FIELDS) or not hasattr(cycle.flow, "write_paused"):
        return None  # another uvicorn than the one this was written against: ASGI only
    return DirectBody(cycle)
