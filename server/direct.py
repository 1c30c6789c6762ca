"""A body write that never waits, where the HTTP server allows one: uvicorn's httptools
protocol, which ``streaming serve`` runs (and the same for a WebSocket text frame on
uvicorn's websockets protocol: :class:`DirectFrames`).

An event written through ASGI costs three coroutines (uvicorn's ``send`` and the two
Starlette wrappers above it), a message dict and uvicorn's checks before the one
``transport.write`` that matters; at a model's pace, with every token its own event, that
is about a tenth of a token's server CPU. When the response has started with chunked
encoding and its transport accepts more without pausing, :class:`DirectBody` frames the
chunk and writes it to the transport itself, exactly as uvicorn would (a test compares
the bytes); otherwise it declines and the caller sends through ASGI as usual. Both also
*abort* the connection for a peer dropped for not reading: ASGI can only return, and the
server then closes the transport, which waits for the buffered bytes to go first, so a
peer that never reads would hold the connection and its buffers open for good. Nothing else
changes: the response's start, its end, heartbeats and a write that has to wait all go
through ``send``.

``streaming serve`` wraps its app in :class:`ServerSend`, which hands the server's own
``send`` down in the scope (``scope["streaming.server_send"]``); an app served any other
way simply has no direct writes.
"""

from __future__ import annotations

import struct
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["SERVER_SEND", "DirectBody", "DirectFrames", "ServerSend", "direct_body", "direct_frames"]

#: where :class:`ServerSend` puts the server's ``send`` in the scope
SERVER_SEND = "streaming.server_send"

_HTTPTOOLS_CYCLE = ("uvicorn.protocols.http.httptools_impl", "RequestResponseCycle")
_CYCLE_FIELDS = ("transport", "flow", "chunked_encoding", "response_started", "response_complete", "disconnected")
_SANSIO_PROTOCOL = ("uvicorn.protocols.websockets.websockets_sansio_impl", "WebSocketsSansIOProtocol")
_PROTOCOL_FIELDS = ("transport", "conn", "writable", "disconnected", "close_sent", "handshake_complete", "initial_response")
_CONN_FIELDS = ("state", "extensions", "expect_continuation_frame")


class ServerSend:
    """The outermost ASGI layer of ``streaming serve``: puts the server's ``send`` in the
    scope while the app runs.

    It takes it out again when the app returns: uvicorn's ``send`` is a bound method of its
    request cycle, which holds the scope, so left there the two would make a reference
    cycle, and the connection's objects (its transport, flow control, events and buffers,
    two dozen a request) would outlive the connection until a pass of the cyclic collector
    over the generation they had reached (under hundreds of streams, the middle one: tens
    of seconds later), rather than go when it closes."""

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[SERVER_SEND] = send
        try:
            await self.app(scope, receive, send)
        finally:
            scope.pop(SERVER_SEND, None)


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

    def abort(self) -> None:
        """Drop the connection now, what is buffered for it with it (a reset, not a close
        that would wait for a peer who does not read to take the buffer first)."""
        self.cycle.transport.abort()


def direct_body(scope: Scope) -> DirectBody | None:
    """A :class:`DirectBody` for this request, if its server is uvicorn's httptools
    protocol (as handed down by :class:`ServerSend`); None otherwise."""
    cycle = _server_object(scope, _HTTPTOOLS_CYCLE, _CYCLE_FIELDS)
    if cycle is None or not hasattr(cycle.flow, "write_paused"):
        return None
    return DirectBody(cycle)


def _server_object(scope: Scope, kind: tuple[str, str], fields: tuple[str, ...]) -> Any:
    """The object whose bound method is the server's ``send`` (handed down by
    :class:`ServerSend`), if it is of ``kind`` (module, class) and has ``fields``; None
    otherwise (another server, or another uvicorn than the one this was written against:
    ASGI only)."""
    found = getattr(scope.get(SERVER_SEND), "__self__", None)
    if found is None:
        return None
    cls = type(found)
    if (cls.__module__, cls.__qualname__) != kind or not all(hasattr(found, name) for name in fields):
        return None
    return found


class DirectFrames:
    """Writes a WebSocket text frame straight to the transport of uvicorn's websockets
    (sans-I/O) protocol when it can do so at once: the frame ``websockets`` would make for
    a server's unfragmented, uncompressed text message (a test compares the bytes). It
    declines, and the caller sends through ASGI, while the handshake is not done, once a
    close was sent or the peer went, while the transport asks for a pause, when the
    connection negotiated an extension (``permessage-deflate``: frames are then
    compressed) or is in a fragmented message."""

    __slots__ = ("protocol",)

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol

    def write_text(self, data: bytes) -> bool:
        """Write ``data`` (UTF-8 text) as one text frame now; False (nothing written) if it
        cannot (see the class's doc)."""
        protocol = self.protocol
        conn = protocol.conn
        transport = protocol.transport
        if (
            protocol.disconnected
            or protocol.close_sent
            or not protocol.handshake_complete
            or protocol.initial_response is not None
            or not protocol.writable.is_set()
            or conn.extensions
            or conn.expect_continuation_frame
            or conn.state is not _OPEN
            or transport.is_closing()
        ):
            return False
        size = len(data)
        if size < 126:
            head = b"\x81%c" % size
        elif size < 65536:
            head = struct.pack("!BBH", 0x81, 126, size)
        else:
            head = struct.pack("!BBQ", 0x81, 127, size)
        transport.write(head + data)
        return True

    def abort(self) -> None:
        """Drop the connection now, as :meth:`DirectBody.abort`."""
        self.protocol.transport.abort()


def direct_frames(scope: Scope) -> DirectFrames | None:
    """A :class:`DirectFrames` for this WebSocket, if its server is uvicorn's websockets
    sans-I/O protocol (as handed down by :class:`ServerSend`); None otherwise."""
    protocol = _server_object(scope, _SANSIO_PROTOCOL, _PROTOCOL_FIELDS)
    if protocol is None or _OPEN is None or not all(hasattr(protocol.conn, name) for name in _CONN_FIELDS):
        return None
    return DirectFrames(protocol)


def _open_state() -> Any:
    try:
        from websockets.protocol import State
    except ImportError:  # (no websockets: no such protocol either)
        return None
    return State.OPEN


_OPEN = _open_state()
