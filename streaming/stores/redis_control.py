"""Control messages of :class:`~streaming.stores.redis.RedisStore`: ``ctl:{id}``, a list of
messages (cancel, tool results) for the process running a generation, woken by a pub/sub
message on the channel of the same name; presence pings (passing messages, not kept); and
tool-call claims ``claim:{gen}:{call}``."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream
from redis.exceptions import RedisError

from streaming.errors import StoreError
from streaming.stores.redis_conn import RedisConnection

__all__ = ["RedisControl"]

logger = logging.getLogger("streaming.stores.redis")


class RedisControl:
    """The listeners of this process (per generation) and the one pub/sub loop that feeds them.

    Args:
        conn: the store's connection.
        owner: this process's id (the value of the claims it wins).
        ttl_ms: how long tool claims are kept (0: forever).
        lease_s: the lease; control lists live ten leases at least, and the loop sweeps
            every list it listens to once a lease.
        closing: true once the store closes (the loop stops).
    """

    def __init__(
        self,
        conn: RedisConnection,
        *,
        owner: str,
        ttl_ms: int,
        lease_s: float,
        closing: Callable[[], bool],
        spawn: Callable[[Coroutine[Any, Any, Any], str], object] | None = None,
    ) -> None:
        self.conn = conn
        self.owner = owner
        self.ttl_ms = ttl_ms
        self.lease_s = lease_s
        self._closing = closing
        self._spawn = spawn
        self._local: dict[str, list[MemoryObjectSendStream[dict[str, Any]]]] = defaultdict(list)
        self._drain_locks: dict[str, anyio.Lock] = {}
        #: generations listened to since the last first-drain (``_drain_fresh``)
        self._fresh: set[str] = set()
        self._draining_fresh = False
        #: new generations not listened to yet: the subscription (its number, ``_epoch``)
        #: that was up when each was written (-1: none was, or a wake-up came meanwhile)
        self._expected: dict[str, int] = {}
        self._epoch = 0
        self._subscribed = False

    def listening(self) -> list[str]:
        """The generations someone in this process listens to."""
        return list(self._local)

    async def publish_presence(self, generation_id: str) -> None:
        """Tell the running process that someone follows ``generation_id`` (not kept)."""
        try:
            await self.conn.r.publish(self.conn.k("ctl", generation_id), '{"type":"subscriber"}')
        except RedisError as exc:  # a missed ping only risks the disconnect grace
            logger.warning("redis presence of %s: %s", generation_id, exc)

    async def publish(self, generation_id: str, message: dict[str, Any]) -> None:
        c = self.conn
        key = c.k("ctl", generation_id)
        with c.mapped("publish_control"):
            async with c.r.pipeline(transaction=True) as pipe:
                pipe.rpush(key, json.dumps(message))
                pipe.pexpire(key, max(self.ttl_ms, int(self.lease_s * 1000) * 10) or 86_400_000)
                pipe.publish(key, "1")
                await pipe.execute()

    def expect(self, generation_id: str) -> None:
        """``generation_id`` is new (about to be written under an id minted for it): its
        list is empty until someone learns the id from the store. If the subscription stays
        up until it listens here, a wake-up in between says whether its list needs reading
        then; else it is read as any other's."""
        if len(self._expected) > 100_000:  # never listened to (they failed to start)
            self._expected.clear()  # (they are then read when they listen: always safe)
        self._expected[generation_id] = self._epoch if self._subscribed else -1

    def unexpect(self, generation_id: str) -> None:
        self._expected.pop(generation_id, None)

    def _untouched(self, generation_id: str) -> bool:
        """Whether ``generation_id``'s list is known to be empty: it is new, no wake-up
        came for it, and the subscription has stayed up since it was written."""
        epoch = self._expected.pop(generation_id, -1)
        return self._subscribed and epoch == self._epoch

    @asynccontextmanager
    async def listen(self, generation_id: str) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](64)
        self._local[generation_id].append(send)
        try:
            # Messages sent before we listened wait in the list (a new generation's list
            # is read only if something may have been sent to it: ``expect``).
            if self._untouched(generation_id):
                pass
            elif self._spawn is None:
                try:
                    await self._drain(generation_id)
                except StoreError as exc:
                    logger.warning("redis control of %s: %s", generation_id, exc)
            else:
                # Drained with those of every other generation that starts listening
                # meanwhile (a burst of generations: one round trip, not one each).
                self._fresh.add(generation_id)
                if not self._draining_fresh:
                    self._draining_fresh = True
                    self._spawn(self._drain_fresh(), "redis control: first drains")
            async with receive:
                yield receive
        finally:
            streams = self._local.get(generation_id, [])
            if send in streams:
                streams.remove(send)
            if not streams:
                self._local.pop(generation_id, None)
                self._drain_locks.pop(generation_id, None)
            send.close()

    async def _drain(self, generation_id: str) -> None:
        if generation_id not in self._local:
            return
        lock = self._drain_locks.setdefault(generation_id, anyio.Lock())
        async with lock:
            c = self.conn
            key = c.k("ctl", generation_id)
            with c.mapped("control"):
                async with c.r.pipeline(transaction=True) as pipe:
                    pipe.lrange(key, 0, -1)
                    pipe.delete(key)
                    raw, _ = await pipe.execute()
            self._deliver(generation_id, raw)

    async def _drain_fresh(self) -> None:
        """Drain the lists of the generations listened to since, in one transaction, until
        none is left (whatever is not drained here is by the sweep, once a lease)."""
        try:
            while self._fresh:
                fresh, self._fresh = self._fresh, set()
                locks: list[tuple[str, anyio.Lock]] = []
                for gen_id in fresh:
                    if gen_id not in self._local:
                        continue
                    lock = self._drain_locks.setdefault(gen_id, anyio.Lock())
                    if not lock.locked():  # (else a drain under way takes what waits)
                        lock.acquire_nowait()
                        locks.append((gen_id, lock))
                try:
                    if locks:
                        c = self.conn
                        with c.mapped("control"):
                            async with c.r.pipeline(transaction=True) as pipe:
                                for gen_id, _ in locks:
                                    pipe.lrange(c.k("ctl", gen_id), 0, -1)
                                    pipe.delete(c.k("ctl", gen_id))
                                replies = await pipe.execute()
                        for (gen_id, _), raw in zip(locks, replies[0::2], strict=True):
                            self._deliver(gen_id, raw)
                finally:
                    for _, lock in locks:
                        lock.release()
        except StoreError as exc:
            logger.warning("redis control: draining the lists of new listeners: %s", exc)
        finally:
            self._draining_fresh = False

    def _deliver(self, generation_id: str, raw: Sequence[str]) -> None:
        for item in raw:
            try:
                msg = json.loads(item)
            except ValueError:
                continue
            for stream in list(self._local.get(generation_id, [])):
                try:
                    stream.send_nowait(msg)
                except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    pass

    async def drain_all(self) -> None:
        """Deliver whatever waits in the lists of every generation listened to here."""
        gen_ids = list(self._local)
        if not gen_ids:
            return
        c = self.conn
        with c.mapped("control"):
            async with c.r.pipeline(transaction=False) as pipe:
                for gen_id in gen_ids:
                    pipe.llen(c.k("ctl", gen_id))
                lengths = await pipe.execute()
        for gen_id, length in zip(gen_ids, lengths, strict=True):
            if length:
                await self._drain(gen_id)

    async def run(self) -> None:
        """One pub/sub connection per process: wake-ups for every generation's control list."""
        channel_prefix = self.conn.k("ctl", "")
        backoff = 0.05
        me = asyncio.current_task()
        while not self._closing() and not (me is not None and me.cancelling()):
            pubsub = self.conn.r.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(channel_prefix + "*")
                self._epoch += 1
                self._subscribed = True
                # Whatever was sent while we were not subscribed is waiting in the lists.
                await self.drain_all()
                backoff = 0.05
                swept = anyio.current_time()
                while not self._closing():
                    msg = await pubsub.get_message(timeout=1.0)
                    if me is not None and me.cancelling():
                        return  # redis-py swallowed our cancel
                    if anyio.current_time() - swept > self.lease_s:
                        # redis-py may have reconnected the subscription by itself: sweep
                        # the lists now and then so nothing sent meanwhile is stranded.
                        swept = anyio.current_time()
                        await self.drain_all()
                    if msg is None:
                        continue
                    gen_id = str(msg["channel"])[len(channel_prefix) :]
                    if gen_id not in self._local:
                        if gen_id in self._expected:
                            self._expected[gen_id] = -1  # read when it listens
                        continue
                    data = str(msg.get("data") or "")
                    if data.startswith("{"):
                        self._deliver(gen_id, [data])  # a passing message, not kept in the list
                    else:
                        await self._drain(gen_id)
            except asyncio.CancelledError:
                raise
            except (RedisError, StoreError, OSError) as exc:
                logger.warning("redis control listener: %s; reconnecting in %.2fs", exc, backoff)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                self._subscribed = False
                with anyio.CancelScope(shield=True):
                    try:
                        await pubsub.aclose()
                    except (RedisError, OSError):
                        pass

    async def claim_tool_result(self, generation_id: str, call_id: str) -> bool:
        c = self.conn
        with c.mapped("claim_tool_result"):
            won = await c.r.set(
                c.k("claim", generation_id, call_id),
                self.owner,
                nx=True,
                px=self.ttl_ms if self.ttl_ms > 0 else None,
            )
        return bool(won)
