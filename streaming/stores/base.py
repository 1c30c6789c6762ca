"""The store interface every backend implements (memory, sqlite, redis).

A store keeps four things: generations, blocks, files (a conversation and the order of its
blocks) and each generation's event log; and it carries *control signals* (cancel, tool
results) to whichever process runs a generation. The runtime writes events in batches
(``append_events``) and reads them back by cursor (``read_events``, ``follow``).

What a store is given (records, blocks, files) it copies or encodes, and keeps none of it:
the caller goes on changing its own objects (the runtime hands over the blocks of the
conversation it holds, uncopied). What it hands out is the caller's to change.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from streaming.errors import InvalidRequestError
from streaming.events import Event
from streaming.model import Block, File, Generation

__all__ = ["Store", "refuse_unknown_parameters"]


def refuse_unknown_parameters(store: str, url: str, given: Iterable[str], known: Iterable[str], suggestion: str) -> None:
    """Refuse a store URL with a query parameter the store does not read (a misspelt one
    would otherwise be ignored, silently).

    Raises:
        InvalidRequestError: naming the first unknown parameter, alphabetically.
    """
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise InvalidRequestError(f"{store} store URL {url!r}: unknown parameter {unknown[0]!r}", suggestion=suggestion)


class Store(ABC):
    """Abstract store. Methods raise :class:`~streaming.errors.StoreError` on backend failure."""

    url: str = ""
    #: True if several processes can share this store (generations, logs and control).
    shared: bool = False
    #: True if what is written outlives the process. A store that is neither durable nor
    #: shared only needs a generation once it has ended: the running process holds it.
    durable: bool = True
    #: True if :meth:`reserve_seq` keeps its marks (the runtime then calls it).
    keeps_sent_marks: bool = False

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect or create; called once before use."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release resources."""

    # -- records --

    @abstractmethod
    async def put_generation(self, generation: Generation) -> None:
        """Store the record; one already finished is final and is not replaced."""

    @abstractmethod
    async def get_generation(self, generation_id: str) -> Generation | None: ...

    @abstractmethod
    async def put_blocks(self, blocks: Sequence[Block]) -> None: ...

    @abstractmethod
    async def get_block(self, block_id: str) -> Block | None: ...

    @abstractmethod
    async def put_file(self, file: File) -> None:
        """Store the file's metadata and the order of its blocks (and the blocks)."""

    async def put_handed_over_file(self, file: File) -> None:
        """As :meth:`put_file`, of a file its caller hands over: it changes neither the file
        nor its blocks after this call, so a store that keeps objects may keep these as they
        are instead of copies (the runtime's store writer builds a file for each write). The
        default is :meth:`put_file`."""
        await self.put_file(file)

    @abstractmethod
    async def get_file(self, file_id: str) -> File | None:
        """The file with its blocks, in order."""

    async def put_all(
        self,
        generation: Generation,
        *,
        events: Sequence[Event] = (),
        blocks: Sequence[Block] = (),
        file: File | None = None,
        handed_over: bool = False,
    ) -> None:
        """Write what a generation changed, in this order: its new ``events`` (as
        :meth:`append_events`), ``blocks``, its conversation ``file`` (if given), and last
        its record (as :meth:`put_generation`). A store may write it all in one round trip
        (Redis: one script, atomic); the default calls those methods in turn.
        ``handed_over``: the caller hands ``file`` over, as :meth:`put_handed_over_file`.

        Raises:
            StoreError: as :meth:`append_events` (``log_gap``, ``log_closed``: then nothing
                else is written), or a write failed.
        """
        if events:
            await self.append_events(generation.id, events)
        if blocks:
            await self.put_blocks(blocks)
        if file is not None:
            await (self.put_handed_over_file(file) if handed_over else self.put_file(file))
        await self.put_generation(generation)

    async def put_started(
        self,
        generation: Generation,
        *,
        blocks: Sequence[Block] = (),
        file: File,
        claim: bool = False,
        reserve: int = 0,
        handed_over: bool = False,
    ) -> None:
        """Write a generation that starts here under an id minted for it: nothing of it is
        stored yet, so its log is empty and no control message can wait for it. Its input
        ``blocks``, its conversation ``file`` and its record, as :meth:`put_all`; with
        ``claim``, ``file`` (new: nobody else knows it yet) is also claimed for it, as
        :meth:`claim_file`; with ``reserve``, its first mark of how far its log may be
        sent, as :meth:`reserve_seq`. Whoever sees the generation (or its conversation)
        sees the claim and the mark too.

        A store may write it all at once (Redis: one script) and skip what it would
        otherwise read first (where the log ends); the default calls those methods in turn.
        """
        if claim:
            await self.claim_file(file.id, generation.id)
        await self.put_all(generation, blocks=blocks, file=file, handed_over=handed_over)
        if reserve:
            await self.reserve_seq(generation.id, reserve)

    # -- event logs --

    @abstractmethod
    async def append_events(self, generation_id: str, events: Sequence[Event]) -> None:
        """Append events whose ``seq`` continue the stored log without a gap.

        Raises:
            StoreError: code ``log_gap`` (``details["stored_seq"]`` is the stored log's last
                seq) if ``events`` do not start right after it; code ``log_closed`` if the
                log already ended with a terminal event.
        """

    async def append_many(self, logs: Sequence[tuple[str, Sequence[Event]]]) -> list[Exception | None]:
        """Append the events of several generations at once, each as :meth:`append_events`.

        Returns, for each ``(generation_id, events)`` in order, None if they were appended,
        else the error that refused them (``log_gap``, ``log_closed``, ...): one
        generation's refusal does not stop the others. A store may write them all in one
        round trip; the default appends one generation after another.

        Raises:
            StoreError: the write as a whole failed (any of them may or may not have landed).
        """
        results: list[Exception | None] = []
        for generation_id, events in logs:
            try:
                await self.append_events(generation_id, events)
            except Exception as exc:  # this generation's own failure, reported with it
                results.append(exc)
            else:
                results.append(None)
        return results

    @abstractmethod
    async def read_events(
        self, generation_id: str, after: int = 0, limit: int | None = None
    ) -> list[Event]: ...

    @abstractmethod
    def follow(self, generation_id: str, after: int = 0) -> AsyncIterator[list[Event]]:
        """Batches of events after ``after``, live, until the terminal event."""

    async def reserve_seq(self, generation_id: str, seq: int) -> None:  # noqa: B027 - optional hook
        """Record, durably before returning, that events of ``generation_id`` up to ``seq``
        may reach clients before they are stored (the runtime streams ahead of its batched
        writes, and calls this in steps before it does).

        A store that recovers a generation whose process died numbers the events it adds
        after the highest such mark, so no ``seq`` a client saw is reused for another event
        (see :func:`streaming.stores.recovery.close_interrupted`). The default keeps
        nothing: a store that is neither durable nor shared recovers nothing.
        """

    # -- control --

    @abstractmethod
    async def publish_control(self, generation_id: str, message: dict[str, Any]) -> None:
        """Send a control message to the process running ``generation_id``."""

    @abstractmethod
    def control(self, generation_id: str) -> AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]:
        """Subscribe to the control messages of ``generation_id``."""

    @abstractmethod
    async def claim_tool_result(self, generation_id: str, call_id: str) -> bool:
        """Atomically mark a tool call answered; False if it already was."""

    # -- conversations --

    async def claim_file(self, file_id: str, generation_id: str) -> str | None:
        """Claim conversation ``file_id`` for ``generation_id`` across every process that
        shares this store; None if claimed, else the id of the generation holding it.

        A claim whose generation has ended (or whose process died) is stale and is taken
        over. Stores used by one process need not claim (the runtime's own claims cover
        it): the default claims nothing and always succeeds.
        """
        return None

    async def release_file(self, file_id: str, generation_id: str) -> None:  # noqa: B027 - optional hook
        """Drop ``generation_id``'s claim on ``file_id`` (if it still holds it)."""

    # -- recovery --

    async def recover_interrupted(self) -> list[str]:
        """Fail generations left running by a dead process; return their ids."""
        return []

    # -- model archives (TrainableModel checkpoints; see streaming.stores.archives) --

    async def put_archive(self, key: str, data: bytes) -> str:
        """Keep ``data`` under ``key`` (replacing it); return its digest.

        Raises:
            InvalidRequestError: an unsafe key (see ``check_archive_key``).
            StoreError: this store keeps no archives, or the write failed.
        """
        from streaming.errors import StoreError

        raise StoreError(f"{type(self).__name__} keeps no model archives")

    async def get_archive(self, key: str) -> bytes | None:
        """The bytes under ``key``, or None. Raises as :meth:`put_archive`."""
        from streaming.errors import StoreError

        raise StoreError(f"{type(self).__name__} keeps no model archives")

    async def archive_digest(self, key: str) -> str | None:
        """The digest of the bytes under ``key`` (no download), or None."""
        from streaming.errors import StoreError

        raise StoreError(f"{type(self).__name__} keeps no model archives")
