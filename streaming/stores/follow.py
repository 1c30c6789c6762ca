"""The follow loop every store shares: replay a log after a cursor, then wait for more,
until the terminal event (or until the generation is known to have ended without one to
read: its log expired, or was never written)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable

from streaming.events import Event

__all__ = ["follow_log"]


async def follow_log(
    read: Callable[[int], Awaitable[list[Event]]],
    wait: Callable[[], Awaitable[None]],
    after: int = 0,
    ended: Callable[[int], Awaitable[bool]] | None = None,
) -> AsyncGenerator[list[Event], None]:
    """Batches of events after ``after``, until the terminal event.

    Args:
        read: the events after a cursor (may block a while itself, as ``XREAD`` does).
        wait: until more may have been appended (a wake-up, a poll interval, or nothing).
        ended: given the cursor, True if nothing more will ever come (asked when a read
            found nothing).
    """
    while True:
        events = await read(after)
        if events:
            yield events
            after = events[-1].seq
            if events[-1].terminal:
                return
            continue
        if ended is not None and await ended(after):
            return
        await wait()
