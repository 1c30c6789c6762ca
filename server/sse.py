"""One SSE pump for every streaming route, and the watch on a client that may leave.

:class:`EventStreamResponse` streams a generation's event batches through a *frame
projection* (:class:`Frames`: events in, SSE bytes out) until the end or a disconnect:
:data:`NATIVE` frames our own events (``id`` / ``event`` / ``data``, each encoded once and
shared by every subscriber, a backlog in one write); :class:`DialectFrames` frames a pure
dialect projection (:mod:`streaming.dialects`, e.g. OpenAI chat chunks) as ``data:`` lines.
Every stream gets the same heartbeat, send timeout and disconnect handling.

:class:`ClientWatch` is that disconnect handling, also for routes that answer once but
wait for a generation first (non-streaming ``/v1/chat/completions``): the work runs in the
request's task; one plain asyncio task (the listener) waits for ``http.disconnect``. When
the client leaves, the listener cancels the work once and marks the watch ``left``; the
work also stops at its next step if something under it swallowed that cancellation. The
request's task owns the listener: it stops it when the work ends and awaits its exit. (Plain
asyncio rather than an anyio task group: an idle stream is mostly this state, and a task
group with its cancel scopes costs a few KiB more per stream.) Needs asyncio, as uvicorn
runs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, Protocol, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from streaming.server.context import settings_of

from streaming.dialects import Failure, Projection
from streaming.errors import StreamingError
from streaming.events import Event, encode_json

__all__ = [
    "NATIVE",
    "SSE_HEADERS",
    "ClientGone",
    "ClientWatch",
    "DialectFrames",
    "EventStreamResponse",
    "Frames",
    "NativeFrames",
    "StreamingEndpoint",
    "sse_response",
]

T = TypeVar("T")

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
    (b"connection", b"keep-alive"),
]

HEARTBEAT = b": ping\n\n"


# -- what a stream says --


class Frames(Protocol):
    """A frame projection: what an SSE stream says, as bytes."""

    def opening(self) -> bytes:
        """Before the first batch (after the headers)."""
        ...

    def batch(self, events: list[Event]) -> bytes:
        """One batch of events (empty bytes: nothing to send)."""
        ...

    def closing(self) -> bytes:
        """After the last batch (the terminal event, or the log's end)."""
        ...

    def refused(self, exc: StreamingError) -> bytes:
        """The subscription was refused after the headers went out (a race on a limit)."""
        ...


class NativeFrames:
    """Our own events: ``id: <seq>``, ``event: <type>``, ``data: <json>`` (stateless, shared)."""

    __slots__ = ()

    def opening(self) -> bytes:
        return b""

    def batch(self, events: list[Event]) -> bytes:
        return b"".join([ev.to_sse() for ev in events]) if len(events) > 1 else events[0].to_sse()

    def closing(self) -> bytes:
        return b""

    def refused(self, exc: StreamingError) -> bytes:
        return f"event: error\ndata: {encode_json({'error': exc.to_dict()})}\n\n".encode()


NATIVE = NativeFrames()


def data_frame(obj: Any) -> bytes:
    return f"data: {encode_json(obj)}\n\n".encode()


class DialectFrames:
    """A dialect's projection (:mod:`streaming.dialects`) as ``data: <json>`` frames.

    Args:
        projection: one generation's projection (it keeps state: one per stream).
        error: a failure of the generation, or a refusal, as the dialect's error object.
        done: the last line of a stream that succeeded (``data: [DONE]`` for OpenAI), if any.
    """

    def __init__(
        self,
        projection: Projection,
        *,
        error: Callable[[Failure | StreamingError], dict[str, Any]],
        done: str | None = "[DONE]",
    ) -> None:
        self.projection = projection
        self.error = error
        self.done = done

    def opening(self) -> bytes:
        return b"".join(data_frame(c) for c in self.projection.open())

    def batch(self, events: list[Event]) -> bytes:
        feed = self.projection.feed
        return b"".join(data_frame(c) for ev in events for c in feed(ev))

    def closing(self) -> bytes:
        failure = self.projection.failure
        if failure is not None:
            return data_frame(self.error(failure))
        out = b"".join(data_frame(c) for c in self.projection.close())
        return out + (f"data: {self.done}\n\n".encode() if self.done is not None else b"")

    def refused(self, exc: StreamingError) -> bytes:
        return data_frame(self.error(exc))


# -- a client that may leave --


class ClientGone(Exception):
    """The client went away before the work was done (the work was cancelled)."""


class ClientWatch:
    """Run work in the request's task while a listener task watches the client (see the
    module's doc). ``left`` says the client went away (or the listener ended otherwise)."""

    __slots__ = ("left", "_done")

    def __init__(self) -> None:
        self.left = False
        self._done = False

    async def watch(self, receive: Receive, work: Awaitable[T]) -> T:
        """``await work``, cancelled if the client leaves first.

        Raises:
            ClientGone: the client left and the work was cancelled.
        """
        me = asyncio.current_task()
        assert me is not None
        listener = asyncio.get_running_loop().create_task(self._listen(receive, me))
        try:
            return await work
        except asyncio.CancelledError:
            if not self.left or me.cancelling() > 1:
                raise  # the server is cancelling us (too), not only the listener
            raise ClientGone from None
        finally:
            self._done = True  # (before any await: the listener will not cancel us now)
            if self.left:
                # The listener's one cancel: delivered above, or swallowed under the work.
                me.uncancel()
            listener.cancel()
            await asyncio.wait((listener,))  # its exit, whatever it was

    def _stop(self, work: asyncio.Task[Any]) -> None:
        """The listener has ended: stop the work (once), unless it has ended already."""
        if not self._done:
            self.left = True
            work.cancel()

    async def _listen(self, receive: Receive, work: asyncio.Task[Any]) -> None:
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        finally:
            self._stop(work)


# -- the stream --


class EventStreamResponse(ClientWatch):
    """Stream ``batches`` (lists of events) as SSE until the terminal event or a disconnect.

    Args:
        batches: async iterator of event batches (``Runtime.subscribe``).
        frames: what the stream says (:data:`NATIVE`: our own events).
        heartbeat_s: send a comment line after this long without a write.
        send_timeout_s: a client that takes longer than this to accept one write is
            dropped (the generation goes on; the client can resume from the log).
        status: HTTP status (201 when the POST that created the generation streams).
        headers: extra response headers.
    """

    __slots__ = (
        "batches", "frames", "heartbeat_s", "send_timeout_s", "status", "headers", "timed_out", "_sent_at", "_out"
    )

    def __init__(
        self,
        batches: AsyncGenerator[list[Event], None],
        *,
        frames: Frames = NATIVE,
        heartbeat_s: float = 15.0,
        send_timeout_s: float = 30.0,
        status: int = 200,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__()
        self.batches = batches
        self.frames = frames
        self.heartbeat_s = heartbeat_s
        self.send_timeout_s = send_timeout_s
        self.status = status
        self.headers = SSE_HEADERS + list(headers or [])
        #: the client stopped reading and was dropped
        self.timed_out = False
        self._sent_at = 0.0
        self._out: Send | None = None  # the response's send (the heartbeats write there too)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        self._sent_at = asyncio.get_running_loop().time()
        self._out = send
        # No lock between the pump and the heartbeats: uvicorn writes each body whole, so
        # frames never interleave.
        try:
            await self.watch(receive, self._pump(send))
        except TimeoutError:  # (before OSError, of which it is a subclass)
            self.timed_out = True
        except (ClientGone, OSError):
            pass  # the client is gone
        if self.timed_out:
            return  # the transport is stuck; do not wait on it again
        try:
            await asyncio.shield(send({"type": "http.response.body", "body": b"", "more_body": False}))
        except OSError:
            pass

    async def _pump(self, send: Send) -> None:
        frames = self.frames
        try:
            opening = frames.opening()
            if opening:
                await self._send(send, opening)
            async with aclosing(self.batches) as batches:
                async for batch in batches:
                    if self.left:
                        return  # a cancellation was swallowed under us: stop here
                    body = frames.batch(batch)
                    if body:
                        await self._send(send, body)
            closing = frames.closing()
        except StreamingError as exc:
            # Refused after the headers went out: end the stream with an error frame
            # rather than a broken connection.
            closing = frames.refused(exc)
        if closing:
            await self._send(send, closing)

    async def _send(self, send: Send, body: bytes) -> None:
        # A consumer that stopped reading blocks only its own writes; past the timeout
        # it is dropped rather than holding anything else up.
        async with asyncio.timeout(self.send_timeout_s):
            await send({"type": "http.response.body", "body": body, "more_body": True})
        self._sent_at = asyncio.get_running_loop().time()

    async def _listen(self, receive: Receive, work: asyncio.Task[Any]) -> None:
        """Wait for the client to go away, sending a comment line whenever the stream has
        been quiet for ``heartbeat_s``; then (however this ends) stop the pump."""
        loop = asyncio.get_running_loop()
        send = self._out
        assert send is not None
        try:
            while True:
                try:
                    async with asyncio.timeout_at(self._sent_at + self.heartbeat_s):
                        message = await receive()
                except TimeoutError:
                    if loop.time() - self._sent_at < self.heartbeat_s:
                        continue  # something went out meanwhile
                    try:
                        await self._send(send, HEARTBEAT)
                    except TimeoutError:
                        self.timed_out = True
                        return
                    continue
                if message["type"] == "http.disconnect":
                    return
        finally:
            self._stop(work)


def sse_response(
    request: Request,
    batches: AsyncGenerator[list[Event], None],
    *,
    frames: Frames = NATIVE,
    status: int = 200,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> EventStreamResponse:
    """A stream of ``batches`` with the server's heartbeat and send timeout."""
    settings = settings_of(request)
    return EventStreamResponse(
        batches,
        frames=frames,
        heartbeat_s=settings.heartbeat_s,
        send_timeout_s=settings.send_timeout_s,
        status=status,
        headers=headers,
    )


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
