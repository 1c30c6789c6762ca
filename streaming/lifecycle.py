"""Every state transition of blocks and generations, in one place.

Rule: anything that changes a block's ``stream_state`` or a generation's ``state`` goes
through this module. The tables below are the whole of the rules; an illegal move raises
:class:`~streaming.errors.IllegalTransitionError`.

:class:`GenerationMachine` is the sans-I/O core of one generation: it owns the generation's
blocks, applies the tables, and writes the events of docs/protocol.md into an
:class:`~streaming.log.EventLog`, guaranteeing its invariants: exactly one terminal event
and nothing after it; every block created is completed or aborted before it; the deltas of
a block concatenate to its final text.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from streaming.errors import IllegalTransitionError
from streaming.events import Event, EventType
from streaming.log import EventLog
from streaming.model import Block, ErrorInfo, Generation, GenerationState, StreamState, Usage

__all__ = [
    "BLOCK_TRANSITIONS",
    "GENERATION_TRANSITIONS",
    "GenerationMachine",
    "check_block_transition",
    "check_generation_transition",
]

# Block: a preallocated block starts ``started`` and ends ``complete`` or ``aborted``.
BLOCK_TRANSITIONS: dict[StreamState | None, frozenset[StreamState]] = {
    None: frozenset({StreamState.STARTED}),
    StreamState.STARTED: frozenset({StreamState.COMPLETE, StreamState.ABORTED}),
    StreamState.COMPLETE: frozenset(),
    StreamState.ABORTED: frozenset(),
}

# Generation: waiting -> running -> succeeded | failed | cancelled; a waiting one may
# also fail (refused) or be cancelled before it runs.
GENERATION_TRANSITIONS: dict[GenerationState, frozenset[GenerationState]] = {
    GenerationState.WAITING: frozenset(
        {GenerationState.RUNNING, GenerationState.FAILED, GenerationState.CANCELLED}
    ),
    GenerationState.RUNNING: frozenset(
        {GenerationState.SUCCEEDED, GenerationState.FAILED, GenerationState.CANCELLED}
    ),
    GenerationState.SUCCEEDED: frozenset(),
    GenerationState.FAILED: frozenset(),
    GenerationState.CANCELLED: frozenset(),
}


def check_block_transition(block_id: str, old: StreamState | None, new: StreamState) -> None:
    if new not in BLOCK_TRANSITIONS[old]:
        raise IllegalTransitionError(
            f"block {block_id} cannot go from {old.value if old else None} to {new.value}"
        )


def check_generation_transition(gen_id: str, old: GenerationState, new: GenerationState) -> None:
    if new not in GENERATION_TRANSITIONS[old]:
        raise IllegalTransitionError(f"generation {gen_id} cannot go from {old.value} to {new.value}")


class _Open:
    """Text of a block while it streams: parts joined lazily, length in code points."""

    __slots__ = ("parts", "length")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0

    def text(self) -> str:
        if len(self.parts) > 1:
            self.parts[:] = ["".join(self.parts)]
        return self.parts[0] if self.parts else ""


class GenerationMachine:
    """The blocks and event log of one generation; plain Python, no I/O."""

    def __init__(self, generation: Generation, log: EventLog) -> None:
        self.generation = generation
        self.log = log
        self.blocks: dict[str, Block] = {}
        self.order: list[str] = []
        self._open: dict[str, _Open] = {}
        #: the ids of the blocks streaming now (read-only: the machine alone changes it)
        self.open: Mapping[str, object] = self._open

    # -- queries --

    @property
    def finished(self) -> bool:
        return self.generation.state.finished

    @property
    def open_block_ids(self) -> list[str]:
        return [bid for bid in self.order if bid in self._open]

    def is_open(self, block_id: str) -> bool:
        """True while the block streams (created, neither completed nor aborted)."""
        return block_id in self._open

    def block_snapshot(self, block_id: str) -> Block:
        """A copy of the block with the text streamed so far."""
        block = self.blocks[block_id]
        copy = block.model_copy()
        opened = self._open.get(block_id)
        if opened is not None:
            copy.text = opened.text()
        return copy

    # -- generation --

    def _move(self, new: GenerationState) -> None:
        check_generation_transition(self.generation.id, self.generation.state, new)
        self.generation.state = new
        if new.finished:
            self.generation.finished_at = time.time()

    def start(self, blocks: list[Block], capabilities: dict[str, Any] | None) -> Event:
        """waiting -> running, with the preallocated blocks opened."""
        self._move(GenerationState.RUNNING)
        for block in blocks:
            self._open_block(block)
            self.generation.output_block_ids.append(block.id)
        return self.log.append(
            EventType.GENERATION_STARTED,
            {
                "generation": self.generation.public(),
                "blocks": [b.model_dump(mode="json") for b in blocks],
                "capabilities": capabilities,
            },
        )

    def _open_block(self, block: Block) -> None:
        if block.id in self.blocks:
            raise IllegalTransitionError(f"block {block.id} already exists in this generation")
        check_block_transition(block.id, None, StreamState.STARTED)
        block.stream_state = StreamState.STARTED
        block.text = ""
        block.request_id = self.generation.id
        self.blocks[block.id] = block
        self.order.append(block.id)
        self._open[block.id] = _Open()

    def create_block(self, block: Block, *, output: bool = True) -> Event:
        """A block allocated mid-stream (a tool invocation, a later round's output)."""
        self._require_running()
        self._open_block(block)
        if output:
            self.generation.output_block_ids.append(block.id)
        return self.log.append(EventType.BLOCK_CREATED, {"block": block.model_dump(mode="json")})

    def _require_running(self) -> None:
        if self.generation.state is not GenerationState.RUNNING:
            raise IllegalTransitionError(
                f"generation {self.generation.id} is {self.generation.state.value}, not running"
            )

    def _opened(self, block_id: str) -> _Open:
        opened = self._open.get(block_id)
        if opened is None:
            state = self.blocks[block_id].stream_state if block_id in self.blocks else None
            raise IllegalTransitionError(
                f"block {block_id} is not open for streaming (state {state.value if state else None})"
            )
        return opened

    def append(self, block_id: str, text: str) -> Event | None:
        """Append text to an open block; an empty string is a no-op."""
        opened = self._open.get(block_id)  # (the per-chunk path: _opened only to refuse)
        if opened is None:
            opened = self._opened(block_id)
        if not text:
            return None
        offset = opened.length
        opened.parts.append(text)
        opened.length = offset + len(text)
        return self.log.append_delta(block_id, offset, text)

    def complete_block(self, block_id: str) -> Event:
        opened = self._opened(block_id)
        block = self.blocks[block_id]
        check_block_transition(block_id, block.stream_state, StreamState.COMPLETE)
        block.text = opened.text()
        block.stream_state = StreamState.COMPLETE
        del self._open[block_id]
        return self.log.append(EventType.BLOCK_COMPLETED, {"block_id": block_id, "length": opened.length})

    def abort_block(self, block_id: str, reason: str) -> Event:
        opened = self._opened(block_id)
        block = self.blocks[block_id]
        check_block_transition(block_id, block.stream_state, StreamState.ABORTED)
        block.text = opened.text()
        block.stream_state = StreamState.ABORTED
        del self._open[block_id]
        return self.log.append(EventType.BLOCK_ABORTED, {"block_id": block_id, "reason": reason})

    def add_block_text(self, block: Block, *, output: bool = True) -> list[Event]:
        """Create, fill and complete a block in one go (a tool result, a whole answer)."""
        text = block.text
        events = [self.create_block(block, output=output)]
        ev = self.append(block.id, text)
        if ev is not None:
            events.append(ev)
        events.append(self.complete_block(block.id))
        return events

    # -- tools --

    def tool_call(
        self,
        call_id: str,
        block_id: str,
        tool_name: str,
        args: dict[str, Any],
        *,
        client_side: bool = False,
    ) -> Event:
        """``client_side``: the runtime waits for the client to answer this call."""
        self._require_running()
        return self.log.append(
            EventType.TOOL_CALL,
            {
                "call_id": call_id,
                "block_id": block_id,
                "tool_name": tool_name,
                "args": args,
                "client_side": client_side,
            },
        )

    def tool_result(
        self, call_id: str, block_id: str, tool_name: str, result: list[str], is_error: bool
    ) -> Event:
        self._require_running()
        return self.log.append(
            EventType.TOOL_RESULT,
            {
                "call_id": call_id,
                "block_id": block_id,
                "tool_name": tool_name,
                "result": result,
                "is_error": is_error,
            },
        )

    # -- endings: each aborts or completes what is open, then writes the one terminal event --

    def _abort_open(self, reason: str) -> None:
        for block_id in self.open_block_ids:
            self.abort_block(block_id, reason)

    def succeed(self, usage: list[Usage] | None = None) -> Event:
        """Complete any block the plugin left open, then ``generation.completed``."""
        self._require_running()
        for block_id in self.open_block_ids:
            self.complete_block(block_id)
        if usage:
            self.generation.usage.extend(usage)
        self._move(GenerationState.SUCCEEDED)
        return self.log.append(
            EventType.GENERATION_COMPLETED,
            {"usage": [u.model_dump(mode="json") for u in self.generation.usage]},
        )

    def fail(self, code: str, message: str, suggestion: str | None = None) -> Event:
        self._abort_open(f"generation failed: {code}")
        self._move(GenerationState.FAILED)
        self.generation.error = ErrorInfo(code=code, message=message, suggestion=suggestion)
        return self.log.append(
            EventType.GENERATION_FAILED, {"error": self.generation.error.model_dump(mode="json")}
        )

    def cancel(self, reason: str) -> Event:
        self._abort_open(f"cancelled: {reason}")
        self._move(GenerationState.CANCELLED)
        return self.log.append(EventType.GENERATION_CANCELLED, {"reason": reason})
