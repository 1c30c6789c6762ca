"""Generations run elsewhere: in another process sharing the store (or in this one before
a restart). Everything goes through the store: its record and log are read there, and
cancel and tool results are sent as control messages to whichever process runs it."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

import anyio

from streaming.errors import NotFoundError, ToolCallConflictError
from streaming.events import Event
from streaming.model import Block, Generation
from streaming.requests import ToolResultRequest
from streaming.stores.base import Store

__all__ = ["ElsewhereGeneration"]


class ElsewhereGeneration:
    """A :class:`~streaming.runtime.handles.GenerationHandle` on a stored generation."""

    __slots__ = ("generation", "store")

    def __init__(self, generation: Generation, store: Store) -> None:
        self.generation = generation
        self.store = store

    @classmethod
    async def find(cls, store: Store, generation_id: str) -> ElsewhereGeneration:
        """Raises NotFoundError."""
        generation = await store.get_generation(generation_id)
        if generation is None:
            raise NotFoundError(f"no generation {generation_id!r}")
        return cls(generation, store)

    @property
    def id(self) -> str:
        return self.generation.id

    def read(self) -> Generation:
        return self.generation

    async def _reread(self) -> Generation:
        generation = await self.store.get_generation(self.id)
        if generation is not None:
            self.generation = generation
        return self.generation

    async def output_blocks(self) -> list[Block]:
        blocks = []
        for block_id in self.generation.output_block_ids:
            block = await self.store.get_block(block_id)
            if block is not None:
                blocks.append(block)
        return blocks

    async def cancel(self, reason: str, wait_s: float) -> Generation:
        generation = self.generation
        if not generation.state.finished:
            await self.store.publish_control(self.id, {"type": "cancel", "reason": reason})
            with anyio.move_on_after(wait_s):
                while not generation.state.finished:
                    await anyio.sleep(0.05)
                    generation = await self._reread()
        return generation

    async def answer_tool(self, answer: ToolResultRequest) -> None:
        if self.generation.state.finished:
            raise ToolCallConflictError(f"generation {self.id} has already ended")
        events = await self.store.read_events(self.id)
        called = {e.data["call_id"] for e in events if e.type == "tool.call"}
        answered = {e.data["call_id"] for e in events if e.type == "tool.result"}
        if answer.call_id not in called or answer.call_id in answered:
            raise ToolCallConflictError(f"no pending tool call {answer.call_id!r} in generation {self.id}")
        if not await self.store.claim_tool_result(self.id, answer.call_id):
            raise ToolCallConflictError(f"tool call {answer.call_id!r} was already answered")
        result, is_error = answer.items()
        await self.store.publish_control(
            self.id, {"type": "tool.result", "call_id": answer.call_id, "result": result, "is_error": is_error}
        )

    def check_subscribable(self) -> None:
        return None

    async def subscribe(self, after: int) -> AsyncGenerator[list[Event], None]:
        generation = self.generation
        if generation.state.finished and generation.last_seq and after >= generation.last_seq:
            return  # nothing after the terminal event
        async with aclosing(self.store.follow(self.id, after)) as batches:  # type: ignore[type-var]
            async for batch in batches:
                yield batch
