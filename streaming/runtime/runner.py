"""Runs a generation from its first round to its terminal event, and finishes it.

Each run is one plain asyncio task owned by the runtime's :class:`~.aio.TaskOwner`. The run
happens inside a cancel scope (level-triggered: a plugin that swallows a cancel once is
cancelled again) with its duration limit as one loop timer. How it ends is decided by
:func:`streaming.outcome.terminal_outcome`; whatever happens — the plugin raising, a
cancel, the task itself cancelled — the terminal event is written and the run is finished
in ``finally`` blocks: the final store write, the conversation released, the admission
slot freed, subscribers woken, retention scheduled, and only then the finish listeners
(one that raises is logged; it skips nothing).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import anyio

from streaming.errors import StreamingError
from streaming.metrics import RuntimeMetrics
from streaming.model import Block, Generation
from streaming.outcome import apply_outcome, terminal_outcome, unwrap
from streaming.runtime.admission import Admission
from streaming.runtime.control import obey_control
from streaming.runtime.run import Run
from streaming.runtime.settings import RuntimeSettings
from streaming.runtime.store_writer import StoreWriter
from streaming.runtime.subscriptions import Subscriptions
from streaming.runtime.tool_rounds import ToolRounds
from streaming.tasks import TaskOwner

__all__ = ["Runner"]

logger = logging.getLogger("streaming.runtime")

Listener = Callable[[str, Generation], None]


class Runner:
    def __init__(
        self,
        settings: RuntimeSettings,
        tasks: TaskOwner,
        rounds: ToolRounds,
        writer: StoreWriter,
        admission: Admission,
        subscriptions: Subscriptions,
        release: Callable[[Run], Awaitable[None]],
        counters: dict[str, int],
        metrics: RuntimeMetrics,
        listeners: list[Listener],
    ) -> None:
        self.settings = settings
        self.tasks = tasks
        self.rounds = rounds
        self.writer = writer
        self.admission = admission
        self.subscriptions = subscriptions
        self.release = release
        self.counters = counters
        self.metrics = metrics
        self.listeners = listeners
        self.live: dict[str, Run] = {}  # running here, or finished within live_retention_s

    def prepare(self, run: Run) -> None:
        """Give ``run`` its limits and, if the store keeps them, its sent marks (before
        its start is written: a new one's first mark is written with it)."""
        run.limits = (self.settings.max_block_bytes, self.settings.max_generation_bytes)
        if self.writer.store.keeps_sent_marks:
            run.reserve = self.writer.store.reserve_seq
            run.sent_step = self.settings.sent_mark_step

    def launch(self, run: Run, blocks: list[Block]) -> None:
        """Start ``run`` (prepared, its start written, admitted) in a task of its own."""
        self.live[run.id] = run
        # A plain asyncio task: an idle generation is mostly this task (see aio).
        self.tasks.spawn(self._execute(run, blocks), name=f"generation {run.id}")

    async def _execute(self, run: Run, blocks: list[Block]) -> None:
        scope = anyio.CancelScope()
        run.scope = scope
        if run.cancel_reason is not None:
            scope.cancel()  # cancelled before it began
        raised: BaseException | None = None
        loop = asyncio.get_running_loop()
        # The duration limit: a timer rather than a scope deadline (one object, not two).
        limit = loop.call_at(loop.time() + self.settings.max_duration_s, scope.cancel)
        try:
            try:
                with scope:
                    if self.writer.store.shared:
                        run.spawn(self.tasks, obey_control, run, self.writer.store, self.rounds, self.subscriptions)
                    if not run.has_mark:
                        await run.reserve_ahead()  # the first mark, before the plugin writes
                    await self.rounds.run(run, blocks)
            finally:
                limit.cancel()
                run.end_children()  # server tools and the control listener end with it
        except Exception as exc:  # the plugin raised: its blocks are aborted below
            raised = exc
            inner = unwrap(exc)
            if not isinstance(inner, StreamingError):
                logger.warning("generation %s: plugin raised %r", run.id, inner, extra={"generation_id": run.id})
        except BaseException:
            # The task itself was cancelled (the runtime is closing): still end it properly.
            run.request_stop(StreamingError("the runtime closed before the generation finished", code="shutdown"))
            raise
        finally:
            try:
                decided = terminal_outcome(
                    raised=raised, stop_error=run.stop_error, cancel_reason=run.cancel_reason,
                    cancelled=scope.cancel_called,
                )
                del raised  # its traceback holds the plugin's frames (and what they allocated)
                if decided.timed_out:
                    run.cancel_reason = "max duration reached"
                apply_outcome(run.machine, decided)
            except Exception:
                logger.exception("generation %s could not be ended properly", run.id, extra={"generation_id": run.id})
            finally:
                # Whatever happened above, the run ends here: its slot is freed, its
                # subscribers are woken, it is no longer counted as running.
                with anyio.CancelScope(shield=True):
                    await self._finish(run)

    async def _finish(self, run: Run) -> None:
        generation = run.generation
        outcome = generation.state.value
        logger.info(
            "generation %s %s", run.id, outcome,
            extra={"generation_id": run.id, "outcome": outcome, "events": run.log.last_seq,
                   "error_code": generation.error.code if generation.error else None},
        )
        if outcome in self.counters:
            self.counters[outcome] += 1
        metrics = self.metrics
        metrics.generations[outcome] += 1
        metrics.events += run.log.last_seq
        metrics.chunks += run.chunks
        metrics.duration.observe(time.monotonic() - run.started_at)
        try:
            if await self.writer.final_flush(run):
                await self.release(run)
            # Otherwise the conversation stays claimed until a retried write lands (the
            # next turn must not start from a conversation without this one's blocks).
        finally:
            run.done.set()
            for block in run.file.blocks:  # (block -> run -> block: a cycle only the cyclic
                if block._writer is run:  # collector would free, with the run's whole log)
                    block._writer = None
            # Kept for live_retention_s for its readers (the log, the blocks, the
            # conversation): not the copies of the conversation its plugin saw.
            run.context_blocks = run.conversation = []
            self.admission.release(run.owner)
            self.subscriptions.ended(run)
            asyncio.get_running_loop().call_later(self.settings.live_retention_s, self._forget, run)
            for listener in list(self.listeners):
                try:
                    listener("finished", generation)
                except Exception:
                    logger.exception("a finish listener of generation %s raised", run.id, extra={"generation_id": run.id})

    def _forget(self, run: Run) -> None:
        if self.live.get(run.id) is run:
            del self.live[run.id]

    def running(self) -> list[Run]:
        return [run for run in self.live.values() if not run.done.is_set()]
