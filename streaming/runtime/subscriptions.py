"""Subscriptions to generations running here: how many, following the log, and what
happens when the last one leaves.

A subscriber reads the run's :class:`~streaming.log.EventLog` by cursor (replay, then live)
and, when it has caught up, waits on a bare loop future woken by the next append; or, if
its consumer offers a *write-through* sink (``batches.asend(sink)``: the SSE and WebSocket pumps do),
the next appends are handed to that sink as they happen, without waking the consumer's
task at all (:class:`WriteThrough`). A
generation with ``on_disconnect=cancel`` that has had no subscriber for
``disconnect_grace_s`` is cancelled (a loop timer, restarted whenever a subscriber leaves
or another process says someone streams it there).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable

from streaming.errors import LimitExceededError
from streaming.events import Event
from streaming.log import EventLog
from streaming.model import OnDisconnect
from streaming.runtime.aio import resolve, wake_future
from streaming.runtime.run import Run
from streaming.runtime.settings import RuntimeSettings

__all__ = ["Sink", "Subscriptions", "WriteThrough"]

#: A consumer's write-through sink: called with a batch of events where they are appended
#: (in the producer's task, or a loop callback soon after). The events are the sink's either
#: way; it returns True if it wrote them, False if its consumer must take over (their write
#: has to wait, or it failed, or the consumer is leaving), in which case the subscription
#: hands control back to the consumer's task (an empty batch, or its end).
Sink = Callable[[list[Event]], bool]

#: Appends closer together than this (a burst: a plugin writing faster than a client
#: reads) are handed over once per loop turn rather than each at once, so that they
#: coalesce into one event and one write, as they do for a subscriber woken in its task.
BURST_S = 0.001


class WriteThrough:
    """Hands ``log``'s events after ``after`` to ``sink`` as they are appended, until the
    terminal event, until the sink declines, or until :meth:`stop`; ``done`` resolves then,
    and ``after`` says how far the sink got.

    A paced stream (a model's tokens, tens of milliseconds apart) costs one call of the
    sink per event in the producer's own task: no future, no wake-up of the subscriber's
    task, none of the frames above it resumed. A burst is handed over by one loop callback
    at the end of the producer's turn.
    """

    __slots__ = ("log", "after", "sink", "limit", "done", "_loop", "_last", "_on_append")

    def __init__(self, log: EventLog, after: int, sink: Sink, limit: int) -> None:
        self.log = log
        self.after = after
        self.sink = sink
        self.limit = limit
        self._loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self._loop.create_future()
        self._last = float("-inf")  # when the sink last got events
        # One bound method for every wait (no allocation per event), deleted once done: a
        # bound method kept on its own object is a reference cycle, which only the cyclic
        # collector frees (with all it holds: the sink's response, its ASGI callables).
        self._on_append: Callable[[], None] = self._appended
        log.wait(self._on_append)

    def _appended(self, later: bool = False) -> None:
        if self.done.done():
            return
        loop = self._loop
        now = loop.time()
        if not later and now - self._last < BURST_S:
            loop.call_soon(self._appended, True)  # (the appends meanwhile join the tail event)
            return
        log = self.log
        events = log.read(self.after, self.limit)
        if events:
            self.after = events[-1].seq
            self._last = now
            try:
                wrote = self.sink(events)
            except Exception:  # (a sink reports its own failures; this one broke its word)
                wrote = False
            if not wrote:
                self._end()
                return
            if self.after < len(log.events):  # more than one read's worth was waiting
                loop.call_soon(self._appended, True)
                return
        if log.closed:
            self._end()  # (the sink has had the terminal event)
            return
        log.wait(self._on_append)

    def stop(self) -> None:
        """Hand nothing more over (the consumer is leaving)."""
        self.log.cancel_wait(self._appended)  # (a bound method equals another of the same)
        self._end()

    def _end(self) -> None:
        resolve(self.done)
        if hasattr(self, "_on_append"):  # (stop may come after the end)
            del self._on_append


class Subscriptions:
    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings
        self.open = 0  # subscriptions open now, to every run

    def check(self, run: Run) -> None:
        """Raises LimitExceededError if ``run`` has as many subscribers as allowed."""
        if run.subscribers >= self.settings.max_subscribers_per_generation:
            raise LimitExceededError(
                f"generation {run.id} has {run.subscribers} subscribers already",
                suggestion="share one subscription, or retry later",
            )

    async def follow(self, run: Run, after: int = 0) -> AsyncGenerator[list[Event], Sink | None]:
        """Batches of ``run``'s events after ``after``, until its terminal event.

        A consumer that sends a :data:`Sink` in (``batches.asend(sink)``) gets the events
        after a caught-up batch through that sink instead (:class:`WriteThrough`), and its
        next step only once the sink declines (an empty batch) or the stream ends.

        Raises:
            LimitExceededError: it has as many subscribers as allowed.
        """
        self.check(run)
        run.subscribers += 1
        self.open += 1
        log = run.log
        limit = self.settings.read_batch
        sink: Sink | None = None  # the consumer's write-through sink, if it offers one
        try:
            while True:
                events = log.read(after, limit)
                if events:
                    after = events[-1].seq
                    sink = yield events
                    if events[-1].terminal:
                        return
                    if after < log.last_seq:
                        continue  # more came while that batch went out
                elif log.closed:
                    return
                if sink is not None:
                    through = WriteThrough(log, after, sink, limit)
                    try:
                        await through.done
                    finally:
                        through.stop()
                    after = through.after
                    if log.closed and after >= log.last_seq:
                        return  # the sink has had the terminal event (a write of it that
                        # had to wait, the consumer finishes once this ends)
                    # The sink declined (a write has to wait, or it failed): the consumer
                    # takes over in its own task, then offers a sink again.
                    sink = yield []
                    continue
                woken, wake = wake_future()
                log.wait(wake)
                try:
                    await woken
                except BaseException:
                    log.cancel_wait(wake)  # (a wake-up takes itself off the list)
                    raise
        finally:
            run.subscribers -= 1
            self.open -= 1
            self.left(run)

    def left(self, run: Run) -> None:
        """Nobody here may be subscribed any more: (re)start the disconnect grace."""
        if run.subscribers > 0 or run.generation.on_disconnect is not OnDisconnect.CANCEL or run.done.is_set():
            return
        if run.grace_timer is not None:
            run.grace_timer.cancel()
        run.grace_timer = asyncio.get_running_loop().call_later(
            self.settings.disconnect_grace_s, self._grace_over, run
        )

    @staticmethod
    def _grace_over(run: Run) -> None:
        run.grace_timer = None
        if run.subscribers == 0:
            run.request_cancel("client disconnected")

    @staticmethod
    def ended(run: Run) -> None:
        """``run`` has ended: its disconnect grace no longer matters."""
        if run.grace_timer is not None:
            run.grace_timer.cancel()
            run.grace_timer = None
