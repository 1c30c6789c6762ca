"""One SSE pump for every streaming route: ``POST /generations`` and
``GET /generations/{id}/events`` (our events), ``/v1/chat/completions`` with ``stream: true``
(OpenAI chunks), and the dialects to come.

:class:`EventStreamResponse` streams a generation's event batches through a frame
projection (:mod:`streaming.server.frames`: events in, SSE bytes out) until the end or a
disconnect, with the same heartbeat, send timeout and disconnect handling for every stream
(:mod:`streaming.server.watch`: the listener task also sends the heartbeats).

Once a subscriber has caught up, the pump offers the subscription a *write-through* sink
(:class:`~streaming.runtime.subscriptions.WriteThrough`): each event the generation
appends is framed and written where it is appended, by one synchronous step of the ASGI
``send`` (uvicorn writes a body to its transport without suspending unless the client's
buffer is full), and the request's task stays asleep. A write that would have to wait is
handed back to the request's task, which finishes it (:class:`Resume`) and carries on as
before; so are a failure and the client leaving. At a model's pace this saves a task
wake-up, a future and every frame of the request's stack per event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterator
from contextlib import aclosing
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from streaming.server.context import settings_of
from streaming.server.direct import DirectBody, direct_body
from streaming.server.frames import NATIVE, Frames
from streaming.server.watch import ClientGone, ClientWatch

from streaming.errors import StreamingError
from streaming.events import Event

__all__ = ["SSE_HEADERS", "EventStreamResponse", "Resume", "StreamingEndpoint", "sse_response"]

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
    (b"connection", b"keep-alive"),
]

HEARTBEAT = b": ping\n\n"
#: the most one write of the pump hands the server: a catch-up batch (a long log read at
#: once) goes out in writes of this size, so that the server's flow control holds it back
#: while the client does not read (and the send timeout can drop a client that never
#: does) instead of taking it all into the transport's buffer in one write
MAX_WRITE = 1 << 16


def pieces(body: bytes, size: int) -> Iterator[bytes]:
    """``body`` (whole SSE frames) in pieces of at most about ``size`` bytes, each ending
    where a frame ends (a heartbeat written between two pieces never lands inside a
    frame); a frame longer than ``size`` is a piece of its own."""
    at, n = 0, len(body)
    while at < n:
        end = body.rfind(b"\n\n", at, at + size)
        if end < 0:
            end = body.find(b"\n\n", at + size)
        end = n if end < 0 else end + 2
        yield body[at:end]
        at = end


class Resume:
    """Await the rest of an awaitable whose first step was taken by hand (its
    ``__await__()`` iterator, ``coro``, yielded ``waiting`` to ``send(None)``): the task
    awaiting this one now handles that, and every later step, as if it had awaited the
    awaitable from the start."""

    __slots__ = ("coro", "waiting")

    def __init__(self, coro: Generator[Any, None, Any], waiting: Any) -> None:
        self.coro = coro
        self.waiting = waiting

    def __await__(self) -> Generator[Any, None, Any]:
        coro, waiting = self.coro, self.waiting
        while True:
            try:
                yield waiting
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # (a cancel of our task: the coroutine sees it)
                try:
                    waiting = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                waiting = coro.send(None)
            except StopIteration as stop:
                return stop.value


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
        "batches", "frames", "heartbeat_s", "send_timeout_s", "status", "headers", "timed_out", "_sent_at",
        "_sending", "_out", "_clock", "_held", "_broke", "_direct",
    )
    #: what a quiet stream sends every ``heartbeat_s`` (a dialect may send its own ping)
    heartbeat: bytes = HEARTBEAT

    def __init__(
        self,
        batches: AsyncGenerator[list[Event], Any],
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
        self.headers = SSE_HEADERS + headers if headers else SSE_HEADERS  # (read, never changed)
        #: the client stopped reading and was dropped
        self.timed_out = False
        self._sent_at = 0.0  # when the last write began
        self._sending = False  # the pump is in a write now
        self._out: Send | None = None  # the response's send (the heartbeats write there too)
        self._clock: Callable[[], float] | None = None  # the loop's time
        self._held: Resume | None = None  # a write-through that has to wait: the pump finishes it
        self._broke: BaseException | None = None  # what a write-through raised: the pump raises it
        self._direct: DirectBody | None = None  # writes that never wait, where the server allows them

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        self._clock = asyncio.get_running_loop().time
        self._sent_at = self._clock()
        self._out = send
        self._direct = direct_body(scope)
        # No lock between the pump and the heartbeats: uvicorn writes each body whole, so
        # frames never interleave.
        try:
            await self.watch(receive, self._pump(send))
        except TimeoutError:  # (before OSError, of which it is a subclass)
            self.timed_out = True
        except (ClientGone, OSError):
            pass  # the client is gone
        if self.timed_out:
            # The transport is stuck: do not wait on it again, and do not leave the server
            # a close that waits for the peer to read (where the server lets us, a reset).
            if self._direct is not None:
                self._direct.abort()
                await asyncio.sleep(0)  # (the server sees the connection lost before we return)
            return
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
                # A subscription that takes a sink (``asend``) writes through it once caught
                # up; any other async iterator is read as such.
                step = batches.asend if hasattr(batches, "asend") else None
                sink = self._write_through if step is not None else None
                batch: list[Event] | None = await anext(batches, None)
                while batch is not None:
                    await self._settle_write_through()
                    if self.left:
                        return  # a cancellation was swallowed under us: stop here
                    if batch:
                        body = frames.batch(batch)
                        if len(body) > MAX_WRITE:  # a catch-up: the log so far, in one batch
                            for piece in pieces(body, MAX_WRITE):
                                await self._send(send, piece)
                        elif body:
                            await self._send(send, body)
                    try:
                        batch = await (step(sink) if step is not None else batches.__anext__())
                    except StopAsyncIteration:
                        batch = None
                # (the last write-through may have been the terminal event's, and had to wait)
                await self._settle_write_through()
            closing = frames.closing()
        except StreamingError as exc:
            # Refused after the headers went out: end the stream with an error frame
            # rather than a broken connection.
            closing = frames.refused(exc)
        finally:
            if self._held is not None:  # (the pump is leaving with a write unfinished)
                self._held.coro.close()
                self._held = None
        if closing:
            await self._send(send, closing)

    async def _settle_write_through(self) -> None:
        """What the last write-through left to the pump: a write to finish, an error to raise."""
        if self._held is not None:
            await self._finish_held()
        if self._broke is not None:
            broke, self._broke = self._broke, None
            raise broke

    def _write_through(self, events: list[Event]) -> bool:
        """The subscription's sink (called where the events are appended): frame and write
        ``events`` now, in one step of ``send``. False hands over to the pump: the write
        has to wait (the pump finishes it), it failed (the pump raises it), or the client
        has left."""
        if self.left or self._held is not None or self._broke is not None:
            return False
        send = self._out
        clock = self._clock
        assert send is not None and clock is not None
        try:
            frames = self.frames
            body = events[0].to_sse() if frames is NATIVE and len(events) == 1 else frames.batch(events)
            if not body:
                return True
            self._sent_at = clock()
            direct = self._direct
            if direct is not None and direct.write(body):
                return True
            writing = send({"type": "http.response.body", "body": body, "more_body": True}).__await__()
        except BaseException as exc:  # (the pump raises it in the request's task)
            self._broke = exc
            return False
        try:
            waiting = writing.send(None)
        except StopIteration:
            return True  # written
        except BaseException as exc:
            self._broke = exc
            return False
        self._sending = True  # (the listener times it from _sent_at, as any write)
        self._held = Resume(writing, waiting)
        return False

    async def _finish_held(self) -> None:
        held = self._held
        assert held is not None
        try:
            await held
        finally:
            self._held = None
            self._sending = False

    async def _send(self, send: Send, body: bytes) -> None:
        # A consumer that stopped reading blocks only its own writes; past the send
        # timeout the listener drops it rather than let it hold anything up. (The listener
        # keeps that time: a timer armed and cancelled around every write would cost each
        # event more than the write itself.)
        clock = self._clock
        assert clock is not None
        self._sent_at = clock()
        direct = self._direct
        if direct is not None and direct.write(body):
            return
        self._sending = True
        try:
            await send({"type": "http.response.body", "body": body, "more_body": True})
        finally:
            self._sending = False

    async def _listen(self, receive: Receive, work: asyncio.Task[Any]) -> None:
        """Wait for the client to go away, sending a comment line whenever the stream has
        been quiet for ``heartbeat_s`` and dropping the client once a write of the pump has
        waited ``send_timeout_s``; then (however this ends) stop the pump."""
        clock = self._clock
        send = self._out
        assert send is not None and clock is not None
        try:
            while True:
                if self._sending:  # wake for its timeout, or to see it done and beat on time
                    deadline = min(self._sent_at + self.send_timeout_s, clock() + self.heartbeat_s)
                else:
                    # A write may begin, and stick, while this sleeps toward the heartbeat:
                    # wake within send_timeout_s to see it (with the defaults, 15 s < 30 s,
                    # an idle stream wakes no more often than it beats).
                    deadline = min(self._sent_at + self.heartbeat_s, clock() + self.send_timeout_s)
                try:
                    async with asyncio.timeout_at(deadline):
                        message = await receive()
                except TimeoutError:
                    quiet_s = clock() - self._sent_at
                    if self._sending:
                        if quiet_s >= self.send_timeout_s:
                            self.timed_out = True  # the client stopped reading: drop it
                            return
                        continue  # a write began meanwhile: wait for its timeout
                    if quiet_s < self.heartbeat_s:
                        continue  # something went out meanwhile
                    try:
                        async with asyncio.timeout(self.send_timeout_s):
                            await send({"type": "http.response.body", "body": self.heartbeat, "more_body": True})
                    except TimeoutError:
                        self.timed_out = True
                        return
                    self._sent_at = clock()
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
