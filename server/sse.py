"""The SSE response: a generation's events as ``id`` / ``event`` / ``data`` frames.

One task group per response in which the event pump, the heartbeat and the disconnect
listener race; the first to finish cancels the others. Events are encoded once (shared by
every subscriber) and a backlog goes out in one write.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

import anyio
from starlette.types import Receive, Scope, Send

from streaming.errors import StreamingError
from streaming.events import Event, encode_json

__all__ = ["SSE_HEADERS", "EventStreamResponse"]

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
        self.timed_out = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        self._sent_at = anyio.current_time()
        # The pump runs in this task; one helper listens for the disconnect and sends the
        # heartbeats. No lock: uvicorn writes each body whole, so frames never interleave.
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._listen, receive, send, tg.cancel_scope)
            try:
                await self._pump(send)
            except TimeoutError:
                self.timed_out = True
            except StreamingError as exc:
                # Refused after the headers went out (a race on a limit): end the stream
                # with an SSE error event rather than a broken connection.
                frame = f"event: error\ndata: {encode_json({'error': exc.to_dict()})}\n\n"
                with anyio.move_on_after(self.send_timeout_s):
                    await send({"type": "http.response.body", "body": frame.encode(), "more_body": True})
            finally:
                tg.cancel_scope.cancel()
        if self.timed_out:
            return  # the transport is stuck; do not wait on it again
        with anyio.CancelScope(shield=True):
            try:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
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
        with anyio.fail_after(self.send_timeout_s):
            await send({"type": "http.response.body", "body": body, "more_body": True})
        self._sent_at = anyio.current_time()

    async def _listen(self, receive: Receive, send: Send, scope: anyio.CancelScope) -> None:
        """Wait for the client to go away, sending a comment line whenever the stream has
        been quiet for ``heartbeat_s``."""
        try:
            while True:
                quiet_until = self._sent_at + self.heartbeat_s
                with anyio.move_on_at(quiet_until):
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        break
                    continue
                if anyio.current_time() - self._sent_at >= self.heartbeat_s:
                    await self._send(send, b": ping\n\n")
        except TimeoutError:
            self.timed_out = True
        scope.cancel()
