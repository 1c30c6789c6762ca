"""The connection of :class:`~streaming.stores.redis.RedisStore`: its URL, its keys (every
one under a prefix), its two pools, its Lua scripts, and how Redis errors become store errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streaming.errors import StoreError, StoreUnavailableError

__all__ = ["RedisConnection", "split_url"]

#: the URL query parameters the store reads (the rest go to redis-py)
OURS = ("ttl", "lease", "prefix", "retry", "pool")

#: the longest wait between two retries of a command while Redis is unreachable
BACKOFF_CAP_S = 2.0


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """The URL for redis-py (our parameters removed) and our parameters."""
    parts = urlsplit(url)
    theirs, ours = [], {}
    for key, value in parse_qsl(parts.query):
        if key in OURS:
            ours[key] = value
        else:
            theirs.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(theirs))), ours


class RedisConnection:
    """A client for commands (a bounded pool: callers wait their turn), a client for
    followers blocked on a log (a connection each), and the key names under ``prefix``."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        parts = urlsplit(redis_url)
        self.where = parts.hostname or parts.path or "redis"
        # Any: redis-py's stubs cannot tell that decode_responses=True gives str, not bytes.
        self.client: Any = None
        self.follow_client: Any = None
        self._scripts: dict[str, Any] = {}

    def k(self, *parts: str) -> str:
        """The key (or channel) ``prefix`` + ``parts`` joined by ``:``."""
        return self.prefix + ":".join(parts)

    @property
    def r(self) -> Any:
        """The command client; raises :class:`StoreError` while not connected."""
        if self.client is None:
            raise StoreError("the redis store is not open", suggestion="call open() first")
        return self.client

    def script(self, source: str) -> Any:
        """The Lua script ``source``, registered once per connection (EVALSHA, then EVAL)."""
        found = self._scripts.get(source)
        if found is None:
            found = self._scripts[source] = self.r.register_script(source)
        return found

    @contextmanager
    def mapped(self, what: str) -> Iterator[None]:
        """Redis errors raised inside as :class:`StoreUnavailableError` (connection) or
        :class:`StoreError` (anything else), naming ``what`` was being done."""
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailableError(
                f"redis at {self.where} is unavailable ({what}): {exc}",
                suggestion="check that Redis is running and reachable; commands were retried with backoff",
            ) from exc
        except RedisError as exc:
            raise StoreError(f"redis error ({what}): {exc}") from exc

    def connect(self, *, pool_size: int, max_followers: int, retry_s: float) -> None:
        """Make both clients (they connect on first use), retrying for about ``retry_s``."""
        base, cap = 0.05, BACKOFF_CAP_S
        retries, waited = 0, 0.0
        while waited < retry_s and retries < 100:
            retries += 1
            waited += min(cap, base * 2**retries)
        options: dict[str, Any] = {
            "decode_responses": True,
            "retry": Retry(ExponentialBackoff(cap=cap, base=base), retries),
            "retry_on_error": [RedisConnectionError, RedisTimeoutError],
            "socket_connect_timeout": 2.0,
            "socket_keepalive": True,
        }
        # Commands share a bounded pool and wait their turn for a connection (a burst of
        # generations must not fail "too many connections"); each follower blocks in XREAD
        # on a connection of its own, from a second pool.
        pools = aredis.BlockingConnectionPool.from_url(
            self.redis_url, max_connections=pool_size, timeout=None, **options
        )
        client = aredis.Redis(connection_pool=pools)
        client.auto_close_connection_pool = True
        followers = aredis.ConnectionPool.from_url(self.redis_url, max_connections=max_followers, **options)
        self.follow_client = aredis.Redis(connection_pool=followers)
        self.follow_client.auto_close_connection_pool = True
        self.client = client
        self._scripts = {}

    async def aclose(self) -> None:
        """Disconnect both clients."""
        client, self.client = self.client, None
        self._scripts = {}
        if client is not None:
            await client.aclose()
        if self.follow_client is not None:
            await self.follow_client.aclose()

    async def delete_quietly(self, key: str) -> None:
        """Delete ``key``, ignoring Redis errors (for keys that expire by themselves anyway)."""
        try:
            await self.r.delete(key)
        except RedisError:
            pass
