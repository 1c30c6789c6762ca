"""Double texting (``multitask``): a message for a conversation that is busy with another
generation. ``interrupt`` cancels what runs or waits on it and starts after it; ``rollback``
does the same and takes their turns out of the conversation; ``enqueue`` returns the
generation ``waiting``, started once those before it have ended, in the order they came.

The claims themselves (and the queue of waiting generations) are :mod:`.claims`; this is
what the runtime does with a busy conversation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from streaming.capabilities import Tool
from streaming.errors import ConflictError, NotFoundError, StreamingError
from streaming.lifecycle import GenerationMachine
from streaming.log import EventLog
from streaming.model import Block, File, Generation, GenerationState
from streaming.plugin.service import PluginService
from streaming.requests import GenerateRequest
from streaming.runtime.claims import ConversationClaims, take_out_turns
from streaming.runtime.control import presence_window
from streaming.runtime.run import Run
from streaming.runtime.runner import Runner
from streaming.runtime.settings import RuntimeSettings
from streaming.runtime.store_writer import StoreWriter
from streaming.runtime.subscriptions import Subscriptions
from streaming.runtime.tool_rounds import ToolRounds
from streaming.stores.base import Store
from streaming.tasks import TaskOwner

__all__ = ["TAKE_OVER_S", "CheckedRequest", "Multitask"]

logger = logging.getLogger("streaming.runtime")

#: how long ``interrupt`` and ``rollback`` wait for what they cancel to end
TAKE_OVER_S = 15.0


@dataclass(frozen=True, slots=True)
class CheckedRequest:
    """A request checked for starting: its plugin, the tools it offers, its capabilities."""

    request: GenerateRequest
    plugin: PluginService[Any, Any]
    tools: dict[str, Tool]
    cap_block: Block | None
    cap_response: Any


class StartFn(Protocol):
    """The runtime's start of a generation on a claimed conversation."""

    def __call__(
        self, checked: CheckedRequest, file: File, generation_id: str, owner: str | None, subscribed: bool,
        waited: Run | None = None,
    ) -> Awaitable[Generation]: ...


