"""The SQLite file of :class:`~streaming.stores.sqlite.SqliteStore`: its schema, the one-process
lock, queries on the worker thread, event logs stored as segments, and the whole-file passes
(retention and recovery).

An event log is stored as *segments*: one row per run of consecutive events of one
generation that one commit carries (``first_seq`` to ``last_seq``, the events' SSE frames
joined), in a rowid table, so the rows of a commit are appended at the end of the file
whatever generations they belong to, and only the small index entries ``(log, last_seq)``
land beside the generation's earlier ones. ``log`` numbers generations in the order their
logs began (table ``logs``), so the index entries of the generations running now sit
together at the end of the index too. With 500 generations, five events each a commit, an
event cost ~1.3 us of commit CPU this way against ~7-10 us as a row of its own in a
``WITHOUT ROWID`` table keyed by generation id and seq (the first schema: a file written
with it has its ``events`` table moved into segments, one event each, when it opens).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import IO, Any, TypeVar

import anyio
import anyio.to_thread

from streaming.errors import StoreError
from streaming.events import Event
from streaming.model import Block, Generation, GenerationState
from streaming.stores.recovery import close_interrupted

__all__ = [
    "FINISHED",
    "INSERT_SEGMENT",
    "PUT_BLOCK",
    "PUT_FILE",
    "PUT_GENERATION",
    "PUT_MARK",
    "SqliteFile",
    "decode_ids",
    "decode_segment",
    "encode_ids",
    "replay_starts_sync",
    "rollback",
    "segments_of",
]

T = TypeVar("T")

logger = logging.getLogger("streaming.stores.sqlite")

FINISHED = tuple(s.value for s in GenerationState if s.finished)
UNFINISHED = tuple(s.value for s in GenerationState if not s.finished)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS generations (
    id TEXT PRIMARY KEY, state TEXT NOT NULL, finished_at REAL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS generations_unfinished ON generations(state)
    WHERE state IN {UNFINISHED!r};
CREATE TABLE IF NOT EXISTS blocks (id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (id TEXT PRIMARY KEY, data TEXT NOT NULL, block_ids TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS logs (no INTEGER PRIMARY KEY, generation_id TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS segments (
    log INTEGER NOT NULL, last_seq INTEGER NOT NULL, first_seq INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (log, last_seq));
CREATE TABLE IF NOT EXISTS tool_claims (
    generation_id TEXT NOT NULL, call_id TEXT NOT NULL,
    PRIMARY KEY (generation_id, call_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS archives (key TEXT PRIMARY KEY, digest TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS sent_marks (
    generation_id TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS starts (no INTEGER PRIMARY KEY, generation_id TEXT NOT NULL, data TEXT NOT NULL);
"""

# A block or file written again is updated in place (its row stays where it was written,
# beside those of the generations that started with it; its id's index entry is not
# rewritten), not deleted and inserted anew as INSERT OR REPLACE does.
PUT_BLOCK = "INSERT INTO blocks (id, data) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET data = excluded.data"
PUT_FILE = """
INSERT INTO files (id, data, block_ids) VALUES (?, ?, ?)
ON CONFLICT(id) DO UPDATE SET data = excluded.data, block_ids = excluded.block_ids
"""

#: bytes per page of a new file. Appending segments of a few KiB (paced streams, a commit
#: a second), 16 KiB pages cost 0.33 us of commit CPU an event against 4 KiB's 0.56
#: (a micro-benchmark of 1,000 segments of 20 events a commit, WAL, synchronous=NORMAL)
PAGE_SIZE = 16384

PUT_MARK = "INSERT OR REPLACE INTO sent_marks (generation_id, seq) VALUES (?, ?)"

INSERT_SEGMENT = "INSERT INTO segments (log, last_seq, first_seq, data) VALUES (?, ?, ?, ?)"

#: a log's segments holding events after a seq, in order
_READ = """
SELECT s.first_seq, s.last_seq, s.data FROM segments s JOIN logs l ON l.no = s.log
WHERE l.generation_id = ? AND s.last_seq > ? ORDER BY s.last_seq LIMIT ?
"""

