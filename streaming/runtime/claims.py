"""Conversation claims: one generation at a time extends a conversation (``file_id``).

The claim is made in this process at once (no await between the check and the mark, so
two requests racing here cannot both pass), then across processes through the store
(``claim_file``; stores used by one process claim nothing). It is dropped once the
generation has ended and its last state is written. The conversation is read again once
claimed: that read is the one the next turn starts from.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from streaming.errors import ConflictError, NotFoundError
from streaming.model import File
from streaming.stores.base import Store

__all__ = ["ConversationClaims"]

logger = logging.getLogger("streaming.runtime")


class ConversationClaims:
    def __init__(self, store: Store, wait_if_finishing: Callable[[str], Awaitable[None]]) -> None:
        """``wait_if_finishing(generation_id)`` waits while that generation, here, has
        sent its terminal event and writes its last state."""
        self.store = store
        self.wait_if_finishing = wait_if_finishing
        self._holders: dict[str, str] = {}  # conversation (file id) -> generation here
        self._claiming: set[str] = set()  # conversations whose claim is being made

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
        file = await self.store.get_file(file_id)
        if file is None or file.owner != owner:
            raise NotFoundError(f"no conversation {file_id!r}")
        # A client that continues as soon as it has the terminal event must not be told
        # "busy" while the generation before writes its last state: wait for that.
        before = self._holders.get(file_id)
        if before is not None:
            await self.wait_if_finishing(before)
        if file_id in self._claiming:
            raise ConflictError(
                f"conversation {file_id} has a generation starting",
                suggestion="wait for it to finish or cancel it first",
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
                suggestion="wait for it to finish or cancel it first",
            )
        # Read again now that it is ours: the generation before may have ended (and
        # written its blocks, then dropped its claim) while the first read was under
        # way, here or in another process. Starting from that first read would lose
        # those blocks, and writing it back would erase them from the store.
        fresh = await self.store.get_file(file_id)
        if fresh is None:
            await self.release(file_id, generation_id)
            raise NotFoundError(f"no conversation {file_id!r}")
        return fresh

    async def claim_new(self, file_id: str, generation_id: str) -> None:
        """Claim a conversation nobody else knows yet (for the requests that will)."""
        self._holders[file_id] = generation_id
        if self.store.shared:
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
