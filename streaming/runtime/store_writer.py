"""The store writer: what runs here reaches the store in batches, once more when a run
ends, and again until it lands.

Only a store that outlives the process or is shared with others needs a running
generation's events before it ends (``durable`` or ``shared``); the memory store gets
each generation whole when it ends. A run with new events is *dirty*; every
``persist_interval_s`` one flusher writes the new events of every dirty run at once
(``Store.append_many``: one round trip on Redis; on a shared store, a run nobody follows
from another process only every ``persist_unwatched_s``, longer under load), and the
blocks and record of a run whose events changed more than text (a reader elsewhere folds
the text of the log onto the stored blocks). The final write adds the conversation, before
the record that says the run has finished, so whoever sees it finished finds its blocks. A write that fails is counted
(``store_errors``), retried, and, if the store stays unavailable, ends the run with
``generation.failed`` for its subscribers here; a final write is retried in the background
until it lands, and only then is the conversation released.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable

import anyio

from streaming.errors import StoreError, StoreUnavailableError
from streaming.events import Event, EventType
from streaming.metrics import RuntimeMetrics
from streaming.model import Block, File
from streaming.runtime.run import Run
from streaming.runtime.settings import RuntimeSettings
from streaming.stores.base import Store
from streaming.tasks import TaskOwner

__all__ = ["StoreWriter"]

logger = logging.getLogger("streaming.runtime")

_DELTA = EventType.BLOCK_DELTA.value
_STARTED = EventType.GENERATION_STARTED.value

#: a shared store gets a running generation's blocks and record rewritten at least once
#: every this many events, even if only text happened (see ``_records_changed``)
REFRESH_EVERY = 1024

#: generations streaming here per ``persist_unwatched_s`` of the interval at which those
#: nobody follows elsewhere are written to a shared store (see ``StoreWriter._unwatched``)
UNWATCHED_RUNS = 100

# A flush lock that, free, is taken without a trip through the loop (anyio >= 4.5).
_new_lock: Callable[[], anyio.Lock] = (
    functools.partial(anyio.Lock, fast_acquire=True)
    if "fast_acquire" in inspect.signature(anyio.Lock).parameters
    else anyio.Lock
)


def _not_in(blocks: list[Block], file: File) -> list[Block]:
    """Those of ``blocks`` that ``file`` does not hold: a store writes a file's blocks with
    it, so a list beside it would have them copied and encoded twice."""
    if not blocks:
        return blocks
    held = {b.id for b in file.blocks}
    return [b for b in blocks if b.id not in held]


class StoreWriter:
    def __init__(
        self,
        store: Store,
        settings: RuntimeSettings,
        metrics: RuntimeMetrics,
        tasks: TaskOwner,
        release: Callable[[Run], Awaitable[None]],
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.tasks = tasks
        self.release = release  # drop a run's conversation claim once it is written
        #: runs that were streaming at the last tick: the flusher looks at each every tick
        #: (a run with nothing new goes back to waiting on its log: ``_settle``)
        self._active: set[Run] = set()
        self._wanted = anyio.Event()
        #: runs whose events the current batch write carries, and its end
        self._in_flight: set[Run] = set()
        self._batch_done = anyio.Event()
        self._final_retries: set[str] = set()
        #: (monotonic) until when some run is watched (its flushes are due every tick)
        self._watched_until = 0.0
        #: set to end a long tick early (a run got watched)
        self._hurry: anyio.Event | None = None

    @property
    def writes_while_running(self) -> bool:
        return self.store.durable or self.store.shared

    def start(self) -> None:
        self.tasks.spawn(self._flusher(), name="store writer")

    async def write_started(self, run: Run, inputs: list[Block], *, new: bool = False, claim: bool = False) -> None:
        """Write a run that has just started (its inputs, conversation and record).

        ``new``: its id was minted here (``Store.put_started``: with its first sent mark,
        and with its conversation's claim if ``claim``; one round trip on Redis)."""
        if not self.writes_while_running:
            return
        file = run.file_for_store()
        inputs = _not_in(inputs, file)
        if not new:
            await self.store.put_all(run.generation, blocks=inputs, file=file, handed_over=True)
            return
        mark = run.log.last_seq + run.sent_step if run.reserve is not None else 0
        await self.store.put_started(
            run.generation, blocks=inputs, file=file, claim=claim and self.store.shared, reserve=mark, handed_over=True
        )
        if mark:
            run.reserved(mark)

    def mark_dirty(self, run: Run) -> None:
        if not self.writes_while_running:
            return
        self._active.add(run)
        if run.on_watched is None:
            run.on_watched = self._watched
            if run.watched_until > self._watched_until:
                self._watched(run.watched_until)
        if not self._wanted.is_set():
            self._wanted.set()

    def _watched(self, until: float) -> None:
        """A run is watched until ``until``: ticks are short again, from now on."""
        if until > self._watched_until:
            self._watched_until = until
        if self._hurry is not None:
            self._hurry.set()

    def _tick(self) -> float:
        """The time to the next flush. A store that batches its own commits (sqlite) gets
        each run's events at the pace it commits now: a flush costs a run the same whether
        it carries one chunk or 20. On a shared store, while no run is watched, every run
        is due only each ``persist_unwatched_s``: so is the flusher."""
        tick = max(self.settings.persist_interval_s, getattr(self.store, "commit_interval_s", 0.0))
        if self.store.shared and time.monotonic() >= self._watched_until:
            tick = max(tick, self._unwatched())
        return tick

    def _unwatched(self) -> float:
        """How often a run nobody follows elsewhere is written to a shared store (0: every
        tick, on a store no other process reads). ``persist_unwatched_s``, longer in
        proportion to the runs streaming here past ``UNWATCHED_RUNS``, up to
        ``persist_unwatched_max_s``: with hundreds of streams, each write of a run cost
        this process about as much as the chunks it carried (its record in the batch, a
        check of its log's end in Redis), so the writes per second stay about the same
        while each carries more chunks."""
        if not self.store.shared:
            return 0.0
        base = self.settings.persist_unwatched_s
        grown = base * len(self._active) / UNWATCHED_RUNS
        return min(max(base, self.settings.persist_unwatched_max_s), max(base, grown))

    async def _flusher(self) -> None:
        while True:
            if not self._active:
                await self._wanted.wait()
            self._wanted = anyio.Event()
            tick = self._tick()
            if tick > self.settings.persist_interval_s:
                # A long tick: a run that gets watched meanwhile cuts it short.
                self._hurry = hurry = anyio.Event()
                with anyio.move_on_after(tick):
                    await hurry.wait()
                self._hurry = None
            else:
                await anyio.sleep(tick)
            await self._flush_active()

    async def _flush_active(self) -> None:
        """The new events of every active run in one write (``Store.append_many``: one
        round trip on Redis however many runs stream), then the blocks and record of those
        whose events changed more than text. A failure is the failing run's alone.

        A streaming run has a chunk or more between two ticks: checking it each tick costs
        less than a waiter on its log per tick. One with nothing new goes back to waiting."""
        batch: list[tuple[Run, list[Event]]] = []
        busy: list[Run] = []
        now = time.monotonic()
        # A shared store serves a running generation to other processes: one that someone
        # there follows (their presence, ``Run.watched``; a worker's runs from their start)
        # gets its events every tick; the others every persist_unwatched_s (grown with the
        # load: ``_unwatched``), which is what a crash of this process may lose of them.
        unwatched = self._unwatched()
        for run in list(self._active):
            log = run.log
            if log.closed:
                self._active.discard(run)  # its final write (retried until it lands) has the rest
            elif unwatched and now - run.flushed_at < unwatched and now >= run.watched_until:
                continue  # not due yet: it stays active
            elif len(log.events) <= run.persisted_seq:
                self._settle(run)
            elif run.flush_lock is not None and run.flush_lock.locked():
                busy.append(run)  # its final write is under way: wait for it below
            else:
                run.flushed_at = now
                batch.append((run, log.read(run.persisted_seq)))
        if batch:
            # (a final write of one of these waits for this batch: ``_flush``)
            self._in_flight.update(run for run, _ in batch)
            try:
                await self._write_batch(batch)
            finally:
                self._in_flight.clear()
                self._batch_done.set()
                self._batch_done = anyio.Event()
        for run in busy:
            try:
                await self._flush(run)
            except Exception as exc:
                self._active.discard(run)
                self._failed(run, exc)

    async def _write_batch(self, batch: list[tuple[Run, list[Event]]]) -> None:
        try:
            refused = await self.store.append_many([(run.log.generation_id, events) for run, events in batch])
        except Exception as exc:  # the write as a whole: every run in it failed
            refused = [exc] * len(batch)
        for i, ((run, events), error) in enumerate(zip(batch, refused, strict=True), 1):
            try:
                if error is not None:
                    raise error
                run.persisted_seq = events[-1].seq
                if self._records_changed(events):
                    await self._put_records(run, [])
            except Exception as exc:  # a store hiccup must not kill the flusher
                self._active.discard(run)  # (back if it is to be retried)
                self._failed(run, exc)
            if i % 64 == 0:
                await asyncio.sleep(0)  # hundreds of runs: let the streams move meanwhile

    def _settle(self, run: Run) -> None:
        """``run`` had nothing new this tick: wait on its log until it has."""
        self._active.discard(run)
        run.log.wait(functools.partial(self.mark_dirty, run))

    async def final_flush(self, run: Run) -> bool:
        """Write what is left of ``run``; False if that failed (it is retried)."""
        try:
            await self._flush(run, final=True)
        except Exception as exc:  # retried in the background; the run has ended here
            self._failed(run, exc)
            return False
        return True

    def _failed(self, run: Run, exc: Exception) -> None:
        """A write of ``run`` failed: count it, retry it, and end the run if it cannot be."""
        self.metrics.store_errors += 1
        logger.warning("writing generation %s to the store failed: %s", run.id, exc, extra={"generation_id": run.id})
        if isinstance(exc, StoreError) and exc.code == "log_closed":
            # Another process found our lease lapsed and failed it: nothing more can be written.
            run.request_stop(StoreError(exc.message, code="interrupted", suggestion=exc.suggestion))
            return
        stored = exc.details.get("stored_seq") if isinstance(exc, StoreError) and exc.code == "log_gap" else None
        if isinstance(stored, int) and 0 <= stored <= run.log.last_seq:
            # The store has less (it restarted empty) or more (a retried write landed twice)
            # of the log than we thought: carry on from what it has.
            run.persisted_seq = stored
        elif isinstance(exc, StoreUnavailableError):
            run.request_stop(exc)  # retried with backoff already: fail it, clearly
        if not run.log.closed:
            self.mark_dirty(run)
        elif run.id not in self._final_retries:
            self._final_retries.add(run.id)
            self.tasks.spawn(self._retry_final_flush(run), name=f"generation {run.id}: final write")

    async def _retry_final_flush(self, run: Run, max_delay_s: float = 5.0) -> None:
        delay = self.settings.persist_interval_s
        try:
            while True:
                await anyio.sleep(delay)
                try:
                    await self._flush(run, final=True)
                    await self.release(run)
                    return
                except StoreError as exc:
                    if exc.code == "log_closed":
                        await self.release(run)
                        return
                    self.metrics.store_errors += 1
                    logger.warning("writing generation %s to the store failed again: %s", run.id, exc, extra={"generation_id": run.id})
                except Exception as exc:
                    self.metrics.store_errors += 1
                    logger.warning("writing generation %s to the store failed again: %s", run.id, exc, extra={"generation_id": run.id})
                delay = min(delay * 2, max_delay_s)
        finally:
            self._final_retries.discard(run.id)

    async def _flush(self, run: Run, *, final: bool = False) -> None:
        while run in self._in_flight:
            await self._batch_done.wait()
        if run.flush_lock is None:
            run.flush_lock = _new_lock()
        async with run.flush_lock:
            events = run.log.read(run.persisted_seq)
            if final or (events and self._records_changed(events)):
                await self._put_records(run, events, final=final)
            elif events:
                await self.store.append_events(run.id, events)
            if events:
                run.persisted_seq = events[-1].seq

    async def _put_records(self, run: Run, events: list[Event], *, final: bool = False) -> None:
        """The run's new ``events``, its blocks, (final) its conversation, and its record,
        in that order (``Store.put_all``: one round trip on Redis). The conversation comes
        before the record that says finished: whoever sees the generation finished
        (another process claiming the conversation) finds its blocks in the file. The
        record names the seq the blocks were read at (``last_seq``): a reader elsewhere
        folds the log's text after it onto them (:func:`~streaming.stores.recovery.fold_tail`)."""
        machine = run.machine
        gen = machine.generation.snapshot()
        gen.last_seq = events[-1].seq if events else run.persisted_seq
        if final:
            file = run.file_for_store()
            held = {b.id for b in file.blocks}
            blocks = [machine.block_snapshot(b) for b in machine.order if b not in held]
            await self.store.put_all(gen, events=events, blocks=blocks, file=file, handed_over=True)
            return
        blocks = [machine.block_snapshot(b) for b in machine.order]
        await self.store.put_all(gen, events=events, blocks=blocks)

    def _records_changed(self, events: list[Event]) -> bool:
        """Whether a flush of ``events`` also rewrites the run's blocks and record.

        Never on a store only this process reads (sqlite): while a run is live here its
        readers get it from memory, and a restart rebuilds its blocks (those made
        mid-stream from their ``block.created``) and their text from the log
        (:mod:`streaming.stores.recovery`); its first and last writes carry them.

        On a shared store, only when something other than text happened (a block created
        or ended, a tool call; ``generation.started`` is written with them by
        :meth:`write_started`): a reader in another process folds the log's text onto
        the stored blocks (:func:`streaming.stores.recovery.fold_tail`). Rewriting them
        for every few chunks of text cost each chunk two model copies, two JSON dumps
        and, on Redis, two round trips. A shared store whose reads fold (its
        ``folds_text``, Redis) gets them again every ``REFRESH_EVERY`` events, so the text
        such a reader folds stays short; any other shared store gets them with every flush.
        """
        if not self.store.shared:
            return False
        for ev in events:
            kind = ev.type
            if kind != _DELTA and kind != _STARTED:
                return True
        if not getattr(self.store, "folds_text", False):
            return True  # its readers take the stored blocks as they are
        return (events[0].seq - 1) // REFRESH_EVERY != events[-1].seq // REFRESH_EVERY
