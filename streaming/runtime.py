"""The runtime: preallocate, run, fan out, abort, cancel, and run tool rounds.

Data flows one way: plugin -> :class:`~streaming.lifecycle.GenerationMachine` ->
:class:`~streaming.log.EventLog` -> subscribers. Each generation runs in its own task
inside the runtime's task group; subscribers read the shared log by cursor, so any number
of them cost one list of events, and a slow one falls behind and catches up from the log.
A background flusher writes new events and changed blocks to the store in batches.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from streaming.capabilities import (
    FunctionCallInvocation,
    FunctionCallResult,
    RequestedCapabilities,
    Tool,
)
from streaming.capability_block import capability_block, offered_tools
from streaming.errors import (
    ConflictError,
    GenerationCancelledError,
    LimitExceededError,
    MaxToolRoundsError,
    NotFoundError,
    PluginError,
    StoreError,
    StoreUnavailableError,
    StreamingError,
    ToolCallConflictError,
    ToolTimeoutError,
    UnknownGeneratorError,
)
from streaming.events import Event
from streaming.history import next_history, turn_ends_with_client_calls
from streaming.lifecycle import GenerationMachine
from streaming.log import EventLog
from streaming.metrics import RuntimeMetrics
from streaming.model import (
    Block,
    File,
    Generation,
    MimeTypes,
    OnDisconnect,
    RoleTag,
    Tag,
    TagKind,
    Usage,
    new_id,
)
from streaming.outcome import apply_outcome, terminal_outcome, unwrap
from streaming.plugin.generator import Generator
from streaming.plugin.inputs import (
    RawBlockAndTagPluginInput,
    RawBlockAndTagPluginInputWithPreallocatedBlocks,
)
from streaming.plugin.outputs import BlockTypePluginOutput, RawBlockAndTagPluginOutput
from streaming.plugin.request import (
    InvocableResponse,
    PluginRequest,
)
from streaming.plugin.service import PluginService, instantiate
from streaming.plugin.streaming_generator import StreamingGenerator
from streaming.requests import GenerateRequest, ToolResultRequest
from streaming.routing import AnsweredBy, parse_tool_call, route_tool_call
from streaming.stores.base import Store
from streaming.stores.memory import MemoryStore
from streaming.tools import ToolArgumentsError, ToolRegistry

__all__ = ["GeneratorRegistry", "Runtime", "RuntimeSettings"]

logger = logging.getLogger("streaming.runtime")


@dataclass
class RuntimeSettings:
    """Limits and timings of a runtime; every one is a keyword with a default."""

    #: seconds a generation with ``on_disconnect=cancel`` may have no subscriber
    disconnect_grace_s: float = 5.0
    #: rounds of tool calls in one generation before it fails ``max_tool_rounds``
    max_tool_rounds: int = 8
    #: seconds to wait for a tool's result before failing ``tool_timeout``
    tool_timeout_s: float = 120.0
    #: merge unread deltas of the same block into one event
    coalesce: bool = True
    #: longest a plugin that never awaits runs before the runtime lets others run
    time_slice_s: float = 0.002
    #: how long new events wait to be written to the store together
    persist_interval_s: float = 0.05
    #: seconds running generations get to finish on shutdown before they are cancelled
    shutdown_grace_s: float = 10.0
    #: seconds a finished generation stays in memory for late subscribers
    live_retention_s: float = 30.0
    #: most events handed to a subscriber at once
    read_batch: int = 4096
    #: most generations running at once in this process
    max_running: int = 10_000
    #: seconds a generation may run in total
    max_duration_s: float = 3600.0
    #: most subscribers of one generation in this process
    max_subscribers_per_generation: int = 1000
    #: most events in one generation's log (it fails ``max_events`` past that)
    max_events_per_generation: int = 2_000_000
    #: most generations running at once for one owner (API key)
    max_running_per_owner: int = 1000


class GeneratorRegistry:
    """Generator plugins by name; one instance each, shared by its generations."""

    def __init__(self) -> None:
        self._plugins: dict[str, PluginService[Any, Any]] = {}

    def register(
        self,
        name: str,
        plugin: PluginService[Any, Any] | type[PluginService[Any, Any]] | str,
        config: Mapping[str, Any] | None = None,
    ) -> PluginService[Any, Any]:
        """Register ``plugin`` (an instance, a class, or ``"module:Class"``) as ``name``.

        Raises:
            InvalidRequestError: ``plugin`` cannot be imported or is not a generator.
        """
        instance = instantiate(name, plugin, config, (StreamingGenerator, Generator))
        self._plugins[name] = instance
        return instance

    def __contains__(self, name: object) -> bool:
        return name in self._plugins

    def __iter__(self) -> Any:
        return iter(self._plugins)

    def names(self) -> list[str]:
        return list(self._plugins)

    def get(self, name: str) -> PluginService[Any, Any]:
        """Raises UnknownGeneratorError if no generator has that name."""
        try:
            return self._plugins[name]
        except KeyError:
            raise UnknownGeneratorError(
                f"no generator named {name!r}",
                suggestion="registered generators: " + ", ".join(sorted(self._plugins)),
            ) from None


@dataclass
class _Call:
    """One tool call of a round."""

    call_id: str
    tool_name: str
    args: dict[str, Any]
    block_id: str
    done: anyio.Event = field(default_factory=anyio.Event)
    resolved: bool = False
    result_block_id: str | None = None
    client_side: bool = False


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _LazyEvent:
    """An ``anyio.Event`` made only when someone waits (most generations end unwaited-for)."""

    __slots__ = ("_flag", "_event")

    def __init__(self) -> None:
        self._flag = False
        self._event: anyio.Event | None = None

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        self._flag = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        if self._flag:
            return
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()


class _Live:
    """A generation running (or recently finished) in this process. Implements BlockWriter."""

    # Slots: thousands of these may be open at once (idle streams).
    __slots__ = (
        "calls", "cancel_reason", "chunks", "client_tools", "context_blocks", "conversation",
        "done", "file", "first_delta_at", "flush_lock", "generation", "helpers",
        "helpers_closed", "history_ids", "idle_token", "log", "loop_thread", "machine",
        "options", "owner", "persisted_seq", "plugin", "round_blocks", "round_calls",
        "runtime", "scope", "started_at", "stop_error", "subscribers", "tools", "__weakref__",
    )

    def __init__(
        self,
        runtime: Runtime,
        machine: GenerationMachine,
        plugin: PluginService[Any, Any],
        request: GenerateRequest,
        context_blocks: list[Block],
        file: File,
        tools: dict[str, Tool],
    ) -> None:
        self.runtime = runtime
        self.machine = machine
        self.log = machine.log
        self.generation = machine.generation
        self.plugin = plugin
        # Only what later rounds need (not the whole request body).
        self.options = request.options
        self.client_tools = request.client_tools
        self.context_blocks = context_blocks  # capability request block + history + inputs
        # What the plugin sees: the context, then each finished round's blocks in a
        # stable order (outputs, invocations, results in call order).
        self.conversation = context_blocks
        self.history_ids: list[str] = []
        self.file = file
        self.tools = tools
        self.scope: anyio.CancelScope | None = None
        self.cancel_reason: str | None = None
        self.done = _LazyEvent()
        self.subscribers = 0
        self.idle_token = 0
        self.calls: dict[str, _Call] = {}
        self.round_calls: list[_Call] = []
        self.round_blocks: list[str] = []
        self.persisted_seq = 0
        self.flush_lock: anyio.Lock | None = None
        self.loop_thread = threading.get_ident()
        self.helpers: set[anyio.CancelScope] = set()
        self.helpers_closed = False
        self.stop_error: StreamingError | None = None
        self.owner: str | None = None
        self.chunks = 0
        self.started_at = time.monotonic()
        self.first_delta_at: float | None = None

    @property
    def id(self) -> str:
        return self.generation.id

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
        self.machine.append(block_id, text)

    def complete(self, block_id: str) -> None:
        if not self._in_loop():
            anyio.from_thread.run_sync(self.complete, block_id)
            return
        self._check_writable()
        self.machine.complete_block(block_id)
        self.runtime._on_block_closed(self, block_id)

    def abort(self, block_id: str, reason: str) -> None:
        if not self._in_loop():
            anyio.from_thread.run_sync(self.abort, block_id, reason)
            return
        self.machine.abort_block(block_id, reason)


class Runtime:
    """Hosts generator plugins and streams their generations.

    Use as an async context manager (it owns a task group)::

        async with Runtime(generators=registry) as runtime:
            gen = await runtime.start(GenerateRequest(generator="echo", prompt="hi"))
            async for event in runtime.events(gen.id):
                ...
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        generators: GeneratorRegistry | None = None,
        tools: ToolRegistry | None = None,
        settings: RuntimeSettings | None = None,
    ) -> None:
        self.store = store or MemoryStore()
        self.generators = generators or GeneratorRegistry()
        self.tools = tools or ToolRegistry()
        self.settings = settings or RuntimeSettings()
        self._live: dict[str, _Live] = {}
        # Each generation runs in a plain asyncio task of its own (cancelled at exit).
        self._run_tasks: set[asyncio.Task[None]] = set()
        # Conversation (file id) -> the generation extending it in this process.
        self._file_claims: dict[str, str] = {}
        self._claiming: set[str] = set()  # conversations whose claim is being made
        self._running_per_owner: dict[str, int] = {}  # API key owner -> running generations
        self._running = 0
        self._tg: anyio.abc.TaskGroup | None = None
        self._dirty: set[_Live] = set()
        self._flush_wanted = anyio.Event()
        self._final_retries: set[str] = set()  # generations whose last write is being retried
        self._accepting = False
        self.counters: dict[str, int] = {
            "started": 0,
            "succeeded": 0,
            "failed": 0,
            "cancelled": 0,
            "tool_calls": 0,
            "tool_errors": 0,
        }
        self.listeners: list[Callable[[str, Generation], None]] = []
        self.metrics = RuntimeMetrics()
        self._draining = False
        self._grace_s = self.settings.shutdown_grace_s
        self._shutdown_requested: anyio.Event | None = None

    # -- lifecycle of the runtime itself --

    async def __aenter__(self) -> Runtime:
        await self.store.open()
        await self.store.recover_interrupted()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._flusher)
        self._shutdown_requested = anyio.Event()
        self._tg.start_soon(self._shutdown_watcher)
        self._accepting = True
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        await self.shutdown()
        assert self._tg is not None
        for task in list(self._run_tasks):
            task.cancel()
        if self._run_tasks:
            await asyncio.wait(list(self._run_tasks))
        self._tg.cancel_scope.cancel()
        result = await self._tg.__aexit__(*exc_info)
        self._tg = None
        await self.store.close()
        return result

    def begin_shutdown(self, grace_s: float | None = None) -> None:
        """Stop accepting generations now; in the background, give the running ones
        ``grace_s`` to finish, then end each with ``generation.failed`` (code
        ``shutdown``) so that its subscribers are told. Idempotent; safe to call from a
        plain loop callback (a signal handler), as it only sets an event."""
        self._accepting = False
        if grace_s is not None:
            self._grace_s = grace_s
        if self._shutdown_requested is not None:
            self._shutdown_requested.set()

    async def _shutdown_watcher(self) -> None:
        assert self._shutdown_requested is not None
        await self._shutdown_requested.wait()
        self._draining = True
        await self._drain(self._grace_s)

    async def _drain(self, grace: float) -> None:
        running = [live for live in self._live.values() if not live.done.is_set()]
        with anyio.move_on_after(grace):
            for live in running:
                await live.done.wait()
        for live in running:
            if not live.done.is_set():
                self._request_stop(
                    live,
                    StreamingError(
                        "the server shut down before the generation finished",
                        code="shutdown",
                        suggestion="start it again",
                    ),
                )
        with anyio.move_on_after(5):
            for live in running:
                await live.done.wait()

    async def shutdown(self, grace_s: float | None = None) -> None:
        """Stop accepting; let running generations finish within ``grace_s``, then end
        them with a terminal event that says so; return once every one has ended."""
        self.begin_shutdown(grace_s)
        with anyio.move_on_after((self.settings.shutdown_grace_s if grace_s is None else grace_s) + 6):
            for live in list(self._live.values()):
                await live.done.wait()

    @property
    def draining(self) -> bool:
        return not self._accepting

    @property
    def running_count(self) -> int:
        return self._running

    # -- starting --

    async def start(
        self, request: GenerateRequest, *, subscribed: bool = False, owner: str | None = None
    ) -> Generation:
        """Check, preallocate and start a generation; return it (state ``running``).

        ``subscribed`` says the caller will subscribe at once (the disconnect grace period
        then starts with its first disconnect rather than now).

        Raises:
            UnknownGeneratorError: no generator has the requested name.
            UnsupportedCapabilityError: a capability is requested at a level not supported.
            NotFoundError: ``file_id`` names no conversation.
            LimitExceededError: too many generations are running.
            PluginError: the plugin failed to say which blocks it will write.
        """
        if not self._accepting or self._tg is None:
            raise LimitExceededError("the server is shutting down", suggestion="retry on another server")
        if self.running_count >= self.settings.max_running:
            raise LimitExceededError(
                f"{self.settings.max_running} generations are already running",
                suggestion="retry in a few seconds",
            )
        if owner is not None:
            mine = self._running_per_owner.get(owner, 0)
            if mine >= self.settings.max_running_per_owner:
                raise LimitExceededError(
                    f"this key already has {mine} generations running",
                    suggestion="wait for one to finish or cancel one",
                )
        plugin = self.generators.get(request.generator)
        tools = self._declared_tools(request)
        cap_block = capability_block(request.capabilities, tools)

        # Capabilities are checked before any block exists or anything is billed.
        requested = RequestedCapabilities(plugin.supported_capabilities)
        cap_response = requested.extract_from_blocks([cap_block]) if cap_block else None

        generation_id = new_id("gen")
        if request.file_id is not None:
            file = await self._claim_conversation(request.file_id, generation_id, owner)
        else:
            file = File(owner=owner)
            await self._claim_new_conversation(file.id, generation_id)
        try:
            return await self._start(request, plugin, tools, cap_block, cap_response, file, generation_id, owner, subscribed)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._release_conversation(file.id, generation_id)
            raise

    async def _start(
        self,
        request: GenerateRequest,
        plugin: PluginService[Any, Any],
        tools: dict[str, Tool],
        cap_block: Block | None,
        cap_response: Any,
        file: File,
        generation_id: str,
        owner: str | None,
        subscribed: bool,
    ) -> Generation:
        inputs = request.input_blocks()
        for block in inputs:
            block.file_id = file.id
            block.index = len(file.blocks)
            file.blocks.append(block)

        generation = Generation(
            id=generation_id,
            generator=request.generator,
            file_id=file.id,
            on_disconnect=request.on_disconnect,
            owner=owner,
        )
        for block in inputs:
            block.request_id = generation.id
        context_blocks = ([cap_block] if cap_block else []) + [b.model_copy() for b in file.blocks]
        output_types: list[str] = []
        if isinstance(plugin, StreamingGenerator):
            output_types = await self._output_types(plugin, context_blocks, request.options)
        machine = GenerationMachine(generation, EventLog(generation.id, coalesce=self.settings.coalesce))
        live = _Live(self, machine, plugin, request, context_blocks, file, tools)
        live.owner = owner
        blocks = [self._new_output_block(live, mime) for mime in output_types]
        machine.start(blocks, cap_response.model_dump(mode="json") if cap_response else None)
        live.round_blocks = [b.id for b in blocks]
        for block in blocks:
            block._writer = live

        if self._writes_while_running:
            await self.store.put_blocks(inputs)
            await self.store.put_file(self._file_snapshot(live))
            await self.store.put_generation(generation)
        self._live[generation.id] = live
        self._running += 1
        if owner is not None:
            self._running_per_owner[owner] = self._running_per_owner.get(owner, 0) + 1
        self.counters["started"] += 1
        # A plain asyncio task rather than one in the task group: an idle generation is
        # mostly this task, and anyio's per-task handle and cancel scope cost more.
        task = asyncio.get_running_loop().create_task(self._run(live, blocks), name=f"generation {generation.id}")
        self._run_tasks.add(task)
        task.add_done_callback(self._run_finished)
        logger.info(
            "generation %s started (%s)", generation.id, request.generator,
            extra={"generation_id": generation.id, "generator": request.generator},
        )
        self._mark_dirty(live)
        if not subscribed:
            self._subscriber_left(live)
        return generation.snapshot()

    async def _claim_conversation(self, file_id: str, generation_id: str, owner: str | None) -> File:
        """Make ``generation_id`` the only generation extending conversation ``file_id``
        (in this process, and in every process when the store is shared); return the
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
        await self._wait_if_finishing(file_id)
        if file_id in self._claiming:
            raise ConflictError(
                f"conversation {file_id} has a generation starting",
                suggestion="wait for it to finish or cancel it first",
            )
        holder = self._file_claims.get(file_id)
        if holder is None:
            # Marked here at once (no await in between), so two requests racing in this
            # process cannot both pass; then claimed across processes through the store.
            self._claiming.add(file_id)
            try:
                holder = await self.store.claim_file(file_id, generation_id)
            finally:
                self._claiming.discard(file_id)
            if holder is None:
                self._file_claims[file_id] = generation_id
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
            await self._release_conversation(file_id, generation_id)
            raise NotFoundError(f"no conversation {file_id!r}")
        return fresh

    async def _wait_if_finishing(self, file_id: str, timeout_s: float = 10.0) -> None:
        """If this process's generation on ``file_id`` has sent its terminal event and is
        writing its last state, wait until it is done."""
        holder = self._file_claims.get(file_id)
        live = self._live.get(holder) if holder is not None else None
        if live is None or not live.log.closed or live.done.is_set():
            return
        with anyio.move_on_after(timeout_s):
            await live.done.wait()

    async def _claim_new_conversation(self, file_id: str, generation_id: str) -> None:
        # Nobody else knows this id yet; the claim is there for the requests that will.
        self._file_claims[file_id] = generation_id
        if self.store.shared:
            try:
                await self.store.claim_file(file_id, generation_id)
            except BaseException:
                self._file_claims.pop(file_id, None)
                raise

    async def _release_conversation(self, file_id: str, generation_id: str) -> None:
        if self._file_claims.get(file_id) == generation_id:
            del self._file_claims[file_id]
        try:
            await self.store.release_file(file_id, generation_id)
        except Exception as exc:  # its claim goes stale once the generation has ended
            logger.warning("releasing conversation %s failed: %s", file_id, exc)

    def _declared_tools(self, request: GenerateRequest) -> dict[str, Tool]:
        registry = self.tools
        return offered_tools(request.tools, lambda name: registry[name].tool if name in registry else None)

    async def _output_types(
        self, plugin: StreamingGenerator, blocks: list[Block], options: dict[str, Any]
    ) -> list[str]:
        req = PluginRequest[RawBlockAndTagPluginInput](
            data=RawBlockAndTagPluginInput(blocks=blocks, options=options), context=plugin.context
        )
        try:
            response = plugin.determine_output_block_types(req)
            if inspect.isawaitable(response):
                response = await response
        except StreamingError:
            raise
        except Exception as exc:
            raise PluginError(f"determine_output_block_types failed: {exc}") from exc
        return _block_types(response)

    def _new_output_block(self, live: _Live, mime: str) -> Block:
        block = Block(
            file_id=live.file.id,
            index=len(live.file.blocks),
            mime_type=mime,
            tags=[Tag.chat_role(RoleTag.ASSISTANT)],
        )
        live.file.blocks.append(block)
        return block

    # -- running --

    async def _run(self, live: _Live, first_blocks: list[Block]) -> None:
        machine = live.machine
        raised: BaseException | None = None
        scope = anyio.CancelScope()
        live.scope = scope
        # The duration limit: a timer rather than a scope deadline (one object, not two).
        loop = asyncio.get_running_loop()
        limit = loop.call_at(loop.time() + self.settings.max_duration_s, scope.cancel)
        try:
            with scope:
                if self.store.shared:
                    self._spawn_for(live, self._control_listener, live)
                try:
                    await self._rounds(live, first_blocks)
                finally:
                    limit.cancel()
                    # Helpers of this generation (server tools, the control listener) end with it.
                    live.helpers_closed = True
                    for helper in list(live.helpers):
                        helper.cancel()
        except Exception as exc:  # the plugin raised: its blocks are aborted below
            raised = exc
            inner = unwrap(exc)
            if not isinstance(inner, StreamingError):
                logger.warning("generation %s: plugin raised %r", live.id, inner, extra={"generation_id": live.id})
        decided = terminal_outcome(
            raised=raised, stop_error=live.stop_error, cancel_reason=live.cancel_reason, cancelled=scope.cancel_called
        )
        if decided.timed_out:
            live.cancel_reason = "max duration reached"
        apply_outcome(machine, decided)
        outcome = machine.generation.state.value
        logger.info(
            "generation %s %s", live.id, outcome,
            extra={"generation_id": live.id, "outcome": outcome, "events": live.log.last_seq,
                   "error_code": machine.generation.error.code if machine.generation.error else None},
        )
        if outcome in self.counters:
            self.counters[outcome] += 1
        metrics = self.metrics
        metrics.generations[outcome] += 1
        metrics.events += live.log.last_seq
        metrics.chunks += live.chunks
        metrics.duration.observe(time.monotonic() - live.started_at)
        with anyio.CancelScope(shield=True):
            if await self._final_flush(live):
                await self._release_conversation(live.file.id, live.id)
            # Otherwise the conversation stays claimed until a retried write lands (the
            # next turn must not start from a conversation without this one's blocks).
        live.done.set()
        self._running -= 1
        if live.owner is not None:
            left = self._running_per_owner[live.owner] - 1
            if left:
                self._running_per_owner[live.owner] = left
            else:
                del self._running_per_owner[live.owner]
        for listener in self.listeners:
            listener("finished", machine.generation)
        if self._tg is not None:
            self._tg.start_soon(self._forget, live)

    def _run_finished(self, task: asyncio.Task[None]) -> None:
        self._run_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s crashed", task.get_name(), exc_info=task.exception())

    async def _forget(self, live: _Live) -> None:
        await anyio.sleep(self.settings.live_retention_s)
        if self._live.get(live.id) is live:
            del self._live[live.id]

    async def _rounds(self, live: _Live, blocks: list[Block]) -> None:
        rounds = 0
        while True:
            await self._run_plugin(live, blocks)
            # The plugin returned: what it left open is complete.
            for block_id in live.round_blocks:
                if block_id in live.machine.open_block_ids:
                    live.complete(block_id)
            calls = live.round_calls
            if not calls:
                return
            if turn_ends_with_client_calls(live.client_tools, [c.client_side for c in calls]):
                # The client answers in its next request: finish the server's own calls
                # of this turn, then end the generation here.
                await self._resolve_round(live, [c for c in calls if not c.client_side])
                return
            rounds += 1
            await self._resolve_round(live, calls)
            if rounds >= self.settings.max_tool_rounds:
                raise MaxToolRoundsError(
                    f"the generator asked for tools {rounds} rounds in a row",
                    suggestion="raise max_tool_rounds or give the model fewer reasons to call tools",
                )
            live.round_calls = []
            results = [c.result_block_id for c in calls if c.result_block_id]
            live.history_ids = next_history(live.history_ids, live.machine.order, results)
            history = self._conversation(live)
            live.conversation = history
            if isinstance(live.plugin, StreamingGenerator):
                types = await self._output_types(live.plugin, history, live.options)
            else:
                types = []
            blocks = []
            for mime in types:
                block = self._new_output_block(live, mime)
                live.machine.create_block(block)
                block._writer = live
                blocks.append(block)
            live.round_blocks = [b.id for b in blocks]

    def _conversation(self, live: _Live) -> list[Block]:
        """Context plus the blocks of every finished round, texts included."""
        return live.context_blocks + [live.machine.block_snapshot(b) for b in live.history_ids]

    async def _run_plugin(self, live: _Live, blocks: list[Block]) -> None:
        plugin = live.plugin
        options = live.options
        if isinstance(plugin, Generator):
            req = PluginRequest[RawBlockAndTagPluginInput](
                data=RawBlockAndTagPluginInput(blocks=live.conversation, options=options),
                context=plugin.context,
            )
            result = await self._call(plugin.run, req)
            self._apply_response(live, result)
            return
        req2 = PluginRequest[RawBlockAndTagPluginInputWithPreallocatedBlocks](
            data=RawBlockAndTagPluginInputWithPreallocatedBlocks(
                blocks=live.conversation, options=options, output_blocks=blocks
            ),
            context=plugin.context,
        )
        # model_validate copies the blocks; give the plugin the very blocks we bound.
        assert req2.data is not None
        req2.data.output_blocks = blocks
        run = plugin.run
        if inspect.isasyncgenfunction(run):
            await self._drive_async(live, run(req2), blocks)
        elif inspect.isgeneratorfunction(run):
            await self._drive_sync(live, run(req2), blocks)
        else:
            result = await self._call(run, req2)
            self._apply_response(live, result)

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if inspect.iscoroutinefunction(fn):
            return await fn(*args)
        result = await anyio.to_thread.run_sync(fn, *args)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _drive_async(self, live: _Live, agen: Any, blocks: list[Block]) -> None:
        slice_s = self.settings.time_slice_s
        clock = time.monotonic
        slice_end = clock() + slice_s
        checkpoint = anyio.lowlevel.checkpoint
        apply = self._apply
        try:
            async for item in agen:
                apply(live, item, blocks)
                if clock() >= slice_end:
                    # A plugin that never awaits still lets subscribers and cancels run.
                    await checkpoint()
                    slice_end = clock() + slice_s
        finally:
            with anyio.CancelScope(shield=True):
                await agen.aclose()

    async def _drive_sync(self, live: _Live, gen: Any, blocks: list[Block]) -> None:
        done = object()

        def step() -> Any:
            return next(gen, done)

        try:
            while True:
                item = await anyio.to_thread.run_sync(step)
                if item is done:
                    return
                self._apply(live, item, blocks)
        finally:
            gen.close()

    def _apply(self, live: _Live, item: Any, blocks: list[Block]) -> None:
        """Apply one chunk a plugin yielded."""
        if live.cancel_reason is not None:
            raise GenerationCancelledError(f"generation {live.id} was cancelled")
        if len(live.log.events) >= self.settings.max_events_per_generation:
            raise LimitExceededError(
                f"the generation reached {self.settings.max_events_per_generation} events",
                code="max_events",
            )
        live.chunks += 1
        if live.first_delta_at is None:
            live.first_delta_at = now = time.monotonic()
            self.metrics.time_to_first_delta.observe(now - live.started_at)
        if type(item) is str:
            target = self._first_open(live, blocks)
            live.machine.append(target, item)
        elif isinstance(item, tuple):
            index, text = item
            live.machine.append(blocks[index].id, text)
        elif isinstance(item, FunctionCallInvocation):
            self._add_invocation(live, item)
        elif isinstance(item, Usage):
            live.generation.usage.append(item)
        elif isinstance(item, Block):
            item.tags = item.tags or [Tag.chat_role(RoleTag.ASSISTANT)]
            self._add_whole_block(live, item)
        elif item is None:
            return
        else:
            raise PluginError(f"the plugin yielded a {type(item).__name__}, not a chunk")

    def _first_open(self, live: _Live, blocks: list[Block]) -> str:
        open_ids = live.machine._open
        for block in blocks:
            if block.id in open_ids:
                return block.id
        raise PluginError("the plugin wrote text but has no open output block")

    def _apply_response(self, live: _Live, result: Any) -> None:
        if result is None:
            return
        if isinstance(result, InvocableResponse):
            data = result.checked_data()
        else:
            data = result
        usage = getattr(data, "usage", None) or []
        live.generation.usage.extend(usage)
        if isinstance(data, RawBlockAndTagPluginOutput):
            for block in data.blocks:
                if block.mime_type == MimeTypes.FUNCTION_CALL_INVOCATION:
                    self._add_invocation(live, FunctionCallInvocation.from_block(block))
                else:
                    fresh = Block(
                        text=block.text,
                        mime_type=block.mime_type,
                        tags=block.tags or [Tag.chat_role(RoleTag.ASSISTANT)],
                        public_data=block.public_data,
                    )
                    self._add_whole_block(live, fresh)

    def _add_whole_block(self, live: _Live, block: Block) -> None:
        block.file_id = live.file.id
        block.index = len(live.file.blocks)
        live.file.blocks.append(block)
        live.machine.add_block_text(block)

    # -- tools --

    def _add_invocation(self, live: _Live, invocation: FunctionCallInvocation) -> None:
        call_id = invocation.call_id or new_id("call")
        invocation = invocation.model_copy(update={"call_id": call_id})
        block = invocation.to_block(
            tags=[
                Tag.chat_role(RoleTag.ASSISTANT),
                Tag(kind=TagKind.FUNCTION_SELECTION, name=invocation.tool_name),
            ]
        )
        block.file_id = live.file.id
        block.index = len(live.file.blocks)
        live.file.blocks.append(block)
        text = block.text
        live.machine.create_block(block)
        live.machine.append(block.id, text)
        live.complete(block.id)

    def _on_block_closed(self, live: _Live, block_id: str) -> None:
        block = live.machine.blocks[block_id]
        if block.mime_type != MimeTypes.FUNCTION_CALL_INVOCATION:
            return
        invocation = parse_tool_call(block)
        call_id = invocation.call_id or new_id("call")
        call = _Call(call_id, invocation.tool_name, invocation.args, block_id)
        if call_id in live.calls:
            raise PluginError(f"the generator reused tool call id {call_id}", code="invalid_tool_call")
        live.calls[call_id] = call
        live.round_calls.append(call)
        self.counters["tool_calls"] += 1
        # Decide who answers before publishing, so `tool.call` can tell the client
        # whether it is expected to answer (`client_side`).
        route = route_tool_call(call.tool_name, call.args, live.tools, self.tools)
        call.client_side = route.client_side
        live.machine.tool_call(call_id, block_id, invocation.tool_name, invocation.args, client_side=route.client_side)
        if route.problem is not None:
            self._resolve(live, call, [route.problem], True)
        elif route.answered_by is AnsweredBy.SERVER:
            self._spawn_for(live, self._run_server_tool, live, call)
        # Otherwise a client-side call: it waits for the client's answer.

    def _spawn_for(self, live: _Live, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn`` in the runtime's task group, cancelled when ``live`` ends (no task
        group per generation: an idle generation costs one task, not three)."""
        assert self._tg is not None

        async def helper() -> None:
            if live.helpers_closed:
                return  # the generation ended before this helper got to run
            with anyio.CancelScope() as scope:
                live.helpers.add(scope)
                try:
                    await fn(*args)
                except Exception:
                    logger.exception("generation %s: %s failed", live.id, getattr(fn, "__name__", fn), extra={"generation_id": live.id})
                finally:
                    live.helpers.discard(scope)

        self._tg.start_soon(helper)

    async def _run_server_tool(self, live: _Live, call: _Call) -> None:
        tool = self.tools[call.tool_name]
        try:
            with anyio.fail_after(self.settings.tool_timeout_s):
                result = await tool(call.args)
        except ToolArgumentsError as exc:
            self._resolve(live, call, [f"invalid arguments: {exc}"], True)
        except TimeoutError:
            self._resolve(live, call, [f"tool {call.tool_name} timed out"], True)
        except Exception as exc:
            self._resolve(live, call, [f"{type(exc).__name__}: {exc}"], True)
        else:
            self._resolve(live, call, result, False)

    def _resolve(self, live: _Live, call: _Call, result: list[str], is_error: bool) -> None:
        if call.resolved or live.machine.finished:
            return
        call.resolved = True
        if is_error:
            self.counters["tool_errors"] += 1
        res = FunctionCallResult(tool_name=call.tool_name, result=result, call_id=call.call_id, is_error=is_error)
        block = res.to_block(tags=[Tag.chat_role(RoleTag.TOOL)])
        self._add_whole_block(live, block)
        call.result_block_id = block.id
        live.machine.tool_result(call.call_id, block.id, call.tool_name, result, is_error)
        call.done.set()

    async def _resolve_round(self, live: _Live, calls: list[_Call]) -> None:
        with anyio.move_on_after(self.settings.tool_timeout_s):
            for call in calls:
                await call.done.wait()
        late = [c for c in calls if not c.resolved]
        if late:
            raise ToolTimeoutError(
                "no result for tool call(s) "
                + ", ".join(f"{c.tool_name} ({c.call_id})" for c in late)
                + f" within {self.settings.tool_timeout_s:g}s",
                suggestion="answer client-side tools with POST /generations/{id}/tool-results",
            )

    async def submit_tool_result(self, generation_id: str, answer: ToolResultRequest) -> None:
        """Answer a client-side tool call of a running generation.

        Raises:
            NotFoundError: no such generation.
            ToolCallConflictError: no such pending call, or it was already answered.
        """
        result, is_error = answer.items()
        live = self._live.get(generation_id)
        if live is not None:
            call = live.calls.get(answer.call_id)
            if call is None or call.resolved or live.machine.finished:
                raise ToolCallConflictError(
                    f"no pending tool call {answer.call_id!r} in generation {generation_id}"
                )
            if not await self.store.claim_tool_result(generation_id, answer.call_id):
                raise ToolCallConflictError(f"tool call {answer.call_id!r} was already answered")
            self._resolve(live, call, result, is_error)
            return
        generation = await self.get_generation(generation_id)
        if generation.state.finished:
            raise ToolCallConflictError(f"generation {generation_id} has already ended")
        events = await self.store.read_events(generation_id)
        called = {e.data["call_id"] for e in events if e.type == "tool.call"}
        answered = {e.data["call_id"] for e in events if e.type == "tool.result"}
        if answer.call_id not in called or answer.call_id in answered:
            raise ToolCallConflictError(f"no pending tool call {answer.call_id!r} in generation {generation_id}")
        if not await self.store.claim_tool_result(generation_id, answer.call_id):
            raise ToolCallConflictError(f"tool call {answer.call_id!r} was already answered")
        await self.store.publish_control(
            generation_id,
            {"type": "tool.result", "call_id": answer.call_id, "result": result, "is_error": is_error},
        )

    async def _control_listener(self, live: _Live) -> None:
        async with self.store.control(live.id) as messages:
            async for msg in messages:
                kind = msg.get("type")
                if kind == "cancel":
                    self._request_cancel(live, str(msg.get("reason") or "cancelled"))
                elif kind == "tool.result":
                    call = live.calls.get(str(msg.get("call_id")))
                    if call is not None:
                        self._resolve(live, call, list(msg.get("result") or []), bool(msg.get("is_error")))
                elif kind == "interrupted":
                    # Another process found our lease lapsed and failed this generation.
                    self._request_stop(
                        live,
                        StoreError(
                            "the generation was failed by another process: this one's lease lapsed",
                            code="interrupted",
                        ),
                    )
                elif kind == "subscriber":
                    # Someone streams it through another process: restart the disconnect grace.
                    self._subscriber_left(live)

    # -- cancelling --

    def _request_stop(self, live: _Live, error: StreamingError) -> None:
        """End a running generation with ``generation.failed`` carrying ``error``."""
        if live.done.is_set() or live.cancel_reason is not None or live.stop_error is not None:
            return
        live.stop_error = error
        live.cancel_reason = error.code
        if live.scope is not None:
            live.scope.cancel()

    def _request_cancel(self, live: _Live, reason: str) -> None:
        if live.done.is_set() or live.cancel_reason is not None:
            return
        live.cancel_reason = reason
        if live.scope is not None:
            live.scope.cancel()

    async def cancel(self, generation_id: str, reason: str = "cancelled by client", *, wait_s: float = 2.0) -> Generation:
        """Cancel a generation (idempotent); returns its state after the cancel took effect.

        Raises:
            NotFoundError: no such generation.
        """
        live = self._live.get(generation_id)
        if live is not None:
            self._request_cancel(live, reason)
            with anyio.move_on_after(wait_s):
                await live.done.wait()
            return self._live_snapshot(live)
        generation = await self.get_generation(generation_id)
        if not generation.state.finished:
            await self.store.publish_control(generation_id, {"type": "cancel", "reason": reason})
            with anyio.move_on_after(wait_s):
                while not generation.state.finished:
                    await anyio.sleep(0.05)
                    generation = await self.get_generation(generation_id)
        return generation

    # -- subscribers and disconnects --

    def _subscriber_left(self, live: _Live) -> None:
        if live.subscribers > 0 or live.generation.on_disconnect is not OnDisconnect.CANCEL:
            return
        if live.done.is_set() or self._tg is None:
            return
        live.idle_token += 1
        self._tg.start_soon(self._disconnect_watch, live, live.idle_token)

    async def _disconnect_watch(self, live: _Live, token: int) -> None:
        await anyio.sleep(self.settings.disconnect_grace_s)
        if live.subscribers == 0 and live.idle_token == token:
            self._request_cancel(live, "client disconnected")

    async def check_subscribable(self, generation_id: str) -> None:
        """Raise now what :meth:`subscribe` would raise at its first step.

        Raises:
            NotFoundError: no such generation.
            LimitExceededError: it has as many subscribers as allowed.
        """
        live = self._live.get(generation_id)
        if live is None:
            await self.get_generation(generation_id)
        elif live.subscribers >= self.settings.max_subscribers_per_generation:
            raise LimitExceededError(
                f"generation {generation_id} has {live.subscribers} subscribers already",
                suggestion="share one subscription, or retry later",
            )

    async def subscribe(self, generation_id: str, after: int = 0) -> AsyncGenerator[list[Event], None]:
        """Batches of events after ``after``: replayed from the log, then live, until the end.

        Raises:
            NotFoundError: no such generation.
        """
        live = self._live.get(generation_id)
        if live is None:
            generation = await self.get_generation(generation_id)  # raises NotFoundError
            if generation.state.finished and generation.last_seq and after >= generation.last_seq:
                return  # nothing after the terminal event
            async for batch in self.store.follow(generation_id, after):
                yield batch
            return
        if live.subscribers >= self.settings.max_subscribers_per_generation:
            raise LimitExceededError(
                f"generation {generation_id} has {live.subscribers} subscribers already",
                suggestion="share one subscription, or retry later",
            )
        live.subscribers += 1
        log = live.log
        limit = self.settings.read_batch
        try:
            while True:
                events = log.read(after, limit)
                if events:
                    after = events[-1].seq
                    yield events
                    if events[-1].terminal:
                        return
                    continue
                if log.closed:
                    return
                # A bare loop future: an idle subscriber is mostly this wait, and an
                # anyio Event (an asyncio Event and its deque inside) costs more.
                woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                wake = functools.partial(_resolve, woken)
                log.wait(wake)
                try:
                    await woken
                finally:
                    log.cancel_wait(wake)
        finally:
            live.subscribers -= 1
            self._subscriber_left(live)

    async def events(self, generation_id: str, after: int = 0) -> AsyncGenerator[Event, None]:
        """Events one at a time (see :meth:`subscribe`)."""
        async for batch in self.subscribe(generation_id, after):
            for event in batch:
                yield event

    # -- reading --

    async def get_generation(self, generation_id: str) -> Generation:
        """Raises NotFoundError."""
        live = self._live.get(generation_id)
        if live is not None:
            return self._live_snapshot(live)
        gen2 = await self.store.get_generation(generation_id)
        if gen2 is None:
            raise NotFoundError(f"no generation {generation_id!r}")
        return gen2

    @staticmethod
    def _live_snapshot(live: _Live) -> Generation:
        gen = live.generation.snapshot()
        gen.last_seq = live.log.last_seq
        return gen

    async def get_generation_blocks(self, generation: Generation) -> list[Block]:
        live = self._live.get(generation.id)
        if live is not None:
            return [live.machine.block_snapshot(b) for b in live.generation.output_block_ids]
        blocks = []
        for bid in generation.output_block_ids:
            block = await self.store.get_block(bid)
            if block is not None:
                blocks.append(block)
        return blocks

    def live_block(self, block_id: str) -> tuple[Block, _Live] | None:
        for live in self._live.values():
            if block_id in live.machine.blocks:
                return live.machine.block_snapshot(block_id), live
        return None

    async def get_block(self, block_id: str) -> Block:
        """Raises NotFoundError."""
        found = self.live_block(block_id)
        if found is not None:
            return found[0]
        block = await self.store.get_block(block_id)
        if block is None:
            raise NotFoundError(f"no block {block_id!r}")
        return block

    async def get_file(self, file_id: str) -> File:
        """Raises NotFoundError."""
        holder = self._file_claims.get(file_id)
        live = self._live.get(holder) if holder is not None else None
        if live is not None and not live.done.is_set():
            return self._file_snapshot(live)
        file = await self.store.get_file(file_id)
        if file is None:
            raise NotFoundError(f"no conversation {file_id!r}")
        return file

    def _file_snapshot(self, live: _Live) -> File:
        blocks = [
            live.machine.block_snapshot(b.id) if b.id in live.machine.blocks else b.model_copy()
            for b in live.file.blocks
        ]
        return live.file.model_copy(update={"blocks": blocks})

    # -- persistence --

    @property
    def _writes_while_running(self) -> bool:
        # Only a store that outlives the process or is shared with others needs a running
        # generation's events before it ends; the memory store gets it whole at the end.
        return self.store.durable or self.store.shared

    def _mark_dirty(self, live: _Live) -> None:
        if not self._writes_while_running:
            return
        self._dirty.add(live)
        if not self._flush_wanted.is_set():
            self._flush_wanted.set()

    async def _flusher(self) -> None:
        while True:
            await self._flush_wanted.wait()
            self._flush_wanted = anyio.Event()
            await anyio.sleep(self.settings.persist_interval_s)
            dirty, self._dirty = self._dirty, set()
            for live in dirty:
                try:
                    await self._flush(live)
                except Exception as exc:  # a store hiccup must not kill the flusher
                    self._store_write_failed(live, exc)
                    continue
                if not live.log.closed:
                    live.log.wait(lambda live=live: self._mark_dirty(live))  # type: ignore[misc]

    async def _final_flush(self, live: _Live) -> bool:
        """Write what is left of ``live``; False if that failed (it is retried)."""
        try:
            await self._flush(live, final=True)
        except Exception as exc:  # retried in the background; the generation has ended here
            self._store_write_failed(live, exc)
            return False
        return True

    def _store_write_failed(self, live: _Live, exc: Exception) -> None:
        """A write of ``live`` to the store failed: retry it, and end it if it cannot be."""
        logger.warning("writing generation %s to the store failed: %s", live.id, exc, extra={"generation_id": live.id})
        if isinstance(exc, StoreError) and exc.code == "log_closed":
            # Another process found our lease lapsed and failed it: nothing more can be written.
            self._request_stop(live, StoreError(exc.message, code="interrupted", suggestion=exc.suggestion))
            return
        stored = exc.details.get("stored_seq") if isinstance(exc, StoreError) and exc.code == "log_gap" else None
        if isinstance(stored, int) and 0 <= stored <= live.log.last_seq:
            # The store has less (it restarted empty) or more (a retried write landed twice)
            # of the log than we thought: carry on from what it has.
            live.persisted_seq = stored
        elif isinstance(exc, StoreUnavailableError):
            self._request_stop(live, exc)  # retried with backoff already: fail it, clearly
        if not live.log.closed:
            self._mark_dirty(live)
        elif live.id not in self._final_retries and self._tg is not None:
            self._final_retries.add(live.id)
            self._tg.start_soon(self._retry_final_flush, live)

    async def _retry_final_flush(self, live: _Live, max_delay_s: float = 5.0) -> None:
        delay = self.settings.persist_interval_s
        try:
            while True:
                await anyio.sleep(delay)
                try:
                    await self._flush(live, final=True)
                    await self._release_conversation(live.file.id, live.id)
                    return
                except StoreError as exc:
                    if exc.code == "log_closed":
                        await self._release_conversation(live.file.id, live.id)
                        return
                    logger.warning("writing generation %s to the store failed again: %s", live.id, exc, extra={"generation_id": live.id})
                except Exception as exc:
                    logger.warning("writing generation %s to the store failed again: %s", live.id, exc, extra={"generation_id": live.id})
                delay = min(delay * 2, max_delay_s)
        finally:
            self._final_retries.discard(live.id)

    async def _flush(self, live: _Live, *, final: bool = False) -> None:
        if live.flush_lock is None:
            live.flush_lock = anyio.Lock()
        async with live.flush_lock:
            events = live.log.read(live.persisted_seq)
            if events:
                await self.store.append_events(live.id, events)
                live.persisted_seq = events[-1].seq
            machine = live.machine
            gen = machine.generation.snapshot()
            gen.last_seq = live.persisted_seq
            if final or events:
                await self.store.put_blocks([machine.block_snapshot(b) for b in machine.order])
            if final:
                # The conversation before the record that says finished: whoever sees the
                # generation finished (another process claiming the conversation) finds
                # its blocks in the file.
                await self.store.put_file(self._file_snapshot(live))
            if final or events:
                await self.store.put_generation(gen)


def _block_types(response: Any) -> list[str]:
    if isinstance(response, InvocableResponse):
        response = response.checked_data("the plugin refused the request")
    if isinstance(response, BlockTypePluginOutput):
        return list(response.block_types_to_create)
    if isinstance(response, list) and all(isinstance(m, str) for m in response):
        return list(response)
    raise PluginError("determine_output_block_types returned no block types")

