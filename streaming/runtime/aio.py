"""The few asyncio pieces the runtime is built from, kept lean on purpose.

An idle open stream costs memory for each object it keeps alive, and the runtime is
measured on it (under 40,000 bytes an idle stream, ``docs/benchmarks.md``). What made the
difference, and is kept here so that it stays in one place:

- a generation is one plain asyncio task (not a task in an anyio task group, which adds a
  handle and a cancel scope per task), owned by a :class:`~streaming.tasks.TaskOwner`
  that awaits it;
- a subscriber waits on a bare loop future (:func:`wake_future`), not on an event, and
  not through a helper coroutine;
- a finished-flag that most generations never wait on makes its future only when someone
  waits (:class:`LazyEvent`);
- timers (the disconnect grace, how long a finished generation stays in memory) are loop
  timers, not sleeping tasks;
- a plugin task yields to the loop only if it has not been suspended during its time slice
  (:class:`TurnMark`): a plugin paced by its own sleeps is never made to wait a loop turn
  more per chunk.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

__all__ = ["LazyEvent", "TurnMark", "resolve", "wake_future"]


def resolve(future: asyncio.Future[None]) -> None:
    """Resolve ``future`` unless it is done (a waker may be called after a cancel)."""
    if not future.done():
        future.set_result(None)


def wake_future() -> tuple[asyncio.Future[None], Callable[[], None]]:
    """A bare loop future and the waker that resolves it (for a callback-style wake-up such
    as :meth:`~streaming.log.EventLog.wait`). Awaited where it is made, not in a helper
    coroutine: a coroutine's frame would cost an idle subscriber ~300 bytes more."""
    woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    return woken, functools.partial(resolve, woken)


class LazyEvent:
    """A set-once flag whose waiters' futures are made only when someone waits (most
    generations end with nobody waiting for them)."""

    __slots__ = ("_flag", "_waiters")

    def __init__(self) -> None:
        self._flag = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        self._flag = True
        waiters, self._waiters = self._waiters, None
        for future in waiters or ():
            resolve(future)

    async def wait(self) -> None:
        if self._flag:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(future)
        try:
            await future
        finally:
            if self._waiters is not None and future in self._waiters:
                self._waiters.remove(future)


class TurnMark:
    """Whether the event loop has run its callbacks since :meth:`arm`.

    A task that never awaits holds the loop, so no callback runs until it yields: if the
    mark has turned, the task that armed it has been suspended since (and every other task
    had its turn). One loop callback per arm, far cheaper than a yield that costs the task
    a trip to the back of the loop's queue.
    """

    __slots__ = ("turned", "_call_soon")

    def __init__(self) -> None:
        self.turned = False
        self._call_soon = asyncio.get_running_loop().call_soon

    def _set(self) -> None:
        self.turned = True

    def arm(self) -> None:
        self.turned = False
        # (Bound at each arm: a bound method kept on the mark would be a reference cycle,
        # which only the cyclic collector frees, with all it holds.)
        self._call_soon(self._set)
