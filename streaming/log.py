"""A generation's event log: gapless ``seq``, replay after a cursor, one-shot wake-ups.

Plain Python, no I/O: subscribers that have caught up register a waiter callback, and the
next append calls each waiter once. Many subscribers share the one list of events, so a
slow subscriber costs a cursor, not a queue, and catches up from the log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streaming.errors import IllegalTransitionError
from streaming.events import Event, EventType

__all__ = ["EventLog"]

_DELTA = EventType.BLOCK_DELTA.value

Waiter = Callable[[], None]


class EventLog:
    """The ordered events of one generation.

    Args:
        generation_id: whose events these are.
        coalesce: merge a chunk into the tail ``block.delta`` of the same block while no
            reader has seen that delta yet (several chunks, one event; ``seq`` stays gapless).
        events: events already recorded, for a log rebuilt from a store.
    """

    __slots__ = ("generation_id", "coalesce", "events", "closed", "_waiters")

    def __init__(self, generation_id: str, *, coalesce: bool = True, events: list[Event] | None = None) -> None:
        self.generation_id = generation_id
        self.coalesce = coalesce
        self.events: list[Event] = list(events or [])
        self.closed = bool(self.events) and self.events[-1].terminal
        self._waiters: list[Waiter] = []

    @property
    def last_seq(self) -> int:
        return len(self.events)

    def _check_open(self) -> None:
        if self.closed:
            raise IllegalTransitionError(
                f"generation {self.generation_id} has ended; its log takes no more events"
            )

    def _freeze_tail(self) -> None:
        """The tail delta is about to stop being the tail: no chunk joins it any more, so
        join the ones it absorbed now (its ``data`` then tells its whole text even if no
        reader sealed it)."""
        if self.events:
            self.events[-1].freeze()

    def append(self, type: str, data: dict[str, Any]) -> Event:
        """Append one event. Raises IllegalTransitionError after a terminal event."""
        self._check_open()
        self._freeze_tail()
        ev = Event(type, len(self.events) + 1, self.generation_id, data)
        self.events.append(ev)
        if ev.terminal:
            self.closed = True
        self._wake()
        return ev

    def append_delta(self, block_id: str, offset: int, text: str) -> Event:
        """Append a ``block.delta``, or fold it into the unread tail delta of that block."""
        # (The per-chunk path: the checks, Event.delta and the wake-up inlined.)
        if self.closed:
            self._check_open()
        events = self.events
        # (Without coalescing no delta holds more than one chunk: nothing to freeze.)
        if self.coalesce and events and events[-1].try_extend(block_id, text):
            return events[-1]
        data = {"block_id": block_id, "offset": offset, "text": text}
        ev = Event(_DELTA, len(events) + 1, self.generation_id, data, [text])
        events.append(ev)
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for w in waiters:
                w()
        return ev

    def read(self, after: int = 0, limit: int | None = None) -> list[Event]:
        """Events with ``seq > after`` (at most ``limit``), sealed against coalescing."""
        if after < 0:
            after = 0
        end = len(self.events) if limit is None else min(len(self.events), after + limit)
        out = self.events[after:end]
        if out:
            # Only the tail can be unsealed; reading it freezes its text.
            out[-1].seal()
        return out

    def wait(self, waiter: Waiter) -> None:
        """Call ``waiter`` once, at the next append (or close)."""
        self._waiters.append(waiter)

    def cancel_wait(self, waiter: Waiter) -> None:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass

    def _wake(self) -> None:
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for w in waiters:
                w()
