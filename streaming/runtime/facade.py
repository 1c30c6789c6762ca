"""The :class:`Runtime`: what the server and Python callers use. A facade over the
collaborators of :mod:`streaming.runtime` (see its docstring for the map)."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import anyio

from streaming.capabilities import RequestedCapabilities
from streaming.capability_block import capability_block, offered_tools
from streaming.errors import ConflictError, NotFoundError, StreamingError
from streaming.events import Event
from streaming.lifecycle import GenerationMachine
from streaming.log import EventLog
from streaming.metrics import Histogram, RuntimeMetrics
from streaming.model import Block, File, Generation, GenerationState, new_id
from streaming.plugin.streaming_generator import StreamingGenerator
from streaming.requests import GenerateRequest, ToolResultRequest
from streaming.runtime.admission import Admission
from streaming.runtime.aio import LazyEvent
from streaming.runtime.claims import ConversationClaims, is_tombstone, replace_turns
from streaming.runtime.driver import PluginDriver
from streaming.runtime.elsewhere import ElsewhereGeneration
from streaming.runtime.handles import GenerationHandle, LocalGeneration
from streaming.runtime.multitask import CheckedRequest, Multitask
from streaming.runtime.registry import GeneratorRegistry
from streaming.runtime.run import Run
from streaming.runtime.runner import Runner
from streaming.runtime.settings import RuntimeSettings
from streaming.runtime.store_writer import StoreWriter
from streaming.runtime.subscriptions import Subscriptions
from streaming.runtime.tool_rounds import ToolRounds
from streaming.stores.base import Store
from streaming.stores.memory import MemoryStore
from streaming.tasks import TaskOwner
from streaming.tools import ToolRegistry

__all__ = ["Runtime", "RuntimeStats"]

logger = logging.getLogger("streaming.runtime")

@dataclass(frozen=True, slots=True)
class RuntimeStats:
    """A runtime's numbers at one moment (what ``GET /metrics`` exports)."""

    running: int  # generations running in this process
    in_memory: int  # running, or finished and kept for late subscribers
    subscribers: int  # subscriptions open to generations of this process
    finished: dict[str, int]  # generations finished, by outcome
    events: int  # events written to logs (finished and running generations)
    chunks: int  # chunks written by plugins
    tool_calls: int
    tool_errors: int
    store_errors: int  # writes to the store that failed
    time_to_first_delta: Histogram
    duration: Histogram


