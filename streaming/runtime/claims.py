"""Conversation claims: one generation at a time extends a conversation (``file_id``).

The claim is made in this process at once (no await between the check and the mark, so
two requests racing here cannot both pass), then across processes through the store
(``claim_file``; stores used by one process claim nothing). It is dropped once the
generation has ended and its last state is written. The conversation is read again once
claimed: that read is the one the next turn starts from.

Double texting (``multitask``) builds on this: a conversation's generations *waiting* here
(``enqueue``) queue in the order they came, and only the first of them tries to claim it;
a turn rolled back leaves the conversation and its blocks are replaced in the store by
tombstones (:func:`tombstone`), which read as "no such block".
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection

import anyio

from streaming.errors import ConflictError, InvalidRequestError, NotFoundError
from streaming.model import Block, File, Tag
from streaming.runtime.aio import LazyEvent
from streaming.stores.base import Store

__all__ = [
    "ConversationClaims", "check_replaced", "drop_turns", "is_tombstone", "replace_turns", "take_out_turns", "tombstone",
]

#: the tag of a block whose turn was rolled back (``multitask: rollback``)
_DROPPED = Tag(kind="streaming", name="rolled-back")


def tombstone(block: Block) -> Block:
    """What a rolled-back block is replaced with in the store: no text, no place."""
    return Block(id=block.id, file_id=block.file_id, text="", mime_type=block.mime_type, tags=[_DROPPED])


def is_tombstone(block: Block) -> bool:
    return any(t.kind == _DROPPED.kind and t.name == _DROPPED.name for t in block.tags)


async def take_out_turns(store: Store, file: File, generation_ids: Collection[str], generation_id: str) -> File:
    """Take the turns of ``generation_ids`` out of the claimed conversation ``file`` in the
    store (the conversation first, so whoever reads it after never sees them; then their
    blocks' tombstones); the conversation left."""
    kept, dropped = drop_turns(file, generation_ids)
    if dropped:
        await store.put_file(kept)
        await store.put_blocks([tombstone(b) for b in dropped])
        logger.info(
            "conversation %s: %d blocks of %s taken out", file.id, len(dropped), ", ".join(sorted(generation_ids)),
            extra={"generation_id": generation_id},
        )
    return kept


async def replace_turns(store: Store, file: File, replaced: Collection[str], generation_id: str) -> File:
    """The claimed conversation ``file`` without the turns of ``replaced`` (a request's
    ``replace``), taken out in the store.

    Raises:
        InvalidRequestError: one of them has no turn in it (nothing is taken out).
    """
    check_replaced(file, replaced)
    return await take_out_turns(store, file, set(replaced), generation_id)


def check_replaced(file: File, replaced: Collection[str]) -> None:
    """Refuse a ``replace`` naming a generation that has no turn in ``file``.

    Raises:
        InvalidRequestError: one of them has no turn in it (``param: "replace"``).
    """
    turns = {b.request_id for b in file.blocks}
    missing = [g for g in replaced if g not in turns]
    if missing:
        raise InvalidRequestError(
            f"conversation {file.id} has no turn of {', '.join(missing)}",
            suggestion="name generations of this conversation (those that wrote its blocks)",
            details={"param": "replace"},
        )


def drop_turns(file: File, generation_ids: Collection[str]) -> tuple[File, list[Block]]:
    """``file`` without the turns of ``generation_ids`` (their inputs and outputs), and
    the blocks taken out; the blocks left are numbered again."""
    kept = [b for b in file.blocks if b.request_id not in generation_ids]
    dropped = [b for b in file.blocks if b.request_id in generation_ids]
    for index, block in enumerate(kept):
        block.index = index
    return file.model_copy(update={"blocks": kept}), dropped

logger = logging.getLogger("streaming.runtime")


class ConversationClaims:
    def __init__(
        self,
        store: Store,
        wait_if_finishing: Callable[[str], Awaitable[None]],
        live_file: Callable[[str], File | None] | None = None,
    ) -> None:
        """``wait_if_finishing(generation_id)`` waits while that generation, here, has
        sent its terminal event and writes its last state; ``live_file(file_id)`` is the
        conversation as a generation running here holds it (a store that gets a
        generation only when it ends does not have it yet)."""
        self.store = store
        self.wait_if_finishing = wait_if_finishing
        self.live_file = live_file or (lambda file_id: None)
        self._holders: dict[str, str] = {}  # conversation (file id) -> generation here
        self._claiming: set[str] = set()  # conversations whose claim is being made
        #: conversation -> its generations waiting here, in the order they came
        self._waiting: dict[str, list[str]] = {}
        self._changed = LazyEvent()  # set (and replaced) when a claim is dropped here

    def holder(self, file_id: str) -> str | None:
        """The generation of this process extending ``file_id``, if any."""
        return self._holders.get(file_id)

    async def claim(self, file_id: str, generation_id: str, owner: str | None) -> File:
        """Make ``generation_id`` the only generation extending ``file_id``; return the
        conversation as it is once claimed.

        Raises:
            NotFoundError: no such conversation (or not the caller's).
            ConflictError: a generation is running on it.
        """
        file = await self._read(file_id)
        if file is None or file.owner != owner:
            raise NotFoundError(f"no conversation {file_id!r}")
        # A client that continues as soon as it has the terminal event must not be told
        # "busy" while the generation before writes its last state: wait for that.
        before = self._holders.get(file_id)
        if before is not None:
            await self.wait_if_finishing(before)
        queue = self._waiting.get(file_id)
        if queue and queue[0] != generation_id:
            raise ConflictError(
                f"conversation {file_id} has generations waiting ({', '.join(queue)})",
                suggestion="wait for them to finish or cancel them first, or send multitask",
                details={"generation_id": queue[0]},
            )
        if file_id in self._claiming:
            raise ConflictError(
                f"conversation {file_id} has a generation starting",
                suggestion="wait for it to finish or cancel it first, or send multitask",
            )
        holder = self._holders.get(file_id)
        if holder is None:
            self._claiming.add(file_id)
            try:
                holder = await self.store.claim_file(file_id, generation_id)
            finally:
                self._claiming.discard(file_id)
            if holder is None:
                self._holders[file_id] = generation_id
        if holder is not None:
            raise ConflictError(
                f"conversation {file_id} has a generation running ({holder})",
                suggestion="wait for it to finish or cancel it first, or send multitask",
                details={"generation_id": holder},
            )
        # Read again now that it is ours: the generation before may have ended (and
        # written its blocks, then dropped its claim) while the first read was under
        # way, here or in another process. Starting from that first read would lose
        # those blocks, and writing it back would erase them from the store.
        fresh = await self._read(file_id)
        if fresh is None:
            await self.release(file_id, generation_id)
            raise NotFoundError(f"no conversation {file_id!r}")
        return fresh

    async def _read(self, file_id: str) -> File | None:
        # A store that gets a generation only when it ends has not got the conversation
        # its first generation, running here, has made: that one is found here.
        return await self.store.get_file(file_id) or self.live_file(file_id)

    # -- generations waiting for a conversation (multitask: enqueue) --

    def waiting(self, file_id: str) -> list[str]:
        """The generations waiting here for ``file_id``, first come first."""
        return list(self._waiting.get(file_id, ()))

    def join_queue(self, file_id: str, generation_id: str) -> None:
        self._waiting.setdefault(file_id, []).append(generation_id)

    def leave_queue(self, file_id: str, generation_id: str) -> None:
        queue = self._waiting.get(file_id)
        if queue is not None and generation_id in queue:
            queue.remove(generation_id)
            if not queue:
                del self._waiting[file_id]
            self._wake()

    def first_in_queue(self, file_id: str, generation_id: str) -> bool:
        queue = self._waiting.get(file_id)
        return queue is not None and bool(queue) and queue[0] == generation_id

    async def changed(self, timeout_s: float) -> None:
        """Wait until a claim here is dropped or the queue moves, or ``timeout_s`` (a
        claim held by another process is dropped without telling us)."""
        with anyio.move_on_after(timeout_s):
            await self._changed.wait()

    def _wake(self) -> None:
        changed, self._changed = self._changed, LazyEvent()
        changed.set()

    async def claim_new(self, file_id: str, generation_id: str, *, with_start: bool = False) -> None:
        """Claim a conversation nobody else knows yet (for the requests that will).
        ``with_start``: its claim in a shared store is written with the generation's start
        (``Store.put_started``): until then nobody else can know the conversation."""
        self._holders[file_id] = generation_id
        if self.store.shared and not with_start:
            try:
                await self.store.claim_file(file_id, generation_id)
            except BaseException:
                self._holders.pop(file_id, None)
                raise

    async def release(self, file_id: str, generation_id: str) -> None:
        if self._holders.get(file_id) == generation_id:
            del self._holders[file_id]
        try:
            await self.store.release_file(file_id, generation_id)
        except Exception as exc:  # its claim goes stale once the generation has ended
            logger.warning("releasing conversation %s failed: %s", file_id, exc)
        finally:
            self._wake()
