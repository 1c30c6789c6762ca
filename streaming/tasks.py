"""Task ownership, for the runtime and the stores: no fire-and-forget task.

Everything that runs in the background runs in a plain asyncio task made through a
:class:`TaskOwner`, which keeps it, logs its failure the moment it fails, and at
:meth:`TaskOwner.aclose` cancels and awaits every one still running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["TaskOwner"]

logger = logging.getLogger("streaming.tasks")


class TaskOwner:
    """Owns plain asyncio tasks: keeps them, logs the failure of any that fails, and at
    :meth:`aclose` cancels and awaits every one still running. No task of the runtime is
    fire-and-forget: each is made through an owner."""

    def __init__(self, name: str, log: logging.Logger = logger) -> None:
        self.name = name
        self.log = log
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("%s: %s failed", self.name, task.get_name(), exc_info=task.exception())

    async def wait(self, timeout_s: float | None = None) -> None:
        """Until every task has ended (or ``timeout_s`` passed)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)

    async def aclose(self, timeout_s: float | None = None) -> None:
        """Cancel every task and wait until each has ended (at most ``timeout_s``: a task
        that swallows its cancel is left running, still owned, and cancelled again at the
        next call)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return
            await asyncio.wait(tasks, timeout=left)
