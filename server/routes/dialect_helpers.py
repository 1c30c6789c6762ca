"""What the dialect routes (``/v1/responses``, ``/v1/messages``) share around a projection:
errors raised before a response starts, answered in the dialect's own shape, and following a
generation's events into a projection (for an answer given once, or a snapshot)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from streaming.server.watch import ClientWatch

from streaming.dialects import Projection
from streaming.errors import StreamingError
from streaming.events import Event

__all__ = ["CLIENT_CLOSED", "follow", "guarded"]

Handler = Callable[[Request], Awaitable[Any]]

#: what a client that left is "answered" (nobody reads it; nginx's code for it)
CLIENT_CLOSED = 499


def guarded(handler: Handler, shape: Callable[[StreamingError], Response]) -> Handler:
    """``handler``, its errors raised before the response starts answered by ``shape``."""

    async def answer(request: Request) -> Any:
        try:
            return await handler(request)
        except StreamingError as exc:
            return shape(exc)

    answer.__name__ = handler.__name__
    return answer


async def follow(
    batches: AsyncGenerator[list[Event], None],
    projection: Projection,
    watch: ClientWatch | None = None,
    until: int | None = None,
) -> None:
    """Feed the generation's events to ``projection`` until it ends, or, with ``until``,
    until the event of that seq (the log as it was when asked)."""
    async with aclosing(batches) as events:
        async for batch in events:
            for event in batch:
                projection.feed(event)
            if watch is not None and watch.left:
                return  # a cancellation was swallowed under us: stop here
            if until is not None and batch and batch[-1].seq >= until:
                return
