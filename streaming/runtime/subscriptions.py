"""Subscriptions to generations running here: how many, following the log, and what
happens when the last one leaves.

A subscriber reads the run's :class:`~streaming.log.EventLog` by cursor (replay, then live)
and, when it has caught up, waits on a bare loop future woken by the next append. A
generation with ``on_disconnect=cancel`` that has had no subscriber for
``disconnect_grace_s`` is cancelled (a loop timer, restarted whenever a subscriber leaves
or another process says someone streams it there).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from streaming.errors import LimitExceededError
from streaming.events import Event
from streaming.model import OnDisconnect
from streaming.runtime.aio import wake_future
from streaming.runtime.run import Run
from streaming.runtime.settings import RuntimeSettings

__all__ = ["Subscriptions"]


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

    async def follow(self, run: Run, after: int = 0) -> AsyncGenerator[list[Event], None]:
        """Batches of ``run``'s events after ``after``, until its terminal event.

        Raises:
            LimitExceededError: it has as many subscribers as allowed.
        """
        self.check(run)
        run.subscribers += 1
        self.open += 1
        log = run.log
        limit = self.settings.read_batch
        try:
            while True:
                events = log.read(after, limit)
                if events:
                    after = events[-1].seq
                    yield events
                    if events[-1].terminal:
                        return
                    if after < log.last_seq:
                        continue  # more came while that batch went out
                elif log.closed:
                    return
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