class Multitask:
    """Taking a busy conversation over (``interrupt``, ``rollback``) and waiting for it
    (``enqueue``). ``cancel`` is the runtime's (a generation here or in another process);
    ``start`` starts a generation whose conversation is claimed."""

    def __init__(
        self,
        store: Store,
        settings: RuntimeSettings,
        claims: ConversationClaims,
        runner: Runner,
        writer: StoreWriter,
        subscriptions: Subscriptions,
        rounds: ToolRounds,
        tasks: TaskOwner,
        counters: dict[str, int],
        *,
        cancel: Callable[..., Awaitable[Generation]],
        start: StartFn,
    ) -> None:
        self._store = store
        self._settings = settings
        self._claims = claims
        self._runner = runner
        self._writer = writer
        self._subscriptions = subscriptions
        self._rounds = rounds
        self._tasks = tasks
        self._counters = counters
        self._cancel = cancel
        self._start = start

    async def take_over(
        self, file_id: str, generation_id: str, owner: str | None, busy: ConflictError, *, rollback: bool
    ) -> File:
        """Cancel the generations running or waiting on ``file_id``, then claim it for
        ``generation_id``; with ``rollback``, their turns leave the conversation.

        Raises:
            ConflictError: they did not end within ``TAKE_OVER_S``.
        """
        reason = "rolled back: a new message came" if rollback else "interrupted: a new message came"
        ended: list[str] = []  # cancelled by this request: the turns a rollback takes out
        seen: set[str] = set()
        deadline = anyio.current_time() + TAKE_OVER_S
        while True:
            holder = busy.details.get("generation_id")
            for other in [holder, *self._claims.waiting(file_id)]:
                if isinstance(other, str) and other not in seen:
                    seen.add(other)
                    try:
                        after = await self._cancel(other, reason, wait_s=5.0)
                    except NotFoundError:
                        continue  # it is starting (no record yet) or gone: the claim says which
                    if after.state not in (GenerationState.SUCCEEDED, GenerationState.FAILED):
                        ended.append(other)  # (one that finished on its own meanwhile stays)
            try:
                file = await self._claims.claim(file_id, generation_id, owner)
                break
            except ConflictError as again:
                if anyio.current_time() >= deadline:
                    raise
                busy = again
                await self._claims.changed(0.05)
        if not rollback:
            return file
        try:
            return await take_out_turns(self._store, file, set(ended), generation_id)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._claims.release(file_id, generation_id)
            raise

    async def enqueue(self, checked: CheckedRequest, generation_id: str, owner: str | None, subscribed: bool) -> Generation:
        """A generation ``waiting`` for its conversation: subscribable, cancellable, and
        started (``generation.started``) once those before it here have ended and the
        conversation is free (in any process)."""
        request = checked.request
        file_id = request.file_id
        assert file_id is not None
        generation = Generation(
            id=generation_id, generator=request.generator, file_id=file_id,
            on_disconnect=request.on_disconnect, owner=owner,
        )
        machine = GenerationMachine(generation, EventLog(generation.id, coalesce=self._settings.coalesce))
        run = Run(machine, checked.plugin, request, [], File(id=file_id, owner=owner), checked.tools, owner, self._rounds.on_block_closed)
        if self._writer.writes_while_running:
            await self._store.put_generation(generation)  # found waiting by other processes
        self._runner.live[run.id] = run
        self._claims.join_queue(file_id, run.id)
        self._tasks.spawn(self._wait_turn(run, checked), name=f"generation {run.id} (waiting)")
        logger.info("generation %s waiting for conversation %s", run.id, file_id, extra={"generation_id": run.id})
        if not subscribed:
            self._subscriptions.left(run)
        return run.snapshot()

    async def _wait_turn(self, run: Run, checked: CheckedRequest) -> None:
        file_id = run.generation.file_id
        assert file_id is not None
        turn: File | StreamingError | None = None
        try:
            async with anyio.create_task_group() as tg:
                if self._store.shared:
                    tg.start_soon(self._obey_while_waiting, run)
                turn = await self._until_turn(run, file_id)
                tg.cancel_scope.cancel()
        finally:
            self._claims.leave_queue(file_id, run.id)
        if not isinstance(turn, File):
            await self._end_waiting(run, turn)
            return
        try:
            await self._start(checked, turn, run.id, run.owner, True, waited=run)
        except BaseException as exc:
            # Nothing after its launch raises: it never ran, so it ends here.
            with anyio.CancelScope(shield=True):
                await self._claims.release(file_id, run.id)
                await self._end_waiting(run, exc if isinstance(exc, StreamingError) else StreamingError(str(exc)))
            if not isinstance(exc, Exception):
                raise

    async def _until_turn(self, run: Run, file_id: str) -> File | StreamingError | None:
        """The conversation, claimed, once ``run`` is first in line here and it is free;
        None if ``run`` was cancelled meanwhile, the error if it cannot be claimed."""
        while run.cancel_reason is None:
            if self._claims.first_in_queue(file_id, run.id):
                try:
                    return await self._claims.claim(file_id, run.id, run.owner)
                except ConflictError:
                    pass
                except StreamingError as exc:
                    return exc
            # Woken when a claim here is dropped; a claim in another process is polled.
            await self._claims.changed(0.1)
        return None

    async def _obey_while_waiting(self, run: Run) -> None:
        """Control messages for a waiting generation (cancel, someone streams it elsewhere)."""
        try:
            async with self._store.control(run.id) as messages:
                async for msg in messages:
                    kind = msg.get("type")
                    if kind == "cancel":
                        run.request_cancel(str(msg.get("reason") or "cancelled"))
                    elif kind == "subscriber":
                        run.watched(presence_window(self._store))
                        self._subscriptions.left(run)
        except StreamingError as exc:
            logger.warning("generation %s: control messages while waiting: %s", run.id, exc, extra={"generation_id": run.id})

    async def _end_waiting(self, run: Run, error: StreamingError | None) -> None:
        """End a generation that never ran: ``generation.started`` (no blocks), then
        ``generation.cancelled`` (or ``generation.failed`` with ``error``)."""
        machine = run.machine
        error = error or run.stop_error
        try:
            if run.generation.state is GenerationState.WAITING:
                machine.start([], None)
            if not machine.finished:
                if error is not None:
                    machine.fail(error.code, error.message, error.suggestion)
                else:
                    machine.cancel(run.cancel_reason or "cancelled")
            try:
                await self._store.append_events(run.id, run.log.read(0))
                await self._store.put_generation(run.snapshot())
            except StreamingError as exc:
                logger.warning("writing generation %s failed: %s", run.id, exc, extra={"generation_id": run.id})
        finally:
            outcome = run.generation.state.value
            if outcome in self._counters:
                self._counters[outcome] += 1
            run.done.set()
            self._subscriptions.ended(run)
            asyncio.get_running_loop().call_later(self._settings.live_retention_s, self._forget_waited, run)

    def _forget_waited(self, run: Run) -> None:
        if self._runner.live.get(run.id) is run:
            del self._runner.live[run.id]
