"""``sqlite:///path``: the embedded, durable store (the default of ``streaming serve``).

One file, one server process (a lock file refuses a second one: use ``redis://`` to share
generations between processes). Writes are *write-behind*: ``append_events``, ``put_*``
queue their rows in memory and return; a writer task commits everything queued, from every
generation, in one transaction on a worker thread, so a busy server pays one commit per
batch and never one disk sync per delta. Reads first wait for what was queued before them,
so a caller always reads its own writes. The database runs in WAL mode with
``synchronous=NORMAL``: a process crash loses nothing committed; a power cut may lose the
last moments. Commits are batched by time and size: at most one commit every ``batch``
seconds (a read, or a full batch, commits at once), so under load one commit carries
several chunks of every running generation, and a lone write still commits at once (a
start: only its own rows, as a row of a journal); a commit that carried many logs makes
the next one wait longer, up to ``batch_max`` seconds (see
:mod:`streaming.stores.sqlite_writer`). Each
commit rewrites the pages it touches to the WAL, so a log's events that one commit carries
are one row (a *segment*, see :mod:`streaming.stores.sqlite_file`), appended at the end of
the file: with five events of each of 500 generations a commit, an event costs ~1.3 us of
commit CPU (as a row of its own keyed by generation and seq, as the first schema had it:
~7-10 us).

After a crash, :meth:`SqliteStore.recover_interrupted` (the runtime calls it on start)
fails every generation left ``running`` with code ``interrupted``, aborts its open blocks
and closes its log with a terminal event (see :mod:`streaming.stores.recovery`).

Collaborators: :mod:`streaming.stores.sqlite_file` (schema, lock, retention, recovery) and
:mod:`streaming.stores.sqlite_writer` (the write-behind queue and its commits).

URL: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (SQLAlchemy's
convention), with optional query parameters ``poll`` (seconds between checks of a followed
log, default 0.05) and ``ttl`` (seconds a finished generation's log is kept; default or 0:
forever; older ones are dropped when the store opens), ``retry`` (seconds failing
commits are retried before writers are told ``store_unavailable``, default 10) and ``batch``
(the writer commits at most once in this many seconds, default 0.25; a read, or 10,000
queued events, commits at once) and ``batch_max`` (how far that interval grows when each
commit carries many generations' logs, default 1; what a ``kill -9`` may lose grows with
it: recovery declares those events lost). Any other parameter, or a value that is not a
number of seconds from 0, is refused (:class:`~streaming.errors.InvalidRequestError`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, aclosing
from functools import partialmethod
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.to_thread

from streaming.errors import InvalidRequestError, StoreError
from streaming.events import Event
from streaming.model import Block, File, Generation
from streaming.stores.base import Store, refuse_unknown_parameters
from streaming.stores.file_cache import FileCache
from streaming.stores.follow import follow_log
from streaming.stores.memory import MemoryStore
from streaming.stores.sqlite_file import FINISHED, SqliteFile, decode_ids, encode_ids
from streaming.stores.sqlite_writer import SqliteWriter
from streaming.tasks import TaskOwner

__all__ = ["SqliteStore", "decode_ids", "encode_ids", "parse_sqlite_url"]

logger = logging.getLogger("streaming.stores.sqlite")

T = TypeVar("T")

#: the query parameters of a ``sqlite:`` URL (any other is refused)
URL_PARAMETERS = ("poll", "ttl", "retry", "batch", "batch_max")


def parse_sqlite_url(url: str) -> tuple[str, dict[str, str]]:
    """The database path and query parameters of a ``sqlite:`` URL.

    Raises:
        InvalidRequestError: not a sqlite URL, or no path.
    """
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise InvalidRequestError(f"not a sqlite URL: {url!r}")
    path = parts.path
    if parts.netloc:  # sqlite://relative/x.db is a common slip: keep the host as a folder
        path = parts.netloc + path
    elif path.startswith("//"):
        path = path[1:]  # sqlite:////abs/x.db -> /abs/x.db
    else:
        path = path[1:]  # sqlite:///rel/x.db -> rel/x.db
    if not path:
        raise InvalidRequestError(
            f"the sqlite URL {url!r} names no file",
            suggestion="use sqlite:///data/streaming.db or sqlite:////abs/path.db",
        )
    params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return path, params


def _seconds(url: str, params: dict[str, str]) -> dict[str, float]:
    """The parameters of a ``sqlite:`` URL, each a number of seconds.

    Raises:
        InvalidRequestError: an unknown parameter (a misspelt ``ttl`` would otherwise keep
            every log for good, silently), or a value that is not a number from 0.
    """
    refuse_unknown_parameters(
        "sqlite", url, params, URL_PARAMETERS, f"the parameters are {', '.join(URL_PARAMETERS)} (numbers of seconds)"
    )
    try:
        seconds = {name: float(value) for name, value in params.items()}
    except ValueError as exc:
        raise InvalidRequestError(f"bad sqlite URL parameter in {url!r}: {exc}") from exc
    for name, value in seconds.items():
        if not 0 <= value < math.inf:  # (NaN is not >= 0)
            raise InvalidRequestError(
                f"sqlite store URL {url!r}: {name} must be a number of seconds, at least 0",
                suggestion=f"send {name}=SECONDS",
            )
    return seconds


class SqliteStore(Store):
    """Generations, blocks, files and event logs in one SQLite file.

    Args:
        url: ``sqlite:///path`` (see the module docstring), or a plain file path.
        poll_interval_s: how often a followed log is re-read when no local write woke it.
        ttl_s: seconds a finished generation's log and record are kept (None or 0: forever);
            its blocks stay with their conversation.
        retry_s: how long failing commits are retried before callers get
            :class:`~streaming.errors.StoreUnavailableError` (they are retried on after that).
        batch_s: the writer commits at most once in this many seconds, gathering what is
            queued meanwhile (0: whenever something is queued).
        batch_max_s: the most that interval grows to when commits carry many logs.
    """

    shared = False
    #: queued events that commit at once, whatever ``batch_s`` says
    batch_rows = 10_000
    keeps_sent_marks = True

    def __init__(
        self,
        url: str,
        *,
        poll_interval_s: float | None = None,
        ttl_s: float | None = None,
        retry_s: float | None = None,
        batch_s: float | None = None,
        batch_max_s: float | None = None,
    ) -> None:
        if url.startswith("sqlite:"):
            path, params = parse_sqlite_url(url)
        else:
            path, params = url, {}
            url = f"sqlite:///{path}"
        seconds = _seconds(url, params)
        poll = seconds.get("poll", 0.05)
        ttl = seconds.get("ttl")
        retry = seconds.get("retry", 10.0)
        batch = seconds.get("batch", 0.25)
        batch_max = seconds.get("batch_max", 1.0)
        self.url = url
        self.path = path
        self.poll_interval_s = poll if poll_interval_s is None else poll_interval_s
        self.ttl_s = ttl if ttl_s is None else ttl_s
        self.retry_s = retry if retry_s is None else retry_s
        self.batch_s = batch if batch_s is None else batch_s
        self._file = SqliteFile(path)
        self.batch_max_s = batch_max if batch_max_s is None else batch_max_s
        self._writer = SqliteWriter(
            self._file, batch_s=self.batch_s, retry_s=self.retry_s, batch_max_s=self.batch_max_s
        )
        self._tasks = TaskOwner("sqlite store", logger)  # the writer
        self._last_seq: dict[str, int] = {}  # of logs still open
        self._claimed: set[tuple[str, str]] = set()
        self._log_changed: dict[str, anyio.Event] = {}
        self._files = FileCache()  # (this process writes every conversation of the file)
        # Control signals only ever reach this process (one process per file).
        self._local = MemoryStore()

    # -- lifecycle --

    @property
    def commit_interval_s(self) -> float:
        """How long the writer waits between two commits now (it grows with the load, up to
        ``batch_max_s``): the runtime hands each running generation's events over at this
        pace (a hand-over costs a generation the same whether it carries one chunk or 20)."""
        return self._writer.interval

    async def open(self) -> None:
        """Create the file and tables; take the one-process lock.

        Raises:
            StoreError: the file cannot be opened, or another process has it open.
        """
        if self._file.conn is not None:
            return
        await anyio.to_thread.run_sync(self._file.open_sync, self.ttl_s, limiter=self._file.limiter)
        self._tasks.spawn(self._writer.run(), name="writer")

    async def close(self) -> None:
        """Commit what is queued, then close the file and drop the lock."""
        if self._file.conn is None:
            return
        try:
            await self._writer.sync()
        except StoreError:
            logger.exception("sqlite store %s: last writes lost on close", self.path)
        await self._tasks.aclose()
        await self._file.close()

    async def _query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of ``sql``, after every write queued before this call is committed."""
        await self._writer.sync()
        return await self._file.query(sql, *params)

    # -- records --

    async def put_generation(self, generation: Generation) -> None:
        queued = self._writer.gens.get(generation.id)
        if queued is not None and queued[0] in FINISHED:
            return  # final (the SQL guards what is already committed)
        self._writer.queue()
        self._writer.gens[generation.id] = (generation.state.value, generation.finished_at, generation.model_dump_json())

    async def put_started(self, generation: Generation, *, reserve: int = 0, **changes: Any) -> None:
        """As the default, its log known empty (its first append reads nothing first); its
        first sent mark waits for a commit of its own rows when few start at once (``sync_start``)."""
        self._last_seq.setdefault(generation.id, 0)
        await super().put_started(generation, **changes)
        if reserve:
            await self._writer.sync_start(generation.id, changes["file"].id, reserve)

    async def get_generation(self, generation_id: str) -> Generation | None:
        rows = await self._query("SELECT data FROM generations WHERE id = ?", generation_id)
        return Generation.model_validate_json(rows[0][0]) if rows else None

    async def put_blocks(self, blocks: Sequence[Block]) -> None:
        if not blocks:
            return
        self._writer.queue()
        self._files.blocks_written(blocks)
        self._writer.add_blocks(blocks)

    async def get_block(self, block_id: str) -> Block | None:
        rows = await self._query("SELECT data FROM blocks WHERE id = ?", block_id)
        return Block.model_validate_json(rows[0][0]) if rows else None

    async def put_file(self, file: File, *, handed_over: bool = False) -> None:
        self._writer.queue()  # (raises while commits fail: then nothing is kept either)
        self._writer.add_blocks(self._files.put(file, handed_over=handed_over))  # (the blocks it changed)
        self._writer.files[file.id] = (file.meta_json(), encode_ids([b.id for b in file.blocks]))

    put_handed_over_file = partialmethod(put_file, handed_over=True)  # (kept as it is: not copied)

    async def get_file(self, file_id: str) -> File | None:
        if (cached := self._files.get(file_id)) is not None:
            return cached
        version = self._files.version
        rows = await self._query("SELECT data, block_ids FROM files WHERE id = ?", file_id)
        if not rows:
            return None
        meta = File.model_validate_json(rows[0][0])
        ids = decode_ids(rows[0][1])
        if ids:
            marks = ",".join("?" * len(ids))
            found = {
                bid: Block.model_validate_json(data)
                for bid, data in await self._query(f"SELECT id, data FROM blocks WHERE id IN ({marks})", *ids)
            }
            meta.blocks = [found[i] for i in ids if i in found]
        self._files.read(meta, version)
        return meta

    # -- event logs --

    async def reserve_seq(self, generation_id: str, seq: int) -> None:
        """Queued with the other writes; returns once committed (a mark per step of the
        log, not per event; the marks of many generations share a commit)."""
        self._writer.queue()
        self._writer.marks[generation_id] = max(seq, self._writer.marks.get(generation_id, 0))
        await self._writer.sync()

    async def append_events(self, generation_id: str, events: Sequence[Event]) -> None:
        if not events:
            return
        if generation_id not in self._last_seq:
            await self._open_log(generation_id)
        self._append(generation_id, events)

    async def _open_log(self, generation_id: str) -> None:
        """Learn where a log this process has not written yet ends (refuse an ended one)."""
        tail = await self._read(self._file.tail_sync, generation_id)
        if tail is not None and tail.terminal:
            raise StoreError(
                f"the event log of {generation_id} has ended; it takes no more events", code="log_closed"
            )
        self._last_seq.setdefault(generation_id, tail.seq if tail is not None else 0)

    def _append(self, generation_id: str, events: Sequence[Event]) -> None:
        last = self._last_seq[generation_id]
        if events[0].seq != last + 1:
            raise StoreError(
                f"event log of {generation_id} would have a gap: has {last}, got seq {events[0].seq}",
                code="log_gap",
                details={"stored_seq": last},
            )
        writer = self._writer
        writer.add_events(generation_id, events)
        if writer.queued_events >= self.batch_rows:
            writer.commit_soon()
        if events[-1].terminal:
            # Only open logs are cached; a later append reads the (terminal) tail and refuses.
            del self._last_seq[generation_id]
        else:
            self._last_seq[generation_id] = events[-1].seq
        changed = self._log_changed.pop(generation_id, None)
        if changed is not None:
            changed.set()

    async def read_events(
        self, generation_id: str, after: int = 0, limit: int | None = None
    ) -> list[Event]:
        return await self._read(self._file.read_sync, generation_id, after, limit)

    async def _read(self, fn: Callable[..., T], generation_id: str, *args: Any) -> T:
        """``fn(generation_id, *args)`` on the file, once this log's queued events are
        committed (a log with none queued is read at once: no commit of other logs)."""
        if self._writer.holds(generation_id):
            await self._writer.sync()
        return await self._file.run(fn, generation_id, *args)

    async def follow(self, generation_id: str, after: int = 0) -> AsyncIterator[list[Event]]:
        changed: anyio.Event | None = None

        async def read(after: int) -> list[Event]:
            nonlocal changed
            # Registered before reading, so an append in between still wakes us.
            changed = self._log_changed.get(generation_id)
            if changed is None:
                changed = self._log_changed[generation_id] = anyio.Event()
            return await self.read_events(generation_id, after)

        async def wait() -> None:
            assert changed is not None
            with anyio.move_on_after(self.poll_interval_s):
                await changed.wait()

        async def ended(after: int) -> bool:
            # Finished, and its log was dropped (retention) or never written.
            gen = await self.get_generation(generation_id)
            return gen is not None and gen.state.finished and after >= gen.last_seq

        try:
            async with aclosing(follow_log(read, wait, after, ended)) as batches:
                async for batch in batches:
                    yield batch
        finally:
            # Leave no waiter behind for a log nobody follows (others fall back to polling).
            if changed is not None and self._log_changed.get(generation_id) is changed:
                del self._log_changed[generation_id]

    # -- control (this process only) --

    async def publish_control(self, generation_id: str, message: dict[str, Any]) -> None:
        await self._local.publish_control(generation_id, message)

    def control(self, generation_id: str) -> AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]:
        return self._local.control(generation_id)

    async def claim_tool_result(self, generation_id: str, call_id: str) -> bool:
        key = (generation_id, call_id)
        if key in self._claimed:
            return False
        self._claimed.add(key)  # before any await: two claims in this process race here
        rows = await self._query(
            "SELECT 1 FROM tool_claims WHERE generation_id = ? AND call_id = ?", *key
        )
        if rows:
            return False
        self._writer.queue()
        self._writer.claims.append(key)
        return True

    # -- model archives (written at once, not behind: a checkpoint is rare and large) --

    async def put_archive(self, key: str, data: bytes) -> str:
        from streaming.stores.archives import archive_digest, check_archive_key

        digest = archive_digest(data)
        await self._query(
            "INSERT OR REPLACE INTO archives (key, digest, data) VALUES (?, ?, ?)",
            check_archive_key(key), digest, bytes(data),
        )
        return digest

    async def get_archive(self, key: str) -> bytes | None:
        from streaming.stores.archives import check_archive_key

        rows = await self._query("SELECT data FROM archives WHERE key = ?", check_archive_key(key))
        return bytes(rows[0][0]) if rows else None

    async def archive_digest(self, key: str) -> str | None:
        from streaming.stores.archives import check_archive_key

        rows = await self._query("SELECT digest FROM archives WHERE key = ?", check_archive_key(key))
        return str(rows[0][0]) if rows else None

    # -- recovery and retention --

    async def recover_interrupted(self) -> list[str]:
        """Fail every generation left unfinished by a process that died; return their ids."""
        await self._writer.sync()
        recovered = await anyio.to_thread.run_sync(self._file.recover_sync, limiter=self._file.limiter)
        self._files.clear()  # (it rewrote conversations in the file)
        return recovered
