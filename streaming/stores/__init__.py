"""Stores: one interface (``Store``), several backends chosen by URL."""

from __future__ import annotations

from streaming.errors import InvalidRequestError
from streaming.stores.base import Store
from streaming.stores.memory import MemoryStore

__all__ = ["MemoryStore", "Store", "open_store"]


def open_store(url: str) -> Store:
    """A store for ``url``: ``memory://``, ``sqlite:///path`` or ``redis://host:port/db``.

    Raises:
        InvalidRequestError: the URL's scheme is unknown, or a parameter is bad.
    """
    if url.startswith("memory:"):
        return MemoryStore.from_url(url)
    if url.startswith("sqlite:"):
        from streaming.stores.sqlite import SqliteStore  # type: ignore[import-not-found,unused-ignore]

        return SqliteStore(url)  # type: ignore[no-any-return,unused-ignore]
    if url.startswith(("redis:", "rediss:", "unix:")):
        from streaming.stores.redis import RedisStore  # type: ignore[import-not-found,unused-ignore]

        return RedisStore(url)  # type: ignore[no-any-return,unused-ignore]
    raise InvalidRequestError(
        f"unknown store URL {url!r}",
        suggestion="use memory://, sqlite:///path/to/file.db or redis://host:port/0",
    )
