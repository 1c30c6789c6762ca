"""The SSE response: a generation's events as ``id`` / ``event`` / ``data`` frames.

The event pump runs in the request's task; one helper task sends the heartbeats and
listens for the disconnect, and stops the pump when the client goes away. Events are
encoded once (shared by every subscriber) and a backlog goes out in one write. Needs
asyncio (as uvicorn runs it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from streaming.errors import StreamingError
from streaming.events import Event, encode_json

__all__ = ["SSE_HEADERS", "EventStreamResponse", "StreamingEndpoint"]

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
    (b"connection", b"keep-alive"),
]


class EventStreamResponse:
    """Stream ``batches`` (lists of events) as SSE until the terminal event or a disconnect.

    Args:
        batches: async iterator of event batches (``Runtime.subscribe``).
        heartbeat_s: send a comment line after this long without an event.
        send_timeout_s: a client that takes longer than this to accept one write is
            dropped (the generation goes on; the client can resume from the log).
        status: HTTP status (201 when the POST that created the generation streams).
        headers: extra response headers.
    """

    def __init__(
        self,
        batches: AsyncGenerator[list[Event], None],
        *,
        heartbeat_s: float = 15.0,
        send_timeout_s: float = 30.0,
        status: int = 200,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.batches = batches
        self.heartbeat_s = heartbeat_s
        self.send_timeout_s = send_timeout_s
        self.status = status
        self.headers = SSE_HEADERS + list(headers or [])
        self._sent_at = 0.0
        self._done = False  # the pump has ended
        self._stopped = False  # the listener cancelled the pump
        self.timed_out = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        self._sent_at = loop.time()
        # The pump runs in this task; one plain asyncio task listens for the disconnect
        # and sends the heartbeats, and cancels this task if the client goes away. (Plain
        # asyncio rather than an anyio task group: an idle stream is mostly this state, and
        # a task group with its cancel scopes costs a few KiB more per stream.) No lock:
        # uvicorn writes each body whole, so frames never interleave.
        me = asyncio.current_task()
        assert me is not None
        listener = loop.create_task(self._listen(receive, send, me))
        try:
            try:
                await self._pump(send)
            except StreamingError as exc:
                # Refused after the headers went out (a race on a limit): end the stream
                # with an SSE error event rather than a broken connection.
                frame = f"event: error\ndata: {encode_json({'error': exc.to_dict()})}\n\n"
                with contextlib.suppress(TimeoutError):
                    await self._send(send, frame.encode())
        except TimeoutError:
            self.timed_out = True
        except asyncio.CancelledError:
            self._done = True  # (before any await: the listener stops cancelling now)
            if not self._stopped:
                raise  # the server is cancelling us, not the listener
            while me.cancelling():
                me.uncancel()
        finally:
            self._done = True
            listener.cancel()
        if self.timed_out:
            return  # the transport is stuck; do not wait on it again
        try:
            await asyncio.shield(send({"type": "http.response.body", "body": b"", "more_body": False}))
        except OSError:
            pass

    async def _pump(self, send: Send) -> None:
        async with aclosing(self.batches) as batches:
            async for batch in batches:
                body = b"".join([ev.to_sse() for ev in batch]) if len(batch) > 1 else batch[0].to_sse()
                await self._send(send, body)

    async def _send(self, send: Send, body: bytes) -> None:
        # A consumer that stopped reading blocks only its own writes; past the timeout
        # it is dropped rather than holding anything else up.
        async with asyncio.timeout(self.send_timeout_s):
            await send({"type": "http.response.body", "body": body, "more_body": True})
        self._sent_at = asyncio.get_running_loop().time()

    async def _listen(self, receive: Receive, send: Send, pump: asyncio.Task[Any]) -> None:
        """Wait for the client to go away, sending a comment line whenever the stream has
        been quiet for ``heartbeat_s``; then stop the pump."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    async with asyncio.timeout_at(self._sent_at + self.heartbeat_s):
                        message = await receive()
                except TimeoutError:
                    if loop.time() - self._sent_at < self.heartbeat_s:
                        continue  # something went out meanwhile
                    try:
                        await self._send(send, b": ping\n\n")
                    except TimeoutError:
                        self.timed_out = True
                        return
                    continue
                if message["type"] == "http.disconnect":
                    return
        finally:
            # However this ends (even by a bug here), the pump must not outlive it. Like
            # an anyio cancel scope, keep cancelling until it has stopped: code under the
            # pump (a store client, say) that swallows one cancellation cannot keep a
            # stream nobody reads alive.
            self._stopped = True
            while not self._done:
                pump.cancel()
                try:
                    await asyncio.sleep(0.05)
                except asyncio.CancelledError:
                    break  # the pump has ended and cancels us


class StreamingEndpoint:
    """A route endpoint that may answer with an open stream, as a plain ASGI app.

    Starlette wraps a function endpoint in two more layers of exception handling whose
    frames and closures stay alive as long as the response streams: a few KiB on every
    idle stream. Errors raised by ``handler`` before the response starts still reach the
    app's exception handlers (the ``ExceptionMiddleware`` above the router).
    """

    def __init__(self, handler: Callable[[Request], Awaitable[Response | EventStreamResponse]]) -> None:
        self.handler = handler
        self.__name__ = getattr(handler, "__name__", type(self).__name__)
        self.__doc__ = handler.__doc__

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.handler(Request(scope, receive, send))
        await response(scope, receive, send)
