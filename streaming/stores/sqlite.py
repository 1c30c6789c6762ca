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
several chunks of every running generation, and a lone write still commits at once. Each
commit rewrites the pages it touches to the WAL, and a generation's rows share pages: with
one chunk of each of 500 generations a commit, a row cost ~19 us of CPU; with five, ~10 us.

After a crash, :meth:`SqliteStore.recover_interrupted` (the runtime calls it on start)
fails every generation left ``running`` with code ``interrupted``, aborts its open blocks
and closes its log with a terminal event (see :mod:`streaming.stores.recovery`).

URL: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (SQLAlchemy's
convention), with optional query parameters ``poll`` (seconds between checks of a followed
log, default 0.05) and ``ttl`` (seconds a finished generation's log is kept; default or 0:
forever; older ones are dropped when the store opens), ``retry`` (seconds failing
commits are retried before writers are told ``store_unavailable``, default 10) and ``batch``
(the writer commits at most once in this many seconds, default 0.25; a read, or 10,000
queued events, commits at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, aclosing
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.to_thread

from streaming.errors import InvalidRequestError, StoreError, StoreUnavailableError
from streaming.events import Event
from streaming.model import Block, File, Generation, GenerationState
from streaming.stores.base import Store
from streaming.stores.follow import follow_log
from streaming.stores.memory import MemoryStore
from streaming.stores.recovery import close_interrupted
from streaming.tasks import TaskOwner

__all__ = ["SqliteStore", "parse_sqlite_url"]

logger = logging.getLogger("streaming.stores.sqlite")

_FINISHED = tuple(s.value for s in GenerationState if s.finished)
_UNFINISHED = tuple(s.value for s in GenerationState if not s.finished)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS generations (
    id TEXT PRIMARY KEY, state TEXT NOT NULL, finished_at REAL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS generations_unfinished ON generations(state)
    WHERE state IN {_UNFINISHED!r};
CREATE TABLE IF NOT EXISTS blocks (id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (id TEXT PRIMARY KEY, data TEXT NOT NULL, block_ids TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    generation_id TEXT NOT NULL, seq INTEGER NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (generation_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tool_claims (
    generation_id TEXT NOT NULL, call_id TEXT NOT NULL,
    PRIMARY KEY (generation_id, call_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS archives (key TEXT PRIMARY KEY, digest TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS sent_marks (
    generation_id TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
"""

# A finished generation is final: a late write of an older state never replaces it.
_PUT_GENERATION = f"""
INSERT INTO generations (id, state, finished_at, data) VALUES (?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET state = excluded.state, finished_at = excluded.finished_at,
    data = excluded.data
WHERE generations.state NOT IN {_FINISHED!r}
"""


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
    ) -> None:
        if url.startswith("sqlite:"):
            path, params = parse_sqlite_url(url)
        else:
            path, params = url, {}
            url = f"sqlite:///{path}"
        try:
            poll = float(params["poll"]) if "poll" in params else 0.05
            ttl = float(params["ttl"]) if "ttl" in params else None
            retry = float(params["retry"]) if "retry" in params else 10.0
            batch = float(params["batch"]) if "batch" in params else 0.25
        except ValueError as exc:
            raise InvalidRequestError(f"bad sqlite URL parameter in {url!r}: {exc}") from exc
        self.url = url
        self.path = path
        self.poll_interval_s = poll if poll_interval_s is None else poll_interval_s
        self.ttl_s = ttl if ttl_s is None else ttl_s
        self.retry_s = retry if retry_s is None else retry_s
        self.batch_s = batch if batch_s is None else batch_s
        self._conn: sqlite3.Connection | None = None
        self._lock_file: IO[str] | None = None
        self._limiter = anyio.CapacityLimiter(1)
        # Write-behind queue: coalesced by id; events in order.
        self._gens: dict[str, tuple[str, float | None, str]] = {}
        self._blocks: dict[str, str] = {}
        self._files: dict[str, tuple[str, str]] = {}
        self._events: list[tuple[str, int, str]] = []
        self._claims: list[tuple[str, str]] = []
        self._marks: dict[str, int] = {}
        self._queued = 0  # writes queued so far
        self._committed = 0  # of which committed
        self._wake_writer = asyncio.Event()
        self._commit_now = asyncio.Event()  # someone waits for a commit: no batching
        self._commit_done = anyio.Event()
        self._tasks = TaskOwner("sqlite store", logger)  # the writer
        self._failure: BaseException | None = None
        self._last_seq: dict[str, int] = {}  # of logs still open
        self._claimed: set[tuple[str, str]] = set()
        self._log_changed: dict[str, anyio.Event] = {}
        # Control signals only ever reach this process (one process per file).
        self._local = MemoryStore()

    # -- lifecycle --

    async def open(self) -> None:
        """Create the file and tables; take the one-process lock.

        Raises:
            StoreError: the file cannot be opened, or another process has it open.
        """
        if self._conn is not None:
            return
        await anyio.to_thread.run_sync(self._open_sync, limiter=self._limiter)
        self._tasks.spawn(self._write_loop(), name="writer")

    def _open_sync(self) -> None:
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(folder, exist_ok=True)
            self._take_lock()
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            self._release_lock()
            raise StoreError(f"cannot open sqlite store {self.path}: {exc}") from exc
        self._conn = conn
        if self.ttl_s:  # None or 0: keep forever
            self._expire_sync(time.time() - self.ttl_s)

    def _take_lock(self) -> None:
        import fcntl

        lock = open(self.path + ".lock", "a")  # noqa: SIM115 (held until close)
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise StoreError(
                f"sqlite store {self.path} is in use by another process",
                suggestion="run one server per sqlite file, or share redis:// between processes",
            ) from None
        self._lock_file = lock

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing drops the flock
            self._lock_file = None

    async def close(self) -> None:
        """Commit what is queued, then close the file and drop the lock."""
        if self._conn is None:
            return
        try:
            await self._sync()
        except StoreError:
            logger.exception("sqlite store %s: last writes lost on close", self.path)
        await self._tasks.aclose()
        conn, self._conn = self._conn, None
        await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)
        self._release_lock()

    # -- the writer --

    def _unavailable(self) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"sqlite store {self.path} cannot write: {self._failure}",
            suggestion="check the disk (space, permissions); the pending writes are retried",
        )

    def _queue(self) -> None:
        if self._failure is not None:
            raise self._unavailable() from self._failure
        self._queued += 1
        self._wake_writer.set()

    def _signal(self) -> None:
        done, self._commit_done = self._commit_done, anyio.Event()
        done.set()

    async def _write_loop(self, max_delay_s: float = 2.0) -> None:
        clock = asyncio.get_running_loop().time
        last_commit = -self.batch_s
        while True:
            await self._wake_writer.wait()
            due = last_commit + self.batch_s
            if not self._commit_now.is_set() and clock() < due:
                # Gather what comes until then into this commit, unless a reader (or a
                # full batch) asks for it now.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(due):
                        await self._commit_now.wait()
            last_commit = clock()
            self._commit_now.clear()
            self._wake_writer.clear()
            target = self._queued
            batch = (self._gens, self._blocks, self._files, self._events, self._claims, self._marks)
            self._gens, self._blocks, self._files, self._events, self._claims = {}, {}, {}, [], []
            self._marks = {}
            failing_since: float | None = None
            delay = 0.05
            while True:  # the same batch again, so the order of writes holds
                try:
                    await anyio.to_thread.run_sync(self._commit_sync, *batch, limiter=self._limiter)
                    break
                except Exception as exc:  # the disk is full, the file went away...
                    now = anyio.current_time()
                    failing_since = now if failing_since is None else failing_since
                    logger.warning("sqlite store %s: commit failed (%s); retrying", self.path, exc)
                    if now - failing_since >= self.retry_s and self._failure is None:
                        self._failure = exc  # callers are told now; writing goes on trying
                        self._signal()
                    await anyio.sleep(delay)
                    delay = min(delay * 2, max_delay_s)
            self._failure = None
            self._committed = target
            self._signal()

    def _commit_sync(
        self,
        gens: dict[str, tuple[str, float | None, str]],
        blocks: dict[str, str],
        files: dict[str, tuple[str, str]],
        events: list[tuple[str, int, str]],
        claims: list[tuple[str, str]],
        marks: dict[str, int],
    ) -> None:
        conn = self._require()
        conn.execute("BEGIN IMMEDIATE")
        try:
            if blocks:
                conn.executemany("INSERT OR REPLACE INTO blocks (id, data) VALUES (?, ?)", blocks.items())
            if files:
                conn.executemany(
                    "INSERT OR REPLACE INTO files (id, data, block_ids) VALUES (?, ?, ?)",
                    [(k, d, ids) for k, (d, ids) in files.items()],
                )
            if events:
                conn.executemany("INSERT INTO events (generation_id, seq, data) VALUES (?, ?, ?)", events)
            if gens:
                conn.executemany(_PUT_GENERATION, [(k, s, f, d) for k, (s, f, d) in gens.items()])
            if claims:
                conn.executemany(
                    "INSERT OR IGNORE INTO tool_claims (generation_id, call_id) VALUES (?, ?)", claims
                )
            if marks:
                conn.executemany("INSERT OR REPLACE INTO sent_marks (generation_id, seq) VALUES (?, ?)", marks.items())
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    async def _sync(self) -> None:
        """Wait until every write queued before this call is committed.

        Raises:
            StoreUnavailableError: commits have been failing for ``retry_s``.
        """
        target = self._queued
        while self._committed < target:
            self._commit_now.set()
            if self._failure is not None:
                raise self._unavailable() from self._failure
            await self._commit_done.wait()

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"sqlite store {self.path} is not open", suggestion="call open() first")
        return self._conn

    async def _query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        await self._sync()
        conn = self._require()

        def run() -> list[tuple[Any, ...]]:
            return conn.execute(sql, params).fetchall()

        try:
            return await anyio.to_thread.run_sync(run, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite store {self.path}: {exc}") from exc

    # -- records --

    async def put_generation(self, generation: Generation) -> None:
        queued = self._gens.get(generation.id)
        if queued is not None and queued[0] in _FINISHED:
            return  # final (the SQL guards what is already committed)
        self._queue()
        self._gens[generation.id] = (
            generation.state.value,
            generation.finished_at,
            generation.model_dump_json(),
        )

    async def get_generation(self, generation_id: str) -> Generation | None:
        rows = await self._query("SELECT data FROM generations WHERE id = ?", generation_id)
        return Generation.model_validate_json(rows[0][0]) if rows else None

    async def put_blocks(self, blocks: Sequence[Block]) -> None:
        if not blocks:
            return
        self._queue()
        for block in blocks:
            self._blocks[block.id] = block.model_dump_json()

    async def get_block(self, block_id: str) -> Block | None:
        rows = await self._query("SELECT data FROM blocks WHERE id = ?", block_id)
        return Block.model_validate_json(rows[0][0]) if rows else None

    async def put_file(self, file: File) -> None:
        await self.put_blocks(file.blocks)
        self._queue()
        meta = file.model_copy(update={"blocks": []})
        self._files[file.id] = (meta.model_dump_json(), encode_ids([b.id for b in file.blocks]))

    async def get_file(self, file_id: str) -> File | None:
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
        return meta

    # -- event logs --

    async def reserve_seq(self, generation_id: str, seq: int) -> None:
        """Queued with the other writes; returns once committed (a mark per step of the
        log, not per event; the marks of many generations share a commit)."""
        self._queue()
        self._marks[generation_id] = max(seq, self._marks.get(generation_id, 0))
        await self._sync()

    async def append_events(self, generation_id: str, events: Sequence[Event]) -> None:
        if not events:
            return
        last = self._last_seq.get(generation_id)
        if last is None:
            rows = await self._query(
                "SELECT seq, data FROM events WHERE generation_id = ? ORDER BY seq DESC LIMIT 1",
                generation_id,
            )
            if rows and Event.from_json(rows[0][1]).terminal:
                raise StoreError(
                    f"the event log of {generation_id} has ended; it takes no more events", code="log_closed"
                )
            last = self._last_seq.setdefault(generation_id, int(rows[0][0]) if rows else 0)
        if events[0].seq != last + 1:
            raise StoreError(
                f"event log of {generation_id} would have a gap: has {last}, got seq {events[0].seq}",
                code="log_gap",
                details={"stored_seq": last},
            )
        self._queue()
        self._events.extend((generation_id, ev.seq, ev.to_json()) for ev in events)
        if len(self._events) >= self.batch_rows:
            self._commit_now.set()
        if events[-1].terminal:
            # Only open logs are cached; a later append reads the (terminal) tail and refuses.
            self._last_seq.pop(generation_id, None)
        else:
            self._last_seq[generation_id] = events[-1].seq
        changed = self._log_changed.pop(generation_id, None)
        if changed is not None:
            changed.set()

    async def read_events(
        self, generation_id: str, after: int = 0, limit: int | None = None
    ) -> list[Event]:
        rows = await self._query(
            "SELECT data FROM events WHERE generation_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            generation_id,
            max(after, 0),
            -1 if limit is None else limit,
        )
        return [Event.from_json(row[0]) for row in rows]

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
        self._queue()
        self._claims.append(key)
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
        await self._sync()
        return await anyio.to_thread.run_sync(self._recover_sync, limiter=self._limiter)

    def _recover_sync(self) -> list[str]:
        conn = self._require()
        marks = ",".join("?" * len(_UNFINISHED))
        rows = conn.execute(
            f"SELECT data FROM generations WHERE state IN ({marks})", _UNFINISHED
        ).fetchall()
        recovered: list[str] = []
        for (data,) in rows:
            gen = Generation.model_validate_json(data)
            events = [
                Event.from_json(r[0])
                for r in conn.execute(
                    "SELECT data FROM events WHERE generation_id = ? ORDER BY seq", (gen.id,)
                )
            ]
            ids = list(gen.output_block_ids)
            for ev in events:
                if ev.type == "block.created":
                    ids.append(str(ev.data["block"]["id"]))
            blocks: dict[str, Block] = {}
            if ids:
                q = ",".join("?" * len(ids))
                for bid, bdata in conn.execute(f"SELECT id, data FROM blocks WHERE id IN ({q})", ids):
                    blocks[bid] = Block.model_validate_json(bdata)
            mark = conn.execute("SELECT seq FROM sent_marks WHERE generation_id = ?", (gen.id,)).fetchone()
            fixed = close_interrupted(gen, blocks, events, sent=int(mark[0]) if mark else 0)
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO events (generation_id, seq, data) VALUES (?, ?, ?)",
                    [(gen.id, ev.seq, ev.to_json()) for ev in fixed.events],
                )
                conn.executemany(
                    "INSERT OR REPLACE INTO blocks (id, data) VALUES (?, ?)",
                    [(b.id, b.model_dump_json()) for b in fixed.blocks],
                )
                file_row = conn.execute(
                    "SELECT block_ids FROM files WHERE id = ?", (gen.file_id,)
                ).fetchone()
                if file_row is not None:
                    # Blocks made mid-stream join the conversation (the final write never came).
                    ids = decode_ids(file_row[0])
                    merged = ids + [b.id for b in fixed.blocks if b.id not in set(ids)]
                    if merged != ids:
                        conn.execute(
                            "UPDATE files SET block_ids = ? WHERE id = ?", (encode_ids(merged), gen.file_id)
                        )
                conn.execute(
                    "UPDATE generations SET state = ?, finished_at = ?, data = ? WHERE id = ?",
                    (
                        fixed.generation.state.value,
                        fixed.generation.finished_at,
                        fixed.generation.model_dump_json(),
                        gen.id,
                    ),
                )
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            recovered.append(gen.id)
            logger.warning("generation %s was interrupted by a restart; marked failed", gen.id)
        return recovered

    def _expire_sync(self, cutoff: float) -> None:
        conn = self._require()
        marks = ",".join("?" * len(_FINISHED))
        old = f"SELECT id FROM generations WHERE state IN ({marks}) AND finished_at < ?"
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(f"DELETE FROM events WHERE generation_id IN ({old})", (*_FINISHED, cutoff))
            conn.execute(f"DELETE FROM tool_claims WHERE generation_id IN ({old})", (*_FINISHED, cutoff))
            conn.execute(f"DELETE FROM sent_marks WHERE generation_id IN ({old})", (*_FINISHED, cutoff))
            conn.execute(f"DELETE FROM generations WHERE id IN ({old})", (*_FINISHED, cutoff))
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # the transaction never began (BEGIN itself failed)


def encode_ids(ids: list[str]) -> str:
    return "\n".join(ids)


def decode_ids(text: str) -> list[str]:
    return text.split("\n") if text else []
