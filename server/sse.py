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

from streaming.events import Event

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
        status: HTTP status (201 when the POST that created the generation streams).
        headers: extra response headers.
    """

    def __init__(
        self,
        batches: AsyncGenerator[list[Event], None],
        *,
        heartbeat_s: float = 15.0,
        status: int = 200,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.batches = batches
        self.heartbeat_s = heartbeat_s
        self.status = status
        self.headers = SSE_HEADERS + list(headers or [])
        self._sent_at = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        lock = anyio.Lock()
        self._sent_at = anyio.current_time()
        async with anyio.create_task_group() as tg:

            async def pump() -> None:
                try:
                    await self._pump(send, lock)
                finally:
                    tg.cancel_scope.cancel()

            async def listen() -> None:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(pump)
            tg.start_soon(listen)
            tg.start_soon(self._heartbeat, send, lock)
        with anyio.CancelScope(shield=True):
            try:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:
                pass

    async def _pump(self, send: Send, lock: anyio.Lock) -> None:
        async with aclosing(self.batches) as batches:
            async for batch in batches:
                body = b"".join([ev.to_sse() for ev in batch]) if len(batch) > 1 else batch[0].to_sse()
                async with lock:
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                    self._sent_at = anyio.current_time()

    async def _heartbeat(self, send: Send, lock: anyio.Lock) -> None:
        while True:
            await anyio.sleep(max(0.0, self._sent_at + self.heartbeat_s - anyio.current_time()))
            if anyio.current_time() - self._sent_at >= self.heartbeat_s:
                async with lock:
                    await send({"type": "http.response.body", "body": b": ping\n\n", "more_body": True})
                    self._sent_at = anyio.current_time()


