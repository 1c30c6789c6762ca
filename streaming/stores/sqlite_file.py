"""The SQLite file of :class:`~streaming.stores.sqlite.SqliteStore`: its schema, the one-process
lock, queries on the worker thread, and the whole-file passes (retention and recovery)."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from typing import IO, Any

import anyio
import anyio.to_thread

from streaming.errors import StoreError
from streaming.events import Event
from streaming.model import Block, Generation, GenerationState
from streaming.stores.recovery import close_interrupted

__all__ = ["FINISHED", "PUT_GENERATION", "SqliteFile", "decode_ids", "encode_ids", "rollback"]

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

    def open_sync(self, ttl_s: float | None) -> None:
        """Take the lock, open the file, create the tables, drop logs older than ``ttl_s``."""
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(folder, exist_ok=True)
            self._take_lock()
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(SCHEMA)
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

        try:
            return await anyio.to_thread.run_sync(run, limiter=self.limiter)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite store {self.path}: {exc}") from exc

    def recover_sync(self) -> list[str]:
        """Fail every generation left unfinished (its log closed, its open blocks aborted)."""
        conn = self.require()
        marks = ",".join("?" * len(UNFINISHED))
        rows = conn.execute(f"SELECT data FROM generations WHERE state IN ({marks})", UNFINISHED).fetchall()
        recovered: list[str] = []
        for (data,) in rows:
            gen = Generation.model_validate_json(data)
            events = [
                Event.from_json(r[0])
                for r in conn.execute("SELECT data FROM events WHERE generation_id = ? ORDER BY seq", (gen.id,))
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
            conn.execute(f"DELETE FROM events WHERE generation_id IN ({old})", (*FINISHED, cutoff))
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
