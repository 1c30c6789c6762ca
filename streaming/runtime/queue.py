"""Generations started by queueing them for workers (``streaming serve --role api``).

An API process runs no generation: :class:`QueueDispatch` checks that a live worker
announces the generator (else 503 ``no_worker``), writes the generation ``waiting`` and
queues it (429 ``limit_exceeded`` with ``Retry-After`` beyond the queue's size). A worker
(:mod:`streaming.runtime.worker`) starts it; until then it is a :class:`QueuedGeneration`,
an :class:`~streaming.runtime.elsewhere.ElsewhereGeneration` that can also be cancelled
while it waits (the API process takes the start gate and ends it itself).
"""

from __future__ import annotations

import logging
from typing import Any

import anyio

from streaming.capabilities import CapabilityImpl, RequestedCapabilities, SupportLevel, Tool
from streaming.capability_block import capability_block, offered_tools
from streaming.errors import (
    ConflictError,
    InvalidRequestError,
    LimitExceededError,
    ModelUnavailableError,
    NotFoundError,
    StreamingError,
    UnknownGeneratorError,
)
from streaming.lifecycle import GenerationMachine
from streaming.log import EventLog
from streaming.model import File, Generation, GenerationState, new_id
from streaming.requests import GenerateRequest
from streaming.runtime.claims import check_replaced
from streaming.runtime.elsewhere import ElsewhereGeneration
from streaming.runtime.registry import GeneratorRegistry
from streaming.stores.base import Store
from streaming.stores.redis import RedisStore
from streaming.stores.redis_queue import QueueSnapshot, RedisQueue, WorkerInfo

__all__ = ["AnnouncedGenerators", "QueueDispatch", "QueuedGeneration", "api_dispatch", "end_unstarted", "request_json"]

logger = logging.getLogger("streaming.runtime")


def request_json(request: GenerateRequest) -> str:
    """The request as the worker reads it back (``GenerateRequest.model_validate_json``)."""
    return request.model_dump_json(exclude_defaults=True)


async def end_unstarted(store: Store, generation: Generation, error: StreamingError | None, reason: str = "cancelled") -> None:
    """End a generation that never started: ``generation.started`` (no blocks), then
    ``generation.failed`` with ``error`` (or ``generation.cancelled``)."""
    machine = GenerationMachine(generation.snapshot(), EventLog(generation.id))
    machine.start([], None)
    if error is not None:
        machine.fail(error.code, error.message, error.suggestion)
    else:
        machine.cancel(reason)
    await store.append_events(generation.id, machine.log.read(0))
    ended = machine.generation.snapshot()
    ended.last_seq = machine.log.last_seq
    await store.put_generation(ended)


class QueuedGeneration(ElsewhereGeneration):
    """A generation run by a worker: as any generation elsewhere, plus a cancel that ends
    it here while no worker has started it."""

    __slots__ = ("queue",)

    def __init__(self, generation: Generation, store: Store, queue: RedisQueue) -> None:
        super().__init__(generation, store)
        self.queue = queue

    async def cancel(self, reason: str, wait_s: float) -> Generation:
        if self.generation.state is GenerationState.WAITING and await self.queue.gate(self.id) == 1:
            await end_unstarted(self.store, self.generation, None, reason)
            return await self._reread()
        return await super().cancel(reason, wait_s)


