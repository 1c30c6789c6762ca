"""A queue worker: takes generations from the Redis queue and runs them in its runtime.

It hosts its runtime's generators and announces them (with their capabilities, its
concurrency and how many it runs) every third of a lease; it takes entries only from the
queues of those generators, at most ``concurrency`` running at once. A generation runs
here as any other (a :class:`~streaming.runtime.handles.LocalGeneration` of this runtime,
an :class:`~streaming.runtime.elsewhere.ElsewhereGeneration` for the API processes:
cancel and tool results reach it as control messages, a dead worker's generations are
reaped by the lease), started through the gate of :mod:`streaming.stores.redis_queue` so
that an entry reclaimed from a stalled or dead worker is started exactly once.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import anyio
from anyio.abc import TaskGroup

from streaming.errors import StreamingError
from streaming.readiness import describe
from streaming.requests import GenerateRequest
from streaming.runtime.facade import Runtime
from streaming.runtime.handles import LocalGeneration
from streaming.runtime.queue import end_unstarted
from streaming.stores.redis_queue import QueueItem, RedisQueue

__all__ = ["Worker"]

logger = logging.getLogger("streaming.worker")


def capabilities_of(runtime: Runtime) -> dict[str, dict[str, str]]:
    """Each generator's supported capabilities, by name, as announced."""
    out: dict[str, dict[str, str]] = {}
    for name in runtime.generators.names():
        plugin = runtime.generators.get(name)
        caps = getattr(plugin, "supported_capabilities", {}) or {}
        out[name] = {
            str(getattr(cap, "NAME", getattr(cap, "__name__", cap))): str(getattr(level, "value", level))
            for cap, level in caps.items()
        }
    return out


class Worker:
    def __init__(self, runtime: Runtime, queue: RedisQueue, *, concurrency: int = 16) -> None:
        self.runtime = runtime
        self.queue = queue
        self.concurrency = max(1, concurrency)
        self.generators = runtime.generators.names()
        self.active: set[str] = set()  # entries taken and not yet ended here
        self._backlog: list[QueueItem] = []  # taken from the queue, not started yet
        self._freed = anyio.Event()
        self.stopping = False
        self._details: dict[str, Any] | None = None

    async def announce(self) -> None:
        if self._details is None:  # once: a readiness probe may cost something
            self._details = {name: await describe(name, self.runtime.generators.get(name)) for name in self.generators}
        await self.queue.announce(
            self.generators, capabilities_of(self.runtime), self.concurrency, len(self.active),
            {"pid": os.getpid(), "host": socket.gethostname(), "details": self._details},
        )

    async def run(self) -> None:
        """Announce and take work until :meth:`stop` (or cancelled)."""
        await self.announce()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._announce_loop)
            try:
                await self._take_loop(tg)
            finally:
                tg.cancel_scope.cancel()

    def stop(self) -> None:
        self.stopping = True
        self._wake()

    def _wake(self) -> None:
        freed, self._freed = self._freed, anyio.Event()
        freed.set()

    async def _announce_loop(self) -> None:
        while True:
            await anyio.sleep(self.queue.store.lease_s / 3)
            try:
                await self.announce()
            except StreamingError as exc:
                logger.warning("worker announcement failed: %s", exc)

    async def _take_loop(self, tg: TaskGroup) -> None:
        while not self.stopping:
            free = self.concurrency - len(self.active)
            if free <= 0:
                with anyio.move_on_after(1.0):
                    await self._freed.wait()
                continue
            if not self._backlog:
                try:
                    self._backlog = await self.queue.take(self.generators, free, block_ms=1000)
                except StreamingError as exc:
                    logger.warning("worker: reading the queue failed: %s", exc)
                    await anyio.sleep(0.5)
                    continue
            while self._backlog and len(self.active) < self.concurrency and not self.stopping:
                item = self._backlog.pop(0)
                self.active.add(item.generation_id)
                tg.start_soon(self._run_item, item)

    async def _run_item(self, item: QueueItem) -> None:
        try:
            run = await self._start(item)
            if run is not None:
                await run.done.wait()
        except StreamingError as exc:
            logger.warning("worker: generation %s: %s", item.generation_id, exc, extra={"generation_id": item.generation_id})
        finally:
            self.active.discard(item.generation_id)
            self._wake()

    async def _start(self, item: QueueItem) -> Any:
        """Start the entry's generation if this worker may (the gate); drop the entry once
        it started or ended. The run, or None."""
        verdict = await self.queue.gate(item.generation_id)
        if verdict == 0:
            return None  # a live worker has it and drops the entry itself
        run = None
        if verdict == 1:
            try:
                request = GenerateRequest.model_validate_json(item.request)
                await self.runtime.start(request, owner=item.owner, generation_id=item.generation_id)
                handle = await self.runtime.handle(item.generation_id)
                run = handle.run if isinstance(handle, LocalGeneration) else None
            except Exception as exc:  # noqa: BLE001 - refused, or a malformed entry: it ends here
                await self._end(item, exc if isinstance(exc, StreamingError) else StreamingError(f"could not start: {exc}"))
        await self.queue.done(item)
        return run

    async def _end(self, item: QueueItem, error: StreamingError) -> None:
        """End a generation that could not start, if it is still waiting and ours (not if
        another worker started it while this one stalled: ``not_ours``)."""
        store = self.runtime.store
        if getattr(store, "gated", None) is not None:
            store.gated.discard(item.generation_id)  # type: ignore[attr-defined]
        if error.code == "not_ours" or await self.queue.gate(item.generation_id) != 1:
            logger.warning("worker: generation %s: %s", item.generation_id, error.message,
                           extra={"generation_id": item.generation_id})
            return
        waiting = await store.get_generation(item.generation_id)
        if waiting is not None and not waiting.state.finished:
            await end_unstarted(store, waiting, error)
