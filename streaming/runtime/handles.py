"""One handle to a generation, wherever it runs.

:class:`GenerationHandle` is what the runtime's ``cancel``, ``submit_tool_result``,
``subscribe`` and ``get_generation`` act on: :class:`LocalGeneration` for a generation
running (or recently finished) in this process, and
:class:`~streaming.runtime.elsewhere.ElsewhereGeneration` for one that runs, or ran, in
another process (or before a restart), reached through the store. A generation run by a
queue worker is one more implementation of this interface.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol

import anyio

from streaming.events import Event
from streaming.model import Block, Generation
from streaming.requests import ToolResultRequest
from streaming.runtime.run import Run
from streaming.runtime.subscriptions import Subscriptions
from streaming.runtime.tool_rounds import ToolRounds

__all__ = ["GenerationHandle", "LocalGeneration"]


class GenerationHandle(Protocol):
    @property
    def id(self) -> str: ...

    def read(self) -> Generation:
        """The generation's record (with its log's last seq)."""
        ...

    async def output_blocks(self) -> list[Block]:
        """Its output blocks, as they are now."""
        ...

    async def cancel(self, reason: str, wait_s: float) -> Generation:
        """Ask it to stop (idempotent); its record once it ended, or after ``wait_s``."""
        ...

    async def answer_tool(self, answer: ToolResultRequest) -> None:
        """Answer one of its client-side tool calls.

        Raises:
            ToolCallConflictError: no such pending call, or it was already answered.
        """
        ...

    def check_subscribable(self) -> None:
        """Raise now what :meth:`subscribe` would raise at its first step."""
        ...

    def subscribe(self, after: int) -> AsyncGenerator[list[Event], None]:
        """Batches of its events after ``after``, live, until the terminal event."""
        ...


class LocalGeneration:
    """A generation running (or recently finished) in this process."""

    __slots__ = ("run", "rounds", "subscriptions")

    def __init__(self, run: Run, rounds: ToolRounds, subscriptions: Subscriptions) -> None:
        self.run = run
        self.rounds = rounds
        self.subscriptions = subscriptions

    @property
    def id(self) -> str:
        return self.run.id

    def read(self) -> Generation:
        return self.run.snapshot()

    async def output_blocks(self) -> list[Block]:
        return self.run.output_blocks()

    async def cancel(self, reason: str, wait_s: float) -> Generation:
        self.run.request_cancel(reason)
        with anyio.move_on_after(wait_s):
            await self.run.done.wait()
        return self.run.snapshot()

    async def answer_tool(self, answer: ToolResultRequest) -> None:
        await self.rounds.answer(self.run, answer)

    def check_subscribable(self) -> None:
        self.subscriptions.check(self.run)

    def subscribe(self, after: int) -> AsyncGenerator[list[Event], None]:
        return self.subscriptions.follow(self.run, after)
