"""A queue worker: takes generations from the Redis queue and runs them in its runtime.

It hosts its runtime's generators and announces them (with their capabilities, its
concurrency and how many it runs) every third of a lease; it takes entries only from the
queues of those generators, at most ``concurrency`` running at once. A generation runs
here as any other (a :class:`~streaming.runtime.handles.LocalGeneration` of this runtime,
an :class:`~streaming.runtime.elsewhere.ElsewhereGeneration` for the API processes:
cancel and tool results reach it as control messages, a dead worker's generations are
reaped by the lease), started through the gate of :mod:`streaming.stores.redis_queue` so
that an entry reclaimed from a stalled or dead worker is started exactly once.

Double texting: a turn with ``multitask: enqueue`` is started only once it is the first of
its conversation's queued turns still waiting and the conversation is free (this worker
claims it then); until then the worker hands its entry back (it holds no slot while the
turn waits) and the entry is taken again, by any worker, ``RETRY_S`` later. A turn with
``interrupt`` or ``rollback`` first ends the conversation's turns queued before it that
no worker has started (cancelled, with the reason the runtime gives the one it cancels).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import anyio
from anyio.abc import TaskGroup

from streaming.errors import StreamingError
from streaming.model import GenerationState
from streaming.readiness import describe
from streaming.requests import GenerateRequest
from streaming.runtime.control import presence_window
from streaming.runtime.facade import Runtime
from streaming.runtime.handles import LocalGeneration
from streaming.runtime.queue import end_unstarted
from streaming.stores.redis_queue import QueueItem, RedisQueue

__all__ = ["Worker"]

logger = logging.getLogger("streaming.worker")

#: how soon an ``enqueue`` turn handed back (its conversation busy) is taken again
RETRY_S = 0.25


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
        self._handed_back_at = float("-inf")

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
                    # Entries handed back are taken again RETRY_S later: look often meanwhile.
                    soon = anyio.current_time() - self._handed_back_at < self.queue.store.lease_s
                    self._backlog = await self.queue.take(self.generators, free, block_ms=100 if soon else 1000)
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
        it started or ended, or hand it back while its conversation is not its turn's. The
        run, or None."""
        try:
            request: GenerateRequest | None = GenerateRequest.model_validate_json(item.request)
        except Exception:  # noqa: BLE001 - malformed: ended below, through the gate
            request = None
        file_id = request.file_id if request is not None else None
        if request is not None and file_id is not None and request.multitask == "enqueue":
            if not await self._its_turn(item, file_id):
                await self.queue.hand_back(item, RETRY_S)
                self._handed_back_at = anyio.current_time()
                return None
        verdict = await self.queue.gate(item.generation_id)
        if verdict == 0:
            return None  # a live worker has it and drops the entry itself
        run = None
        if verdict == 1:
            try:
                if request is None:
                    request = GenerateRequest.model_validate_json(item.request)
                if file_id is not None and request.multitask in ("interrupt", "rollback"):
                    await self._end_turns_before(item, file_id, request.multitask == "rollback")
                await self.runtime.start(request, owner=item.owner, generation_id=item.generation_id)
                handle = await self.runtime.handle(item.generation_id)
                run = handle.run if isinstance(handle, LocalGeneration) else None
                if run is not None:
                    # The API process that queued it streams it (its presence, said before
                    # this process listened, is lost): its events go to Redis every tick.
                    run.watched(presence_window(self.runtime.store))
            except Exception as exc:  # noqa: BLE001 - refused, or a malformed entry: it ends here
                await self._end(item, exc if isinstance(exc, StreamingError) else StreamingError(f"could not start: {exc}"))
        elif file_id is not None:
            # No longer waiting (cancelled meanwhile): drop the claim _its_turn may have made.
            await self.runtime.store.release_file(file_id, item.generation_id)
        await self.queue.done(item)
        return run

    async def _its_turn(self, item: QueueItem, file_id: str) -> bool:
        """Whether an ``enqueue`` turn may start now: it is the first of its conversation's
        queued turns still waiting, and this worker could claim the conversation for it.
        (One no longer waiting, cancelled meanwhile, goes on to the gate, which drops it.)"""
        turns = await self.queue.waiting_turns(file_id)
        if item.generation_id not in turns:
            return True
        if turns[0] != item.generation_id:
            return False
        return await self.runtime.store.claim_file(file_id, item.generation_id) is None

    async def _end_turns_before(self, item: QueueItem, file_id: str, rollback: bool) -> None:
        """``interrupt`` and ``rollback``: the conversation's turns queued before this one
        and not started are cancelled (a worker starting one now holds its gate: the
        runtime's take-over cancels it as the conversation's holder)."""
        reason = "rolled back: a new message came" if rollback else "interrupted: a new message came"
        store = self.runtime.store
        for other in await self.queue.waiting_turns(file_id):
            if other == item.generation_id:
                break
            if await self.queue.gate(other) != 1:
                continue
            waiting = await store.get_generation(other)
            if waiting is not None and waiting.state is GenerationState.WAITING:
                await end_unstarted(store, waiting, None, reason)
            elif getattr(store, "gated", None) is not None:
                store.gated.discard(other)  # type: ignore[attr-defined]

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