#: a log's last segment
_TAIL = """
SELECT s.first_seq, s.last_seq, s.data FROM segments s JOIN logs l ON l.no = s.log
WHERE l.generation_id = ? ORDER BY s.last_seq DESC LIMIT 1
"""

# A finished generation is final: a late write of an older state never replaces it.
PUT_GENERATION = f"""
INSERT INTO generations (id, state, finished_at, data) VALUES (?, ?, ?, ?)
ON CONFLICT(id) DO UPDATE SET state = excluded.state, finished_at = excluded.finished_at,
    data = excluded.data
WHERE generations.state NOT IN {FINISHED!r}
"""


class SqliteFile:
    """One database file, held by one process (a lock file beside it refuses a second one).

    Every call on the connection runs on a worker thread, one at a time (``limiter``).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None
        self.limiter = anyio.CapacityLimiter(1)
        self._lock_file: IO[str] | None = None
        #: generation id -> its number in ``logs``, for logs this process writes (as
        #: committed: only the writer's thread, after a commit, adds to it)
        self.log_nos: dict[str, int] = {}

    def open_sync(self, ttl_s: float | None) -> None:
        """Take the lock, open the file, create the tables, drop logs older than ``ttl_s``."""
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(folder, exist_ok=True)
            self._take_lock()
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            # A new file gets pages of PAGE_SIZE (an existing one keeps its own): a commit
            # appends a segment of frames per streaming generation, a few KiB each.
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(SCHEMA)
            migrate_events_sync(conn, self.path)
            replay_starts_sync(conn)
        except (OSError, sqlite3.Error) as exc:
            self._release_lock()
            raise StoreError(f"cannot open sqlite store {self.path}: {exc}") from exc
        self.conn = conn
        if ttl_s:  # None or 0: keep forever
            self.expire_sync(time.time() - ttl_s)

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            await anyio.to_thread.run_sync(conn.close, limiter=self.limiter)
        self._release_lock()

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

    def require(self) -> sqlite3.Connection:
        if self.conn is None:
            raise StoreError(f"sqlite store {self.path} is not open", suggestion="call open() first")
        return self.conn

    async def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` (what is committed: the caller waits for queued writes first)."""
        conn = self.require()

        def run() -> list[tuple[Any, ...]]:
            return conn.execute(sql, params).fetchall()

        return await self.run(run)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the worker thread (a ``sqlite3.Error`` becomes a StoreError)."""
        self.require()
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite store {self.path}: {exc}") from exc

    def journal_sync(self, rows: list[tuple[str, str]]) -> None:
        """Commit journal rows of starts (``(generation id, JSON)``: see
        :func:`replay_starts_sync`), alone."""
        conn = self.require()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT INTO starts (generation_id, data) VALUES (?, ?)", rows)
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise

    # -- event logs (segments) --

    def log_no_sync(self, conn: sqlite3.Connection, generation_id: str) -> int:
        """The number of ``generation_id``'s log, made if it has none (inside the caller's
        transaction: not cached here)."""
        no = self.log_nos.get(generation_id)
        if no is not None:
            return no
        # (A log made here is new: one statement, not a look for it first.)
        cursor = conn.execute(
            "INSERT INTO logs (generation_id) VALUES (?) ON CONFLICT (generation_id) DO NOTHING", (generation_id,)
        )
        if cursor.rowcount == 1 and cursor.lastrowid is not None:
            return cursor.lastrowid
        row = conn.execute("SELECT no FROM logs WHERE generation_id = ?", (generation_id,)).fetchone()
        return int(row[0])

    def read_sync(self, generation_id: str, after: int = 0, limit: int | None = None) -> list[Event]:
        """The stored events of a log after ``after`` (at most ``limit``), in order."""
        if limit is not None and limit <= 0:
            return []
        after = max(after, 0)
        rows = self.require().execute(_READ, (generation_id, after, -1 if limit is None else limit))
        events: list[Event] = []
        for first, last, data in rows:
            events.extend(decode_segment(first, last, data, after))
        return events if limit is None else events[:limit]

    def tail_sync(self, generation_id: str) -> Event | None:
        """The last stored event of a log (None if it has none)."""
        row = self.require().execute(_TAIL, (generation_id,)).fetchone()
        if row is None:
            return None
        first, last, data = row
        return decode_segment(first, last, data, last - 1)[-1]

    def insert_events_sync(self, conn: sqlite3.Connection, generation_id: str, events: Sequence[Event]) -> None:
        """Write ``events`` (of one log, in order) as its next segments (in the caller's
        transaction)."""
        if events:
            no = self.log_no_sync(conn, generation_id)
            rows = [(no, last, first, b"".join(frames)) for first, last, frames in segments_of(events)]
            conn.executemany(INSERT_SEGMENT, rows)

    def recover_sync(self) -> list[str]:
        """Fail every generation left unfinished (its log closed, its open blocks aborted)."""
        conn = self.require()
        marks = ",".join("?" * len(UNFINISHED))
        rows = conn.execute(f"SELECT data FROM generations WHERE state IN ({marks})", UNFINISHED).fetchall()
        recovered: list[str] = []
        for (data,) in rows:
            gen = Generation.model_validate_json(data)
            events = self.read_sync(gen.id)
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
                self.insert_events_sync(conn, gen.id, fixed.events)
                conn.executemany(PUT_BLOCK, [(b.id, b.model_dump_json()) for b in fixed.blocks])
                file_row = conn.execute("SELECT block_ids FROM files WHERE id = ?", (gen.file_id,)).fetchone()
                if file_row is not None:
                    # Blocks made mid-stream join the conversation (the final write never came).
                    ids = decode_ids(file_row[0])
                    merged = ids + [b.id for b in fixed.blocks if b.id not in set(ids)]
                    if merged != ids:
                        conn.execute("UPDATE files SET block_ids = ? WHERE id = ?", (encode_ids(merged), gen.file_id))
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
                rollback(conn)
                raise
            recovered.append(gen.id)
            logger.warning("generation %s was interrupted by a restart; marked failed", gen.id)
        return recovered

    def expire_sync(self, cutoff: float) -> None:
        """Drop the logs, claims, marks and records of generations finished before ``cutoff``."""
        conn = self.require()
        marks = ",".join("?" * len(FINISHED))
        old = f"SELECT id FROM generations WHERE state IN ({marks}) AND finished_at < ?"
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                f"DELETE FROM segments WHERE log IN (SELECT no FROM logs WHERE generation_id IN ({old}))",
                (*FINISHED, cutoff),
            )
            conn.execute(f"DELETE FROM logs WHERE generation_id IN ({old})", (*FINISHED, cutoff))
            conn.execute(f"DELETE FROM tool_claims WHERE generation_id IN ({old})", (*FINISHED, cutoff))
            conn.execute(f"DELETE FROM sent_marks WHERE generation_id IN ({old})", (*FINISHED, cutoff))
            conn.execute(f"DELETE FROM generations WHERE id IN ({old})", (*FINISHED, cutoff))
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise


def rollback(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass  # the transaction never began (BEGIN itself failed)


def encode_ids(ids: list[str]) -> str:
    return "\n".join(ids)


def decode_ids(text: str) -> list[str]:
    return text.split("\n") if text else []


# -- segments --


def segments_of(events: Sequence[Event]) -> list[tuple[int, int, list[bytes]]]:
    """``events`` (of one log, in order) as runs of consecutive seqs: (first seq, last
    seq, their SSE frames). One run unless the seqs skip (a recovery past lost events)."""
    first, last = events[0].seq, events[-1].seq
    if last - first + 1 == len(events):
        return [(first, last, [ev.to_sse() for ev in events])]
    runs: list[tuple[int, int, list[bytes]]] = []
    for ev in events:
        if runs and runs[-1][1] + 1 == ev.seq:
            start, _, frames = runs[-1]
            frames.append(ev.to_sse())
            runs[-1] = (start, ev.seq, frames)
        else:
            runs.append((ev.seq, ev.seq, [ev.to_sse()]))
    return runs


def decode_segment(first: int, last: int, data: bytes, after: int = 0) -> list[Event]:
    """The events of a segment (seqs ``first`` to ``last``) after seq ``after``.

    ``data`` is the events' SSE frames joined, or (a row moved from the first schema) one
    event's JSON. Only the frames after ``after`` are parsed.

    Raises:
        StoreError: the segment does not hold ``last - first + 1`` events.
    """
    if data[:1] == b"{":  # one event, as the first schema stored it
        if first != last:
            raise StoreError(f"sqlite store: a corrupt segment ({first}..{last} holds one event)")
        return [Event.from_json(data)] if first > after else []
    frames = data.split(b"\n\n")  # a frame never holds a blank line; the last item is b""
    if len(frames) - 1 != last - first + 1 or frames[-1]:
        raise StoreError(f"sqlite store: a corrupt segment ({first}..{last} holds {len(frames) - 1} frames)")
    skip = after - first + 1 if after >= first else 0
    return [Event.from_json(_frame_json(frame)) for frame in frames[skip:-1]]


def _frame_json(frame: bytes) -> bytes:
    """The JSON of one SSE frame (its ``data`` line)."""
    start = 0 if frame.startswith(b"data:") else frame.index(b"\ndata:") + 1
    start += 5
    if frame[start : start + 1] == b" ":
        start += 1
    end = frame.find(b"\n", start)
    return frame[start:] if end < 0 else frame[start:end]


def replay_starts_sync(conn: sqlite3.Connection) -> None:
    """Put back the rows of starts that only the journal holds (a crash came before the
    commit of everything that would have written them), then empty it.

    A journal row is ``[generation id, [state, finished_at, record JSON] or null, [file
    id, file JSON, block ids] or null, [[block id, block JSON], ...], sent mark]``: what was
    queued of a start when its rows were committed. A generation whose record is in the
    file had a commit of everything after its start: what the file holds is newer.
    """
    rows = conn.execute("SELECT no, data FROM starts ORDER BY no").fetchall()
    if not rows:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for no, data in rows:
            try:
                gid, gen, file, blocks, mark = json.loads(data)
                if gen is not None and (len(gen) != 3 or any(len(b) != 2 for b in blocks)):
                    raise ValueError("not the shape of a start")
                if file is not None and len(file) != 3:
                    raise ValueError("not the shape of a start")
            except (ValueError, TypeError):  # (not a row this version wrote)
                logger.warning("sqlite store: journal row %s of a start is unreadable; left out", no)
                continue
            if gen is None or conn.execute("SELECT 1 FROM generations WHERE id = ?", (gid,)).fetchone():
                continue
            conn.executemany(PUT_BLOCK, [tuple(b) for b in blocks])
            if file is not None:
                conn.execute(PUT_FILE, tuple(file))
            conn.execute(PUT_GENERATION, (gid, *gen))
            if mark:
                conn.execute(PUT_MARK, (gid, mark))
        conn.execute("DELETE FROM starts")
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise


def migrate_events_sync(conn: sqlite3.Connection, path: str) -> None:
    """Move the ``events`` table of the first schema (a row per event) into segments of
    one event each, in one transaction (a crash in between leaves the old table whole)."""
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'").fetchone()
    if found is None:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("INSERT OR IGNORE INTO logs (generation_id) SELECT DISTINCT generation_id FROM events")
        moved = conn.execute(
            "INSERT INTO segments (log, last_seq, first_seq, data) "
            "SELECT l.no, e.seq, e.seq, CAST(e.data AS BLOB) FROM events e "
            "JOIN logs l ON l.generation_id = e.generation_id"
        ).rowcount
        conn.execute("DROP TABLE events")
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise
    logger.info("sqlite store %s: %d events of the first schema moved into segments", path, moved)