class Runtime:
    """Hosts generator plugins and streams their generations.

    Use as an async context manager::

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
        self.settings = settings = settings or RuntimeSettings()
        self.counters: dict[str, int] = dict.fromkeys(
            ("started", "succeeded", "failed", "cancelled", "tool_calls", "tool_errors"), 0
        )
        self.listeners: list[Callable[[str, Generation], None]] = []
        self.metrics = RuntimeMetrics()
        self._tasks = TaskOwner("runtime")
        self._admission = Admission(settings)
        self._claims = ConversationClaims(self.store, self._wait_if_finishing, self._live_file)
        self._subscriptions = Subscriptions(settings)
        self._driver = PluginDriver(settings, self.metrics)
        self._rounds = ToolRounds(settings, self.tools, self._driver, self.store, self._tasks, self.counters)
        self._writer = StoreWriter(self.store, settings, self.metrics, self._tasks, self._release)
        self._runner = Runner(
            settings, self._tasks, self._rounds, self._writer, self._admission, self._subscriptions,
            self._release, self.counters, self.metrics, self.listeners,
        )
        self._multitask = Multitask(
            self.store, settings, self._claims, self._runner, self._writer, self._subscriptions,
            self._rounds, self._tasks, self.counters, cancel=self.cancel, start=self._start,
        )
        self._grace_s = settings.shutdown_grace_s
        self._shutdown_requested: LazyEvent | None = None
        #: set by :meth:`stop_now`: the grace period ends at once
        self._stop_now = LazyEvent()
        #: set in an API process whose generations workers run (streaming.runtime.queue)
        self.dispatch: Any = None

    # -- the runtime's own lifecycle --

    async def __aenter__(self) -> Runtime:
        await self.store.open()
        await self.store.recover_interrupted()
        self._writer.start()
        self._shutdown_requested = LazyEvent()
        self._tasks.spawn(self._shutdown_watcher(), name="shutdown watcher")
        self._admission.accepting = True
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            await self.shutdown()
        finally:
            await self._tasks.aclose()
            await self.store.close()

    def begin_shutdown(self, grace_s: float | None = None) -> None:
        """Stop accepting generations now; in the background, give the running ones
        ``grace_s`` to finish, then end each with ``generation.failed`` (code
        ``shutdown``) so that its subscribers are told. Idempotent; safe to call from a
        plain loop callback (a signal handler), as it only sets a flag."""
        self._admission.accepting = False
        if grace_s is not None:
            self._grace_s = grace_s
        if self._shutdown_requested is not None:
            self._shutdown_requested.set()

    def stop_now(self) -> None:
        """Shut down without waiting: every running generation ends now with
        ``generation.failed`` (code ``shutdown``), which its subscribers receive. Safe
        from a plain loop callback (a second Ctrl-C)."""
        self._stop_now.set()
        self.begin_shutdown()

    async def _shutdown_watcher(self) -> None:
        assert self._shutdown_requested is not None
        await self._shutdown_requested.wait()
        running = self._runner.running()
        with anyio.move_on_after(self._grace_s):
            async with anyio.create_task_group() as grace:
                # Whichever comes first: every run done, or stop_now; then the other goes.

                async def all_done() -> None:
                    for run in running:
                        await run.done.wait()
                    grace.cancel_scope.cancel()

                async def stopped() -> None:
                    await self._stop_now.wait()
                    grace.cancel_scope.cancel()

                grace.start_soon(all_done)
                grace.start_soon(stopped)
        error = StreamingError(
            "the server shut down before the generation finished", code="shutdown", suggestion="start it again"
        )
        for run in running:
            run.request_stop(error)
        with anyio.move_on_after(5):
            for run in running:
                await run.done.wait()

    async def shutdown(self, grace_s: float | None = None) -> None:
        """Stop accepting; let running generations finish within ``grace_s``, then end
        them with a terminal event that says so; return once every one has ended."""
        self.begin_shutdown(grace_s)
        with anyio.move_on_after((self.settings.shutdown_grace_s if grace_s is None else grace_s) + 6):
            for run in list(self._runner.live.values()):
                await run.done.wait()

    @property
    def draining(self) -> bool:
        return not self._admission.accepting

    @property
    def running_count(self) -> int:
        return self._admission.running

    def stats(self) -> RuntimeStats:
        """The runtime's numbers now (cheap: one pass over the generations in memory)."""
        m = self.metrics
        running = self._runner.running()
        errors = self.counters["tool_errors"]
        return RuntimeStats(
            running=len(running),
            in_memory=len(self._runner.live),
            subscribers=self._subscriptions.open,
            finished={k: m.generations.get(k, 0) for k in ("succeeded", "failed", "cancelled")},
            events=m.events + sum(run.log.last_seq for run in running),
            chunks=m.chunks + sum(run.chunks for run in running),
            tool_calls=self.counters["tool_calls"],
            tool_errors=errors,
            store_errors=m.store_errors,
            time_to_first_delta=m.time_to_first_delta,
            duration=m.duration,
        )

    # -- starting --

    async def start(
        self, request: GenerateRequest, *, subscribed: bool = False, owner: str | None = None,
        generation_id: str | None = None,
    ) -> Generation:
        """Check, preallocate and start a generation; return it (state ``running``, or
        ``waiting`` when ``multitask`` is ``enqueue`` and its conversation is busy).

        ``subscribed`` says the caller will subscribe at once (the disconnect grace period
        then starts with its first disconnect rather than now). ``generation_id``: the id a
        queued generation already has (a worker starting it, :mod:`.worker`). In an API
        process (``dispatch`` set) the generation is queued for a worker instead.

        Raises:
            UnknownGeneratorError: no generator has the requested name.
            UnsupportedCapabilityError: a capability is requested at a level not supported.
            NotFoundError: ``file_id`` names no conversation.
            ConflictError: ``file_id`` has a generation running or waiting, and
                ``multitask`` is ``reject`` (or the others did not end in time).
            LimitExceededError: too many generations are running.
            PluginError: the plugin failed to say which blocks it will write.

        ``multitask`` says what to do when ``file_id`` is busy: ``interrupt`` cancels what
        runs or waits on it and starts after it (its partial answer stays, aborted);
        ``rollback`` does the same and takes their turns out of the conversation;
        ``enqueue`` returns the generation ``waiting``: it starts once those before it
        have ended, in the order they came.
        """
        self._admission.check(owner)
        if self.dispatch is not None:  # an API process: a worker will run it
            return await self.dispatch.enqueue(request, owner)  # type: ignore[no-any-return]
        plugin = self.generators.get(request.generator)
        registry = self.tools
        tools = offered_tools(request.tools, lambda name: registry[name].tool if name in registry else None)
        cap_block = capability_block(request.capabilities, tools)
        # Capabilities are checked before any block exists or anything is billed.
        cap_response = RequestedCapabilities(plugin.supported_capabilities).extract_from_blocks([cap_block]) if cap_block else None

        checked = CheckedRequest(request, plugin, tools, cap_block, cap_response)
        # An id minted here: nothing of the generation is in the store yet (a worker's
        # queued generation has its id, and maybe control messages, already).
        minted = generation_id is None
        generation_id = generation_id or new_id("gen")
        if request.file_id is not None:
            try:
                file = await self._claims.claim(request.file_id, generation_id, owner)
            except ConflictError as busy:
                if request.multitask == "reject":
                    raise
                if request.multitask == "enqueue":
                    return await self._multitask.enqueue(checked, generation_id, owner, subscribed)
                file = await self._multitask.take_over(request.file_id, generation_id, owner, busy, rollback=request.multitask == "rollback")
        else:
            file = File(owner=owner)
            await self._claims.claim_new(file.id, generation_id, with_start=minted)
        try:
            return await self._start(
                checked, file, generation_id, owner, subscribed, minted=minted, claim=minted and request.file_id is None
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._claims.release(file.id, generation_id)
            raise

    async def _start(
        self, checked: CheckedRequest, file: File, generation_id: str, owner: str | None, subscribed: bool,
        waited: Run | None = None, *, minted: bool = False, claim: bool = False,
    ) -> Generation:
        """Start the generation on ``file`` (claimed); ``waited`` is its run if it was
        enqueued (``waiting`` until now). ``minted``: its id was minted by ``start`` (the
        store has nothing of it); ``claim``: ``file`` is new, and its claim in a shared
        store is written with the start."""
        request, plugin, tools = checked.request, checked.plugin, checked.tools
        cap_block, cap_response = checked.cap_block, checked.cap_response
        if request.replace:
            file = await replace_turns(self.store, file, request.replace, generation_id)
        inputs = request.input_blocks()
        for block in inputs:
            block.file_id = file.id
            block.index = len(file.blocks)
            file.blocks.append(block)
        generation = waited.generation if waited is not None else Generation(
            id=generation_id, generator=request.generator, file_id=file.id,
            on_disconnect=request.on_disconnect, owner=owner,
        )
        for block in inputs:
            block.request_id = generation.id
        context_blocks = ([cap_block] if cap_block else []) + [b.model_copy() for b in file.blocks]
        output_types: list[str] = []
        if isinstance(plugin, StreamingGenerator):
            output_types = await self._driver.output_types(plugin, context_blocks, request.options)
        if waited is not None:
            run = waited
            machine = run.machine
            run.file = file
            run.context_blocks = run.conversation = context_blocks
        else:
            machine = GenerationMachine(generation, EventLog(generation.id, coalesce=self.settings.coalesce))
            run = Run(machine, plugin, request, context_blocks, file, tools, owner, self._rounds.on_block_closed)
        blocks = [run.new_block(mime) for mime in output_types]
        machine.start(blocks, cap_response.model_dump(mode="json") if cap_response else None)
        run.round_blocks = [b.id for b in blocks]
        for block in blocks:
            block._writer = run
        self._runner.prepare(run)
        await self._writer.write_started(run, inputs, new=minted, claim=claim)
        self._admission.admit(owner)
        self.counters["started"] += 1
        self._runner.launch(run, blocks)
        logger.info(
            "generation %s started (%s)", generation.id, request.generator,
            extra={"generation_id": generation.id, "generator": request.generator},
        )
        self._writer.mark_dirty(run)
        if not subscribed:
            self._subscriptions.left(run)
        return generation.snapshot()

    async def _wait_if_finishing(self, generation_id: str, timeout_s: float = 10.0) -> None:
        run = self._runner.live.get(generation_id)
        if run is None or not run.log.closed or run.done.is_set():
            return
        with anyio.move_on_after(timeout_s):
            await run.done.wait()

    async def _release(self, run: Run) -> None:
        await self._claims.release(run.file.id, run.id)

    # -- one generation, wherever it runs --

    async def handle(self, generation_id: str) -> GenerationHandle:
        """The generation, running here or elsewhere.

        Raises:
            NotFoundError: no such generation.
        """
        return self._here(generation_id) or await (self.dispatch or ElsewhereGeneration).find(self.store, generation_id)

    def _here(self, generation_id: str) -> LocalGeneration | None:
        run = self._runner.live.get(generation_id)
        return LocalGeneration(run, self._rounds, self._subscriptions) if run is not None else None

    def handle_of(self, generation: Generation) -> GenerationHandle:
        """The handle of a generation whose record was read already."""
        return self._here(generation.id) or ElsewhereGeneration(generation, self.store)

    async def cancel(self, generation_id: str, reason: str = "cancelled by client", *, wait_s: float = 2.0) -> Generation:
        """Cancel a generation (idempotent); returns its state after the cancel took effect.

        Raises:
            NotFoundError: no such generation.
        """
        return await (await self.handle(generation_id)).cancel(reason, wait_s)

    async def submit_tool_result(self, generation_id: str, answer: ToolResultRequest) -> None:
        """Answer a client-side tool call of a running generation.

        Raises:
            NotFoundError: no such generation.
            ToolCallConflictError: no such pending call, or it was already answered.
        """
        await (await self.handle(generation_id)).answer_tool(answer)

    async def check_subscribable(self, generation_id: str) -> None:
        """Raise now what :meth:`subscribe` would raise at its first step.

        Raises:
            NotFoundError: no such generation.
            LimitExceededError: it has as many subscribers as allowed.
        """
        (await self.handle(generation_id)).check_subscribable()

    def subscribe(self, generation_id: str, after: int = 0) -> AsyncGenerator[list[Event], None]:
        """Batches of events after ``after``: replayed from the log, then live, until the end.

        Raises (at the first step):
            NotFoundError: no such generation.
            LimitExceededError: it has as many subscribers as allowed.
        """
        here = self._here(generation_id)
        if here is not None:
            # The handle's own generator, not one wrapped in another: an idle stream is
            # mostly this generator, and a wrapper costs ~1 KB a stream (docs/benchmarks.md).
            return here.subscribe(after)
        return self._subscribe_found(generation_id, after)

    async def _subscribe_found(self, generation_id: str, after: int) -> AsyncGenerator[list[Event], None]:
        handle = await self.handle(generation_id)
        # Closed with this generator (not when collected): a subscriber that leaves is
        # counted out at once.
        async with aclosing(handle.subscribe(after)) as batches:
            async for batch in batches:
                yield batch

    async def events(self, generation_id: str, after: int = 0) -> AsyncGenerator[Event, None]:
        """Events one at a time (see :meth:`subscribe`)."""
        async with aclosing(self.subscribe(generation_id, after)) as batches:
            async for batch in batches:
                for event in batch:
                    yield event

    async def get_generation(self, generation_id: str) -> Generation:
        """Raises NotFoundError."""
        return (await self.handle(generation_id)).read()

    async def get_generation_blocks(self, generation: Generation) -> list[Block]:
        return await self.handle_of(generation).output_blocks()

    # -- blocks and conversations --

    def live_block(self, block_id: str) -> Block | None:
        """A block of a generation in memory here, as it is now."""
        for run in self._runner.live.values():
            if block_id in run.machine.blocks:
                return run.machine.block_snapshot(block_id)
        return None

    async def get_block(self, block_id: str) -> Block:
        """Raises NotFoundError."""
        stored = await self.store.get_block(block_id)
        block = None if stored is not None and is_tombstone(stored) else self.live_block(block_id) or stored
        if block is None:
            raise NotFoundError(f"no block {block_id!r}")
        return block

    def _live_file(self, file_id: str) -> File | None:
        """The conversation as the generation running here on it holds it."""
        holder = self._claims.holder(file_id)
        run = self._runner.live.get(holder) if holder is not None else None
        if run is None or run.done.is_set() or run.generation.state is GenerationState.WAITING:
            return None  # (a waiting one that has just claimed it holds no conversation yet)
        return run.file_snapshot()

    async def get_file(self, file_id: str) -> File:
        """Raises NotFoundError."""
        live = self._live_file(file_id)
        if live is not None:
            return live
        file = await self.store.get_file(file_id)
        if file is None:
            raise NotFoundError(f"no conversation {file_id!r}")
        return file
