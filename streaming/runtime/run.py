"""One generation running in this process: its blocks, its cancel and stop requests, and
its child tasks (server tools, the control listener).

A :class:`Run` is what a plugin's blocks write through (it implements
:class:`~streaming.model.BlockWriter`, also from a worker thread); the runtime's
collaborators act on it. It stays in memory for ``live_retention_s`` after it ends, for
late subscribers.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.from_thread

from streaming.capabilities import Tool
from streaming.errors import GenerationCancelledError, LimitExceededError, StreamingError
from streaming.lifecycle import GenerationMachine
from streaming.model import Block, File, Generation, RoleTag, Tag
from streaming.plugin.service import PluginService
from streaming.requests import GenerateRequest
from streaming.runtime.aio import LazyEvent
from streaming.tasks import TaskOwner

__all__ = ["Call", "Run", "valid_text"]


def valid_text(text: str) -> tuple[str, int]:
    """``text`` as valid Unicode (a lone surrogate, which no encoder accepts, becomes
    U+FFFD; a pair split into two code points is joined) and its size in UTF-8 bytes.

    Cheap for what plugins usually write: ASCII is measured without encoding, and the repair
    only runs when encoding fails.
    """
    if text.isascii():
        return text, len(text)
    try:
        return text, len(text.encode())
    except UnicodeEncodeError:
        fixed = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return fixed, len(fixed.encode())


@dataclass(slots=True)
class Call:
    """One tool call of a round."""

    call_id: str
    tool_name: str
    args: dict[str, Any]
    block_id: str
    done: LazyEvent = field(default_factory=LazyEvent)
    resolved: bool = False
    result_block_id: str | None = None
    client_side: bool = False


class Run:
    """A generation running (or recently finished) in this process."""

    # Slots: thousands of these may be open at once (idle streams).
    __slots__ = (
        "calls", "cancel_reason", "children", "chunks", "client_tools", "closed_hook",
        "block_bytes", "context_blocks", "conversation", "done", "file", "first_delta_at", "flush_lock",
        "generation", "grace_timer", "history_ids", "limits", "log", "loop_thread", "machine", "options",
        "output_bytes", "reserve", "sent_limit", "sent_step", "watched_until", "flushed_at", "on_watched",
        "owner", "persisted_seq", "plugin", "round_blocks", "round_calls", "scope",
        "started_at", "stop_error", "subscribers", "tools", "__weakref__",
    )

    def __init__(
        self,
        machine: GenerationMachine,
        plugin: PluginService[Any, Any],
        request: GenerateRequest,
        context_blocks: list[Block],
        file: File,
        tools: dict[str, Tool],
        owner: str | None,
        closed_hook: Callable[[Run, str], None],
        limits: tuple[int, int] = (16 * 1024 * 1024, 64 * 1024 * 1024),
    ) -> None:
        self.machine = machine
        self.log = machine.log
        self.generation = machine.generation
        self.plugin = plugin
        # Only what later rounds need (not the whole request body).
        self.options = request.options
        self.client_tools = request.client_tools
        self.context_blocks = context_blocks  # capability request block + history + inputs
        # What the plugin sees: the context, then each finished round's blocks.
        self.conversation = context_blocks
        self.history_ids: list[str] = []
        self.file = file
        self.tools = tools
        self.owner = owner
        #: called when a block completes (a tool call block is then routed)
        self.closed_hook = closed_hook
        self.scope: anyio.CancelScope | None = None
        self.cancel_reason: str | None = None
        self.stop_error: StreamingError | None = None
        self.done = LazyEvent()
        self.subscribers = 0
        self.grace_timer: asyncio.TimerHandle | None = None
        self.calls: dict[str, Call] = {}
        self.round_calls: list[Call] = []
        self.round_blocks: list[str] = []
        self.persisted_seq = 0
        self.flush_lock: anyio.Lock | None = None
        self.loop_thread = threading.get_ident()
        #: cancel scopes of the child tasks running now; None once the run has ended
        self.children: set[anyio.CancelScope] | None = set()
        self.chunks = 0
        self.started_at = time.monotonic()
        #: (monotonic) until when someone in another process follows it, as far as we know
        #: (their presence messages; a worker's runs from their start): its new events reach
        #: a shared store every tick until then (see the store writer)
        self.watched_until = 0.0
        #: (monotonic) when its events last went to the store
        self.flushed_at = 0.0
        #: told when it gets watched (the store writer: it then flushes every tick)
        self.on_watched: Callable[[float], None] | None = None
        self.first_delta_at: float | None = None
        #: (most UTF-8 bytes in one block, in the whole generation's output)
        self.limits = limits
        #: UTF-8 bytes written so far, per block and in all
        self.block_bytes: dict[str, int] = {}
        self.output_bytes = 0
        #: the store's ``reserve_seq`` if it keeps how far each log may have been sent
        self.reserve: Callable[[str, int], Awaitable[None]] | None = None
        #: the log may grow to this seq before the next mark must be stored
        self.sent_limit = sys.maxsize
        #: how many seqs each mark reserves ahead
        self.sent_step = 4096

    @property
    def id(self) -> str:
        return self.generation.id

    # -- what readers see --

    def snapshot(self) -> Generation:
        """The generation record now, with the log's last seq."""
        gen = self.generation.snapshot()
        gen.last_seq = self.log.last_seq
        return gen

    def file_snapshot(self) -> File:
        """The conversation with this run's blocks as they are now."""
        machine = self.machine
        blocks = [machine.block_snapshot(b.id) if b.id in machine.blocks else b.model_copy() for b in self.file.blocks]
        return self.file.model_copy(update={"blocks": blocks})

    def file_for_store(self) -> File:
        """The conversation for a write to the store, handed over to it
        (``Store.put_handed_over_file``): this run's blocks as they are now (copies), the
        others as the run holds them, not copied (the run never changes them in place)."""
        machine = self.machine
        blocks = [machine.block_snapshot(b.id) if b.id in machine.blocks else b for b in self.file.blocks]
        return self.file.model_copy(update={"blocks": blocks, "tags": list(self.file.tags)})

    def output_blocks(self) -> list[Block]:
        return [self.machine.block_snapshot(b) for b in self.generation.output_block_ids]

    # -- blocks --

    def new_block(self, mime: str) -> Block:
        """A new assistant block at the end of the conversation (not yet in the log)."""
        block = Block(file_id=self.file.id, index=len(self.file.blocks), mime_type=mime, tags=[Tag.chat_role(RoleTag.ASSISTANT)])
        self.file.blocks.append(block)
        return block

    def add_whole_block(self, block: Block) -> None:
        """Add a block that arrives whole (a result, a block a plugin returned).

        Raises:
            LimitExceededError: its text is past the output limits (``max_output``).
        """
        if block.text:
            block.text, size = valid_text(block.text)
            self._count(block.id, size)
        block.file_id = self.file.id
        block.index = len(self.file.blocks)
        self.file.blocks.append(block)
        self.machine.add_block_text(block)

    # -- how far the log may have been sent --

    async def reserve_ahead(self) -> None:
        """Store a mark ``sent_step`` seqs past the log's end before events reach it (a
        recovery after a crash numbers its events past the mark: no seq a client saw is
        reused). The next mark is due when the log is an eighth of a step from it, leaving
        room for the events written outside the plugin driver (block and tool events, the
        terminal event)."""
        if self.reserve is None:
            return
        mark = self.log.last_seq + self.sent_step
        await self.reserve(self.id, mark)
        self.reserved(mark)

    def reserved(self, mark: int) -> None:
        """The store has a mark at ``mark`` (the next one is due an eighth of a step before)."""
        self.sent_limit = mark - self.sent_step // 8

    @property
    def has_mark(self) -> bool:
        return self.sent_limit != sys.maxsize

    # -- output: every chunk of text goes through write --

    def _count(self, block_id: str, size: int) -> None:
        """Count ``size`` more bytes of output in ``block_id``, refusing them past a limit."""
        per_block, per_generation = self.limits
        total = self.output_bytes + size
        in_block = self.block_bytes.get(block_id, 0) + size
        if in_block > per_block or total > per_generation:
            which, limit = ("a block", per_block) if in_block > per_block else ("the generation", per_generation)
            raise LimitExceededError(
                f"the output of {which} reached the limit of {limit} bytes",
                code="max_output",
                suggestion="ask for less output, or raise the server's max_block_bytes / max_generation_bytes",
            )
        self.output_bytes = total
        self.block_bytes[block_id] = in_block

    def watched(self, for_s: float) -> None:
        """Someone in another process follows it (their presence, said every ``for_s / 3``)."""
        self.watched_until = until = time.monotonic() + for_s
        if self.on_watched is not None:
            self.on_watched(until)

    def write(self, block_id: str, text: str) -> None:
        """Append a chunk to an open block: made valid Unicode, counted against the output
        limits whatever the coalescing of its events.

        Raises:
            LimitExceededError: code ``max_output``; nothing of the chunk is written.
        """
        if text.isascii():  # the hot path: no encoding
            size = len(text)
        else:
            text, size = valid_text(text)
        # (_count, inlined on the per-chunk path)
        total = self.output_bytes + size
        in_block = self.block_bytes.get(block_id, 0) + size
        if in_block > self.limits[0] or total > self.limits[1]:
            self._count(block_id, size)  # raises
        self.output_bytes = total
        self.block_bytes[block_id] = in_block
        self.machine.append(block_id, text)

    # -- BlockWriter: what plugins' blocks write through --

    def _check_writable(self) -> None:
        if self.cancel_reason is not None:
            raise GenerationCancelledError(f"generation {self.id} was cancelled: {self.cancel_reason}")

    def _in_loop(self) -> bool:
        return threading.get_ident() == self.loop_thread

    def append(self, block_id: str, text: str) -> None:
        if not self._in_loop():
            anyio.from_thread.run_sync(self.append, block_id, text)
            return
        self._check_writable()
        self.write(block_id, text)

    def complete(self, block_id: str) -> None:
        if not self._in_loop():
            anyio.from_thread.run_sync(self.complete, block_id)
            return
        self._check_writable()
        self.machine.complete_block(block_id)
        self.closed_hook(self, block_id)

    def abort(self, block_id: str, reason: str) -> None:
        if not self._in_loop():
            anyio.from_thread.run_sync(self.abort, block_id, reason)
            return
        self.machine.abort_block(block_id, reason)

    # -- cancel and stop requests --

    def request_cancel(self, reason: str) -> None:
        """End the run with ``generation.cancelled`` (idempotent; the first reason wins)."""
        if self.done.is_set() or self.cancel_reason is not None:
            return
        self.cancel_reason = reason
        if self.scope is not None:
            self.scope.cancel()

    def request_stop(self, error: StreamingError) -> None:
        """End the run with ``generation.failed`` carrying ``error``."""
        if self.done.is_set() or self.cancel_reason is not None or self.stop_error is not None:
            return
        self.stop_error = error
        self.cancel_reason = error.code
        if self.scope is not None:
            self.scope.cancel()

    # -- child tasks --

    def spawn(self, owner: TaskOwner, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Run ``fn(*args)`` as a task of ``owner`` (which awaits it and logs its failure),
        cancelled when this run ends: no task group per generation, so an idle generation
        costs one task, not three."""

        async def child() -> None:
            if self.children is None:
                return  # the run ended before this child got to run
            with anyio.CancelScope() as scope:
                self.children.add(scope)
                try:
                    await fn(*args)
                finally:
                    if self.children is not None:
                        self.children.discard(scope)

        owner.spawn(child(), name=f"generation {self.id}: {getattr(fn, '__name__', fn)}")

    def end_children(self) -> None:
        """Cancel every child task (level-triggered: a child that swallows a cancel is
        cancelled again at its next await); none starts after this."""
        children, self.children = self.children, None
        for scope in children or ():
            scope.cancel()
