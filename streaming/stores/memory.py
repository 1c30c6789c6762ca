"""``memory://``: everything in this process's memory (tests and a quick start).

A finished generation's record and event log are kept for ``ttl`` seconds (default one
day, as on Redis; ``0``: no limit of age) and at most ``keep`` finished generations at
once (default 10,000), the oldest dropped first, when the next one finishes: the events
are what a long-running server would otherwise pile up (a few hundred bytes each, for
every token ever streamed). Conversations (a file and its blocks) go the same way: one
not written for ``ttl`` seconds, or past the ``keep`` most recently written, is dropped
with its blocks when a generation finishes, unless a generation on it is still running
(on Redis a conversation expires ``ttl`` after its last write too). A turn that names a
dropped conversation gets ``not_found``. URL parameters: ``memory://?ttl=SECONDS&keep=N``.
"""

from __future__ import annotations

import time
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from streaming.errors import InvalidRequestError, StoreError
from streaming.events import Event
from streaming.model import Block, File, Generation
from streaming.stores.base import Store, refuse_unknown_parameters
from streaming.stores.follow import follow_log

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """A store in memory; nothing survives the process.

    Args:
        ttl_s: seconds a finished generation's record and log, and a conversation not
            written since, are kept (0: no limit).
        keep: finished generations kept at most, and conversations (the oldest go first).
    """

    url = "memory://"
    durable = False

    def __init__(self, *, control_buffer: int = 64, ttl_s: float = 86_400.0, keep: int = 10_000) -> None:
        if not ttl_s >= 0 or keep < 1:  # (NaN is not >= 0)
            raise InvalidRequestError(
                f"memory store: ttl must be at least 0 and keep at least 1 (got ttl={ttl_s:g}, keep={keep})"
            )
        self.ttl_s = ttl_s
        self.keep = keep
        #: finished generations, oldest first, and when they finished (monotonic)
        self._finished: OrderedDict[str, float] = OrderedDict()
        self._generations: dict[str, Generation] = {}
        self._blocks: dict[str, Block] = {}
        self._files: dict[str, tuple[File, list[str]]] = {}
        #: conversations, least recently written first, and when they were (monotonic)
        self._written: OrderedDict[str, float] = OrderedDict()
        #: running generations' conversations: generation id -> file id, and how many
        #: running generations each of those conversations has
        self._running: dict[str, str] = {}
        self._in_use: dict[str, int] = {}
        self._logs: dict[str, list[Event]] = defaultdict(list)
        self._log_changed: dict[str, anyio.Event] = {}
        self._control: dict[str, list[MemoryObjectSendStream[dict[str, Any]]]] = defaultdict(list)
        self._claimed: dict[str, set[str]] = {}  # generation id -> tool calls answered
        self._control_buffer = control_buffer
        from streaming.stores.archives import MemoryArchives

        self._archives = MemoryArchives()

    @classmethod
    def from_url(cls, url: str) -> MemoryStore:
        """``memory://`` with optional ``ttl`` and ``keep`` parameters.

        Raises:
            InvalidRequestError: an unknown or bad parameter.
        """
        params = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
        refuse_unknown_parameters("memory", url, params, ("ttl", "keep"), "use ttl=SECONDS and keep=N")
        given: dict[str, Any] = {}  # (the others keep the constructor's defaults)
        try:
            if "ttl" in params:
                given["ttl_s"] = float(params["ttl"])
            if "keep" in params:
                given["keep"] = int(params["keep"])
        except ValueError as exc:
            raise InvalidRequestError(f"bad memory store URL parameter in {url!r}: {exc}") from exc
        return cls(**given)

    async def put_generation(self, generation: Generation) -> None:
        stored = self._generations.get(generation.id)
        if stored is not None and stored.state.finished:
            return  # a finished generation is final (a late write never reopens it)
        self._generations[generation.id] = generation.snapshot()
        if generation.state.finished:
            self._finished[generation.id] = time.monotonic()
            self._leave(generation.id)
            self._expire()
        elif generation.file_id is not None and generation.id not in self._running:
            self._running[generation.id] = generation.file_id
            self._in_use[generation.file_id] = self._in_use.get(generation.file_id, 0) + 1

    def _leave(self, generation_id: str) -> None:
        """A generation is no longer running: its conversation may go when due."""
        file_id = self._running.pop(generation_id, None)
        if file_id is not None:
            left = self._in_use[file_id] - 1
            if left:
                self._in_use[file_id] = left
            else:
                del self._in_use[file_id]

    def _expire(self) -> None:
        """Drop the records and logs of the finished generations past ``keep`` or ``ttl_s``,
        and the conversations not written for ``ttl_s`` or past the ``keep`` most recent
        (none a running generation is on)."""
        now = time.monotonic()
        oldest = now - self.ttl_s if self.ttl_s else None
        finished = self._finished
        while finished:
            generation_id, at = next(iter(finished.items()))
            if self._kept(len(finished), at, oldest):
                break
            del finished[generation_id]
            self._generations.pop(generation_id, None)
            self._logs.pop(generation_id, None)
            self._claimed.pop(generation_id, None)
            changed = self._log_changed.pop(generation_id, None)
            if changed is not None:
                changed.set()  # (a reader waiting on it reads again, and finds it gone)
        written = self._written
        passed = 0  # conversations in use passed over (each goes to the back once)
        while passed < len(written):
            file_id, at = next(iter(written.items()))
            if self._kept(len(written), at, oldest):
                return
            if file_id in self._in_use:  # a generation on it runs: as if written now
                written[file_id] = now
                written.move_to_end(file_id)
                passed += 1
                continue
            del written[file_id]
            _, block_ids = self._files.pop(file_id)
            for block_id in block_ids:
                self._blocks.pop(block_id, None)

    def _kept(self, count: int, at: float, oldest: float | None) -> bool:
        """Whether the oldest of ``count`` finished generations (or conversations), which
        finished (or was written) ``at``, stays: within ``keep``, and not before ``oldest``."""
        return count <= self.keep and (oldest is None or at >= oldest)

    async def get_generation(self, generation_id: str) -> Generation | None:
        gen = self._generations.get(generation_id)
        return gen.snapshot() if gen else None

    async def put_blocks(self, blocks: Sequence[Block]) -> None:
        for block in blocks:
            self._blocks[block.id] = block.snapshot()

    async def get_block(self, block_id: str) -> Block | None:
        block = self._blocks.get(block_id)
        return block.snapshot() if block else None

    async def put_file(self, file: File) -> None:
        await self.put_blocks(file.blocks)
        meta = file.model_copy(update={"blocks": [], "tags": list(file.tags)})
        self._keep_file(meta, [b.id for b in file.blocks])

    async def put_handed_over_file(self, file: File) -> None:
        """As :meth:`put_file`, keeping the blocks themselves (not copies)."""
        blocks = self._blocks
        for block in file.blocks:
            blocks[block.id] = block
        self._keep_file(file.model_copy(update={"blocks": []}), [b.id for b in file.blocks])

    def _keep_file(self, meta: File, block_ids: list[str]) -> None:
        self._files[meta.id] = (meta, block_ids)
        self._written[meta.id] = time.monotonic()
        self._written.move_to_end(meta.id)

    async def get_file(self, file_id: str) -> File | None:
        found = self._files.get(file_id)
        if found is None:
            return None
        meta, ids = found
        blocks = [self._blocks[i].snapshot() for i in ids if i in self._blocks]
        return meta.model_copy(update={"blocks": blocks, "tags": list(meta.tags)})

    async def append_events(self, generation_id: str, events: Sequence[Event]) -> None:
        log = self._logs[generation_id]
        if events and log and log[-1].terminal:
            raise StoreError(
                f"the event log of {generation_id} has ended; it takes no more events", code="log_closed"
            )
        if events and events[0].seq != len(log) + 1:
            raise StoreError(
                f"event log of {generation_id} would have a gap: has {len(log)}, got seq {events[0].seq}",
                code="log_gap",
                details={"stored_seq": len(log)},
            )
        log.extend(events)
        changed = self._log_changed.pop(generation_id, None)
        if changed is not None:
            changed.set()

    async def read_events(
        self, generation_id: str, after: int = 0, limit: int | None = None
    ) -> list[Event]:
        log = self._logs.get(generation_id, [])
        after = max(after, 0)
        return log[after:] if limit is None else log[after : after + limit]

    def follow(self, generation_id: str, after: int = 0) -> AsyncIterator[list[Event]]:
        async def read(after: int) -> list[Event]:
            events = await self.read_events(generation_id, after)
            for ev in events:
                ev.seal()
            return events

        async def wait() -> None:
            changed = self._log_changed.get(generation_id)
            if changed is None:
                changed = self._log_changed[generation_id] = anyio.Event()
            await changed.wait()

        return follow_log(read, wait, after)

    async def publish_control(self, generation_id: str, message: dict[str, Any]) -> None:
        for stream in list(self._control.get(generation_id, [])):
            try:
                stream.send_nowait(message)
            except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass

    @asynccontextmanager
    async def control(self, generation_id: str) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](self._control_buffer)
        self._control[generation_id].append(send)
        try:
            async with receive:
                yield receive
        finally:
            self._control[generation_id].remove(send)
            if not self._control[generation_id]:
                del self._control[generation_id]
            send.close()

    async def claim_tool_result(self, generation_id: str, call_id: str) -> bool:
        claimed = self._claimed.setdefault(generation_id, set())
        if call_id in claimed:
            return False
        claimed.add(call_id)
        return True

    # -- model archives --

    async def put_archive(self, key: str, data: bytes) -> str:
        return await self._archives.put_archive(key, data)

    async def get_archive(self, key: str) -> bytes | None:
        return await self._archives.get_archive(key)

    async def archive_digest(self, key: str) -> str | None:
        return await self._archives.archive_digest(key)
