"""The connection of :class:`~streaming.stores.redis.RedisStore`: its URL, its keys (every
one under a prefix), its two pools, its Lua scripts, and how Redis errors become store errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streaming.errors import StoreError, StoreUnavailableError

__all__ = ["RedisConnection", "ScriptBatch", "split_url"]

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
        self._batches: dict[str, ScriptBatch] = {}

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

    def batched(self, source: str, what: str) -> ScriptBatch:
        """The Lua script ``source`` called through a :class:`ScriptBatch` (one per
        script): calls that overlap share a round trip."""
        found = self._batches.get(source)
        if found is None:
            found = self._batches[source] = ScriptBatch(self, source, what)
        return found

    def mapped_error(self, exc: BaseException, what: str) -> BaseException:
        """``exc`` as :meth:`mapped` would raise it."""
        try:
            with self.mapped(what):
                raise exc
        except BaseException as mapped:  # (what mapped made of it, or exc itself)
            return mapped
        raise AssertionError("unreachable")  # pragma: no cover

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
        """Disconnect both clients (the calls of a batch still on its way fail first)."""
        for batch in self._batches.values():
            await batch.aclose()
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


#: calls of one script at most in one pipeline
BATCH_MAX = 256


class ScriptBatch:
    """Calls of one Lua script made by many tasks, sent to Redis together: a call made
    while no batch is on its way goes at the end of the loop turn (with the calls made in
    that turn); calls made while one is on its way go together as the next batch, once it
    is back (group commit). Each call is its own script run (atomic on its own, its own
    result or error); a burst of a thousand generations starting at once costs a few
    round trips instead of a thousand, and a lone call one loop turn.

    A caller cancelled while its call waits gives up its result, not the write: the call
    may still be sent (as a cancelled command may have been sent before)."""

    def __init__(self, conn: RedisConnection, source: str, what: str) -> None:
        self.conn = conn
        self.source = source
        self.what = what
        self.sent = 0  # pipelines sent (what tests and probes count)
        self._queue: list[tuple[list[Any], asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def __call__(self, args: list[Any]) -> Any:
        """The script's result for ``args`` (no keys: the scripts take theirs in ``args``).

        Raises:
            StoreUnavailableError: Redis could not be reached (after the client's retries).
            StoreError: the script raised (this call's own error).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((args, future))
        if self._sender is None:
            self._sender = loop.create_task(self._send(), name=f"redis: {self.what} batches")
        return await future

    async def _send(self) -> None:
        try:
            await asyncio.sleep(0)  # the calls of this loop turn join the first batch
            while self._queue:
                batch, self._queue = self._queue[:BATCH_MAX], self._queue[BATCH_MAX:]
                await self._send_batch(batch)
        finally:
            if self._sender is asyncio.current_task():
                self._sender = None
            self._fail_queued()  # (cancelled: the connection is closing)

    async def _send_batch(self, batch: list[tuple[list[Any], asyncio.Future[Any]]]) -> None:
        c = self.conn
        try:
            script = c.script(self.source)
            results = await self._pipeline(script.sha, [args for args, _ in batch])
            lost = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
            if lost:
                # Redis lost its scripts (it restarted, or SCRIPT FLUSH): load it, send those again.
                await c.r.script_load(self.source)
                again = await self._pipeline(script.sha, [batch[i][0] for i in lost])
                for i, result in zip(lost, again, strict=True):
                    results[i] = result
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue  # (its caller was cancelled)
                if isinstance(result, Exception):
                    future.set_exception(c.mapped_error(result, self.what))
                else:
                    future.set_result(result)
        except BaseException as exc:
            # (Cancelled: the connection is closing, and the calls' fate is unknown.)
            failed = exc if isinstance(exc, Exception) else RedisConnectionError("the store closed during the write")
            self._fail(batch, failed)
            if failed is not exc:
                raise

    async def _pipeline(self, sha: str, calls: list[list[Any]]) -> list[Any]:
        self.sent += 1
        async with self.conn.r.pipeline(transaction=False) as pipe:
            for args in calls:
                pipe.execute_command("EVALSHA", sha, 0, *args)
            return list(await pipe.execute(raise_on_error=False))

    def _fail(self, calls: list[tuple[list[Any], asyncio.Future[Any]]], exc: Exception) -> None:
        """Fail the calls still waiting with ``exc``, as :meth:`RedisConnection.mapped` maps it."""
        for _, future in calls:
            if not future.done():
                future.set_exception(self.conn.mapped_error(exc, self.what))

    def _fail_queued(self) -> None:
        queued, self._queue = self._queue, []
        self._fail(queued, RedisConnectionError("the store closed"))

    async def aclose(self) -> None:
        """Stop sending: calls not sent yet fail (``store_unavailable``)."""
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.cancel()
            await asyncio.wait((sender,))
        self._fail_queued()  # (a sender cancelled before its first step ran no finally)
