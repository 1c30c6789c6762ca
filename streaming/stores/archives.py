"""Model archives (``TrainableModel`` checkpoints) kept by the store.

An :class:`ArchiveStore` keeps opaque bytes under a key such as
``<plugin_instance_id>/<handle>.zip`` and a digest of each, so a process can tell whether
the copy it has cached is still current without downloading it again. :func:`archives_for`
gives the one that lives beside a store, using that store's own connection:

- ``memory://``: a dict in this process;
- ``sqlite:///path``: a table ``archives`` in the same file (survives restarts);
- ``redis://``: keys ``<prefix>archive:<key>`` (shared by every process on that Redis).

Keys are checked by :func:`check_archive_key`: relative, ``/``-separated names made of
``[A-Za-z0-9._-]``, no ``..``, no empty part; anything else is refused, never normalised.
"""

from __future__ import annotations

import base64
import hashlib
import re
import sqlite3
from typing import Any, Protocol, runtime_checkable

import anyio.to_thread

from streaming.errors import InvalidRequestError, StoreError
from streaming.stores.base import Store

__all__ = [
    "ArchiveStore",
    "MemoryArchives",
    "RedisArchives",
    "SqliteArchives",
    "archives_for",
    "check_archive_key",
]

_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")


def check_archive_key(key: str) -> str:
    """``key`` if it is a safe archive key.

    Raises:
        InvalidRequestError: empty, absolute, with ``..`` or an empty part, or characters
            outside ``[A-Za-z0-9._-/]``.
    """
    parts = key.split("/")
    if not key or len(key) > 512 or any(p in ("", ".", "..") or not _PART.match(p) for p in parts):
        raise InvalidRequestError(
            f"invalid archive key {key!r}",
            suggestion="use names of letters, digits, '.', '_' and '-' separated by '/'",
        )
    return key


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@runtime_checkable
class ArchiveStore(Protocol):
    """Where checkpoints are kept. Every method raises InvalidRequestError on a bad key."""

    async def put_archive(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key`` (replacing it); return its digest."""
        ...

    async def get_archive(self, key: str) -> bytes | None:
        """The bytes under ``key``, or None."""
        ...

    async def archive_digest(self, key: str) -> str | None:
        """The digest of the bytes under ``key`` (cheap: no download), or None."""
        ...


class MemoryArchives:
    """Archives in this process's memory."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes, str]] = {}

    async def put_archive(self, key: str, data: bytes) -> str:
        digest = _digest(data)
        self._data[check_archive_key(key)] = (bytes(data), digest)
        return digest

    async def get_archive(self, key: str) -> bytes | None:
        found = self._data.get(check_archive_key(key))
        return found[0] if found else None

    async def archive_digest(self, key: str) -> str | None:
        found = self._data.get(check_archive_key(key))
        return found[1] if found else None


class SqliteArchives:
    """Archives in a table of a :class:`~streaming.stores.sqlite.SqliteStore`'s file.

    Uses the store's connection and its one-thread limiter, so archive writes never race
    the store's own commits.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self._ready = False

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self.store, "_conn", None)
        if conn is None:
            raise StoreError("the sqlite store is not open", suggestion="open the runtime first")
        if not self._ready:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS archives (key TEXT PRIMARY KEY, digest TEXT NOT NULL, data BLOB NOT NULL)"
            )
            self._ready = True
        return conn

    async def _run(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        def run() -> list[tuple[Any, ...]]:
            return self._conn().execute(sql, params).fetchall()

        try:
            return await anyio.to_thread.run_sync(run, limiter=self.store._limiter)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite archives: {exc}") from exc

    async def put_archive(self, key: str, data: bytes) -> str:
        digest = _digest(data)
        await self._run(
            "INSERT OR REPLACE INTO archives (key, digest, data) VALUES (?, ?, ?)",
            check_archive_key(key), digest, bytes(data),
        )
        return digest

    async def get_archive(self, key: str) -> bytes | None:
        rows = await self._run("SELECT data FROM archives WHERE key = ?", check_archive_key(key))
        return bytes(rows[0][0]) if rows else None

    async def archive_digest(self, key: str) -> str | None:
        rows = await self._run("SELECT digest FROM archives WHERE key = ?", check_archive_key(key))
        return str(rows[0][0]) if rows else None


class RedisArchives:
    """Archives in a :class:`~streaming.stores.redis.RedisStore`'s Redis (never expire).

    The store's client decodes responses as text, so the bytes are kept base64-encoded in
    a hash (``data``, ``digest``).
    """

    def __init__(self, store: Any) -> None:
        self.store = store

    def _key(self, key: str) -> str:
        return str(self.store._k("archive", check_archive_key(key)))

    async def put_archive(self, key: str, data: bytes) -> str:
        digest = _digest(data)
        name = self._key(key)
        with self.store._mapped("put_archive"):
            await self.store._r.hset(
                name, mapping={"data": base64.b64encode(data).decode("ascii"), "digest": digest}
            )
        return digest

    async def get_archive(self, key: str) -> bytes | None:
        name = self._key(key)
        with self.store._mapped("get_archive"):
            text = await self.store._r.hget(name, "data")
        return base64.b64decode(text) if text is not None else None

    async def archive_digest(self, key: str) -> str | None:
        name = self._key(key)
        with self.store._mapped("archive_digest"):
            digest = await self.store._r.hget(name, "digest")
        return str(digest) if digest is not None else None


def archives_for(store: Store) -> ArchiveStore:
    """The archive store that lives beside ``store`` (one per store object).

    Raises:
        InvalidRequestError: the store kind keeps no archives.
    """
    found = getattr(store, "_archive_store", None)
    if isinstance(found, ArchiveStore):
        return found
    archives: ArchiveStore
    own = getattr(store, "archives", None)
    if isinstance(own, ArchiveStore):
        archives = own
    else:
        kind = type(store).__name__
        if kind == "SqliteStore":
            archives = SqliteArchives(store)
        elif kind == "RedisStore":
            archives = RedisArchives(store)
        elif kind == "MemoryStore":
            archives = MemoryArchives()
        else:
            raise InvalidRequestError(f"the store {kind} keeps no model archives")
    store._archive_store = archives  # type: ignore[attr-defined]
    return archives
