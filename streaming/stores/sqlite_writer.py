"""The write-behind queue of :class:`~streaming.stores.sqlite.SqliteStore` and the task that
commits it: everything queued, from every generation, in one transaction on the worker
thread, at most once every ``interval`` (at once when a reader waits, or a batch is full).

The interval grows with load: ``batch_s`` for a commit that carried up to ``logs_per_batch``
logs, longer in proportion to the logs the last commit carried, up to ``batch_max_s``. A
commit costs about a row per log it carries (pages written to the WAL), whatever the row
holds, so commits of many logs spaced further apart cost the same CPU a second while each
row holds more events: with 500 streams at 20 chunks/s, 5 events a row cost ~1.3 us of
commit CPU each, 20 events ~0.9 us. What a ``kill -9`` may lose grows with it (the events
of the last interval, which recovery declares lost: ``events_lost``), up to ``batch_max_s``
under that load, ``batch_s`` under a light one.

A generation that starts waits for its first sent mark to be committed (no seq a client
sees is reused after a crash). A commit of everything queued writes a page of each table
it touches (a dozen of 16 KiB for one start: ~140 us of the thread's CPU, the most of a
short generation's cost and of a lone client's wait for its first delta), so a few starts
alone commit only their rows, as one row each of the ``starts`` journal (one page: ~20
us); the next commit of everything writes them where they belong and empties the journal,
and opening the file after a crash puts back what only the journal holds
(:func:`~streaming.stores.sqlite_file.replay_starts_sync`). Many starts at once (a burst
of clients) share a commit of everything, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.to_thread

from streaming.errors import StoreUnavailableError
from streaming.events import Event
from streaming.model import Block
from streaming.stores.sqlite_file import (
    INSERT_SEGMENT,
    PUT_BLOCK,
    PUT_FILE,
    PUT_GENERATION,
    PUT_MARK,
    SqliteFile,
    decode_ids,
    rollback,
    segments_of,
)

__all__ = ["SqliteWriter"]

logger = logging.getLogger("streaming.stores.sqlite")


class SqliteWriter:
    """Rows queued in memory (coalesced by id; events in order) and their commits.

    Callers put rows in ``gens``, ``blocks``, ``files``, ``claims`` and ``marks`` after
    :meth:`queue`, and events with :meth:`add_events`; :meth:`sync` waits until what was
    queued before it is committed. A log's events queued for one commit are one segment
    (one row), however many appends brought them.
    """

    #: logs a commit may carry before the next one comes later than ``batch_s``
    logs_per_batch = 100
    #: starts waiting at once past which they share a commit of everything queued rather
    #: than a commit of their journal rows
    journal_max = 8

    def __init__(
        self, file: SqliteFile, *, batch_s: float, retry_s: float, batch_max_s: float | None = None
    ) -> None:
        self.file = file
        self.batch_s = batch_s
        self.batch_max_s = batch_s if batch_max_s is None else max(batch_s, batch_max_s)
        #: seconds from one commit to the next (``batch_s``, grown with the load)
        self.interval = batch_s
        self.retry_s = retry_s
        self.gens: dict[str, tuple[str, float | None, str]] = {}
        self.blocks: dict[str, str] = {}
        self.files: dict[str, tuple[str, str]] = {}
        #: generation id -> its queued segments: [first seq, last seq, SSE frames]
        self.logs: dict[str, list[list[Any]]] = {}
        self.queued_events = 0  # in ``logs``
        self.ended: set[str] = set()  # logs whose terminal event is queued
        #: the logs of the batch being committed (a read of one waits for the commit)
        self.committing: dict[str, list[list[Any]]] = {}
        self.claims: list[tuple[str, str]] = []
        self.marks: dict[str, int] = {}
        self._queued = 0  # writes queued so far
        self._committed = 0  # of which committed
        #: starts waiting for their rows to be committed: (their number, generation id,
        #: conversation id); numbered from 1, ``_started`` of them so far
        self.starting: list[tuple[int, str, str]] = []
        self._started = 0
        self._starts_durable = 0  # every start up to this number is committed
        self._journal_rows = 0  # rows of the journal committed since it was last emptied
        self._wake = asyncio.Event()
        self._kick = asyncio.Event()  # a start waits, or a commit is asked for
        self.commit_now = asyncio.Event()  # someone waits for a commit: no batching
        self._done = anyio.Event()
        self.failure: BaseException | None = None

    def _unavailable(self) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"sqlite store {self.file.path} cannot write: {self.failure}",
            suggestion="check the disk (space, permissions); the pending writes are retried",
        )

    def queue(self) -> None:
        """Count one more write (raises while commits have been failing for ``retry_s``)."""
        if self.failure is not None:
            raise self._unavailable() from self.failure
        self._queued += 1
        self._wake.set()

    def add_blocks(self, blocks: Sequence[Block]) -> None:
        """Queue ``blocks`` (after :meth:`queue`; a block queued again replaces its JSON)."""
        for block in blocks:
            self.blocks[block.id] = block.model_dump_json()

    def add_events(self, generation_id: str, events: Sequence[Event]) -> None:
        """Queue ``events`` (in order, right after what was queued of that log before)."""
        self.queue()
        runs = segments_of(events)
        queued = self.logs.get(generation_id)
        if queued is None:
            self.logs[generation_id] = [list(run) for run in runs]
        else:
            for first, last, frames in runs:
                tail = queued[-1]
                if tail[1] + 1 == first:
                    tail[1] = last
                    tail[2] += frames
                else:
                    queued.append([first, last, frames])
        self.queued_events += len(events)
        if events[-1].terminal:
            self.ended.add(generation_id)

    def commit_soon(self) -> None:
        """Commit everything queued now, not at the end of the interval."""
        self.commit_now.set()
        self._kick.set()

    async def sync_start(self, generation_id: str, file_id: str, mark: int) -> None:
        """Queue the first sent ``mark`` of a generation that starts, and wait until the
        rows queued for it (its record, its conversation and their blocks, the mark) are
        committed: as journal rows if only a few starts wait, else with everything queued.

        Raises:
            StoreUnavailableError: commits have been failing for ``retry_s``.
        """
        self.queue()
        self.marks[generation_id] = max(mark, self.marks.get(generation_id, 0))
        self._started += 1
        number = self._started
        self.starting.append((number, generation_id, file_id))
        self._kick.set()
        while self._starts_durable < number:
            if self.failure is not None:
                raise self._unavailable() from self.failure
            await self._done.wait()

    def _journal_due(self) -> bool:
        """Whether the starts waiting commit their journal rows alone (a few, and nobody
        asks for everything now)."""
        return 0 < len(self.starting) <= self.journal_max and not self.commit_now.is_set()

    def _journal(self) -> tuple[int, list[tuple[str, str]]]:
        """The journal rows of the starts waiting (what is queued of each, as JSON), and
        the number of the last of them; they leave ``starting``."""
        rows = []
        for _, gid, fid in self.starting:
            file = self.files.get(fid)
            held = decode_ids(file[1]) if file is not None else []
            blocks = [[bid, self.blocks[bid]] for bid in held if bid in self.blocks]
            gen = self.gens.get(gid)
            rows.append((gid, json.dumps([gid, gen, [fid, *file] if file else None, blocks, self.marks.get(gid, 0)])))
        last = self.starting[-1][0]
        self.starting = []
        return last, rows

    async def _commit_starts(self) -> bool:
        """Commit the journal rows of the starts waiting; False if that failed (they then
        go with the next commit of everything, which retries)."""
        starting = self.starting
        last, rows = self._journal()
        try:
            await anyio.to_thread.run_sync(self.file.journal_sync, rows, limiter=self.file.limiter)
        except Exception as exc:
            logger.warning("sqlite store %s: commit of starts failed (%s); committing everything", self.file.path, exc)
            self.starting = starting + self.starting
            return False
        self._journal_rows += len(rows)
        self._starts_durable = max(self._starts_durable, last)
        self._signal()
        return True

    def grown(self, logs: int) -> float:
        """The interval after a commit that carried the events of ``logs`` logs."""
        return min(self.batch_max_s, max(self.batch_s, self.batch_s * logs / self.logs_per_batch))

    def holds(self, generation_id: str) -> bool:
        """Whether events of ``generation_id`` are queued or being committed."""
        return generation_id in self.logs or generation_id in self.committing

    def _signal(self) -> None:
        done, self._done = self._done, anyio.Event()
        done.set()

    async def run(self, max_delay_s: float = 2.0) -> None:
        """The writer task: commit what is queued, batch after batch, forever."""
        clock = asyncio.get_running_loop().time
        last_commit = -self.batch_s
        while True:
            await self._wake.wait()
            if self._journal_due() and await self._commit_starts():
                # A start after a quiet spell: the rest gathers for ``batch_s`` from now.
                last_commit = max(last_commit, clock() - self.interval + self.batch_s)
            due = last_commit + self.interval
            while not self.commit_now.is_set() and clock() < due:
                # Gather what comes until then into this commit, unless a reader (or a
                # full batch) asks for it now; a few starts meanwhile commit their rows alone.
                if self.starting:
                    if not self._journal_due() or not await self._commit_starts():
                        break
                    continue
                self._kick.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(due):
                        await self._kick.wait()
            last_commit = clock()
            self.commit_now.clear()
            self._wake.clear()
            target, started = self._queued, self._started
            # (the starts waiting have their rows in this batch; the journal's rows, of
            # starts whose rows are in this batch or an earlier one, go)
            self.starting = []
            batch = (self.gens, self.blocks, self.files, self.logs, self.claims, self.marks, self.ended, self._journal_rows)
            self.committing = self.logs
            self.gens, self.blocks, self.files, self.logs, self.claims = {}, {}, {}, {}, []
            self.marks, self.ended, self.queued_events, self._journal_rows = {}, set(), 0, 0
            failing_since: float | None = None
            delay = 0.05
            while True:  # the same batch again, so the order of writes holds
                try:
                    await anyio.to_thread.run_sync(self.commit_sync, *batch, limiter=self.file.limiter)
                    break
                except Exception as exc:  # the disk is full, the file went away...
                    now = anyio.current_time()
                    failing_since = now if failing_since is None else failing_since
                    logger.warning("sqlite store %s: commit failed (%s); retrying", self.file.path, exc)
                    if now - failing_since >= self.retry_s and self.failure is None:
                        self.failure = exc  # callers are told now; writing goes on trying
                        self._signal()
                    await anyio.sleep(delay)
                    delay = min(delay * 2, max_delay_s)
            self.failure = None
            self.committing = {}
            self._committed = target
            self._starts_durable = max(self._starts_durable, started)
            self.interval = self.grown(len(batch[3]))
            self._signal()

    def commit_sync(
        self,
        gens: dict[str, tuple[str, float | None, str]],
        blocks: dict[str, str],
        files: dict[str, tuple[str, str]],
        logs: dict[str, list[list[Any]]],
        claims: list[tuple[str, str]],
        marks: dict[str, int],
        ended: set[str] | frozenset[str] = frozenset(),
        journaled: int = 0,
    ) -> None:
        """One transaction with every row of a batch (a segment per log and run), which
        empties the journal of starts if it has rows (``journaled``)."""
        conn = self.file.require()
        known = self.file.log_nos
        made: dict[str, int] = {}
        conn.execute("BEGIN IMMEDIATE")
        try:
            if blocks:
                conn.executemany(PUT_BLOCK, blocks.items())
            if files:
                conn.executemany(PUT_FILE, [(k, d, ids) for k, (d, ids) in files.items()])
            if logs:
                rows = []
                for gid, segments in logs.items():
                    no = known.get(gid)
                    if no is None:
                        no = made[gid] = self.file.log_no_sync(conn, gid)
                    rows += [(no, last, first, b"".join(frames)) for first, last, frames in segments]
                conn.executemany(INSERT_SEGMENT, rows)
            if gens:
                conn.executemany(PUT_GENERATION, [(k, s, f, d) for k, (s, f, d) in gens.items()])
            if claims:
                conn.executemany("INSERT OR IGNORE INTO tool_claims (generation_id, call_id) VALUES (?, ?)", claims)
            if marks:
                conn.executemany(PUT_MARK, marks.items())
            if journaled:
                conn.execute("DELETE FROM starts")
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise
        # Numbers of logs still being written, as committed (a rolled-back one may differ).
        known.update(made)
        for gid in ended:
            known.pop(gid, None)
        if len(known) > 100_000:  # logs that never ended here (stopped by another failure)
            known.clear()

    async def sync(self) -> None:
        """Wait until every write queued before this call is committed.

        Raises:
            StoreUnavailableError: commits have been failing for ``retry_s``.
        """
        target = self._queued
        while self._committed < target:
            self.commit_soon()
            if self.failure is not None:
                raise self._unavailable() from self.failure
            await self._done.wait()