class QueueDispatch:
    """What a runtime starts generations through when workers run them."""

    def __init__(self, store: RedisStore, *, max_depth: int = 1000, retry_after_s: int = 1) -> None:
        self.store = store
        self.queue = RedisQueue(store, max_depth=max_depth)
        self.retry_after_s = retry_after_s
        #: the last snapshot read (what /metrics and /healthz show)
        self.latest = QueueSnapshot()
        self._read_at = float("-inf")

    async def snapshot(self, max_age_s: float = 0.0) -> QueueSnapshot:
        """Live workers and queues, read again unless the last read is younger than ``max_age_s``."""
        now = anyio.current_time()
        if now - self._read_at > max_age_s:
            self.latest = await self.queue.snapshot()
            self._read_at = now
        return self.latest

    async def watch(self, every_s: float = 1.0) -> None:
        """Read the workers and queues every ``every_s`` (what the generator listing uses)."""
        while True:
            try:
                await self.snapshot()
            except StreamingError as exc:
                logger.warning("reading the workers' announcements failed: %s", exc)
            await anyio.sleep(every_s)

    async def enqueue(self, request: GenerateRequest, owner: str | None) -> Generation:
        """Queue a generation for a worker; return it ``waiting``.

        Raises:
            ModelUnavailableError: no live worker announces the generator (503 ``no_worker``).
            LimitExceededError: its queue is full (429, ``Retry-After``).
        """
        name = request.generator
        if name not in (await self.snapshot(0.5)).hosted() and name not in (await self.snapshot()).hosted():
            hosted = sorted(self.latest.hosted())
            raise ModelUnavailableError(
                f"no live worker hosts generator {name!r}",
                code="no_worker",
                suggestion=("generators hosted now: " + ", ".join(hosted)) if hosted
                else "start a worker: streaming worker --store redis://...",
            )
        # Capabilities are checked here, as a process running it would, before anything is
        # queued (a server-side tool named by a string is the worker's: only its name counts).
        tools = offered_tools(request.tools, lambda tool: Tool(name=tool))
        cap_block = capability_block(request.capabilities, tools)
        if cap_block is not None:
            announced = _Announced(name, self.latest.hosted()[name])
            RequestedCapabilities(announced.supported_capabilities).extract_from_blocks([cap_block])
        if request.file_id is not None:
            file = await self.store.get_file(request.file_id)
            if file is None or file.owner != owner:
                raise NotFoundError(f"no conversation {request.file_id!r}")
            if request.replace:
                # Refused here, as a process running it would (the worker checks again,
                # under the claim: a turn may leave the conversation meanwhile).
                check_replaced(file, request.replace)
        else:
            # A new conversation is made here (empty) rather than by the worker: the answer
            # names it, and a next message finds it, and this turn in its way, at once. The
            # worker continues it like any conversation. (Refused below, with 429, it stays
            # empty and expires with the store's ttl.)
            file = File(owner=owner)
            await self.store.put_file(file)
            request = request.model_copy(update={"file_id": file.id})
        generation = Generation(
            id=new_id("gen"), generator=name, file_id=request.file_id, on_disconnect=request.on_disconnect, owner=owner
        )
        queued = await self.queue.enqueue(generation, request_json(request), owner, request.multitask)
        if isinstance(queued, str):
            # multitask reject, checked in the script that queues: a generation runs on
            # the conversation, or another turn of it waits for a worker.
            raise ConflictError(
                f"conversation {request.file_id} has a generation running or waiting ({queued})",
                suggestion="wait for it to finish or cancel it first, or send multitask",
                details={"generation_id": queued},
            )
        if not queued:
            raise LimitExceededError(
                f"the queue of generator {name!r} is full ({self.queue.max_depth} waiting)",
                suggestion="retry later",
                details={"retry_after": self.retry_after_s},
            )
        logger.info("generation %s queued for a worker (%s)", generation.id, name, extra={"generation_id": generation.id})
        return generation

    async def health(self) -> dict[str, Any]:
        """What ``GET /healthz`` of an API process adds: the live workers and the queues."""
        snap = await self.snapshot()
        return {
            "role": "api",
            "workers": [
                {"id": w.id, "generators": w.generators, "capabilities": w.capabilities,
                 "concurrency": w.concurrency, "running": w.running, "pid": w.pid, "host": w.host}
                for w in snap.workers
            ],
            "queues": {
                name: {"depth": snap.depth.get(name, 0), "oldest_wait_s": round(snap.oldest_wait_s.get(name, 0.0), 3)}
                for name in sorted(snap.depth)
            },
        }

    async def find(self, store: Store, generation_id: str) -> QueuedGeneration:
        """Raises NotFoundError."""
        generation = await store.get_generation(generation_id)
        if generation is None:
            raise NotFoundError(f"no generation {generation_id!r}")
        return QueuedGeneration(generation, store, self.queue)


def api_dispatch(store: Store, max_depth: int = 1000) -> QueueDispatch:
    """The dispatch of an API process on ``store``.

    Raises:
        InvalidRequestError: ``store`` is not a redis store (workers share a Redis).
    """
    if not isinstance(store, RedisStore):
        raise InvalidRequestError(
            "the api role needs a redis store (workers take generations from a Redis queue)",
            suggestion="--store redis://host:6379/0",
        )
    return QueueDispatch(store, max_depth=max_depth)


def _capability_types() -> dict[str, type[CapabilityImpl]]:
    found: dict[str, type[CapabilityImpl]] = {}
    todo = list(CapabilityImpl.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls.NAME:
            found[cls.NAME] = cls
    return found


class _Announced:
    """What an API process knows of a generator a worker hosts: its announcement."""

    def __init__(self, name: str, worker: WorkerInfo) -> None:
        types = _capability_types()
        self.supported_capabilities: dict[type[CapabilityImpl], SupportLevel] = {
            types[cap]: SupportLevel(int(level))
            for cap, level in worker.capabilities.get(name, {}).items() if cap in types and level.isdigit()
        }
        detail = worker.details.get(name, {})
        self.description = str(detail.get("description") or "")
        self._reason = detail.get("reason") if not detail.get("chat", True) else None

    def chat_unavailable_reason(self) -> str | None:
        return str(self._reason) if self._reason is not None else None


class AnnouncedGenerators(GeneratorRegistry):
    """The generators of an API process: those the live workers announce (no code loaded).
    Read from the dispatch's last snapshot (refreshed every second by the app)."""

    def __init__(self, dispatch: QueueDispatch) -> None:
        super().__init__()
        self.dispatch = dispatch

    def register(self, name: str, plugin: Any, config: Any = None) -> Any:
        """Nothing: an API process runs no generator (the plugin instances it hosts offer
        theirs only where they run, in the default role)."""
        return plugin

    def __contains__(self, name: object) -> bool:
        return name in self.dispatch.latest.hosted()

    def __iter__(self) -> Any:
        return iter(self.names())

    def names(self) -> list[str]:
        return sorted(self.dispatch.latest.hosted())

    def get(self, name: str) -> Any:
        worker = self.dispatch.latest.hosted().get(name)
        if worker is None:
            raise UnknownGeneratorError(
                f"no live worker hosts generator {name!r}",
                suggestion="generators hosted now: " + (", ".join(self.names()) or "none"),
            )
        return _Announced(name, worker)
