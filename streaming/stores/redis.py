"""``redis://host:port/db``: the distributed store; several server processes share it.

Layout (every key under a prefix, ``streaming:`` by default):

- ``gen:{id}``: a hash (``state``, ``data`` = the generation's JSON);
- ``blk:{id}``: a block's JSON; ``file:{id}``: a hash (``data``, ``ids`` = block order);
- ``log:{id}``: the event log, a Redis Stream whose entry ids are ``0-{seq}`` (so reading
  after a cursor is ``XRANGE``/``XREAD`` from ``0-{after}``), each entry ``e`` = the event's
  JSON, encoded once by the writer and replayed byte for byte;
- ``running``: a hash, generation id -> the id of the process (store) running it;
  ``lease:{owner}``: that process's lease, a key with a TTL it renews while it lives;
- ``ctl:{id}``: a list of control messages (cancel, tool results) for the process running
  a generation, woken by a pub/sub message on the channel of the same name;
- ``claim:{gen}:{call}``: a tool call answered (``SET NX``: exactly one answer wins);
- ``busy:{file}``: the generation extending a conversation and its process (``SET NX``;
  taken over once that generation has ended or its process died, deleted at its end).

Appending checks ``seq`` continuity and refuses writes after a terminal event atomically (a
Lua script), and a finished generation record is never replaced by an older state. A
process whose lease expired is dead: whoever notices first (the reaper task of any process,
a reader of its generation, or ``recover_interrupted``) fails its generations with code
``interrupted``, aborting their open blocks and closing their logs. Finished logs,
generations and blocks expire after ``ttl`` seconds. Every command is retried with
exponential backoff on connection errors (a Redis restart); one that still fails raises
:class:`~streaming.errors.StoreUnavailableError` (code ``store_unavailable``).

URL query parameters (all optional): ``ttl`` (seconds finished records are kept, default
86400; 0 keeps them forever), ``lease`` (seconds, default 10), ``prefix``, ``retry``
(seconds of retrying before giving up, default 10), ``pool`` (connections for commands,
default 64; followers each hold one more while they wait on a log).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import redis.asyncio as aredis
from anyio.streams.memory import MemoryObjectSendStream
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streaming.errors import InvalidRequestError, StoreError, StoreUnavailableError
from streaming.events import Event
from streaming.model import Block, File, Generation, StreamState
from streaming.stores.base import Store
from streaming.stores.follow import follow_log
from streaming.stores.recovery import close_interrupted
from streaming.tasks import TaskOwner

__all__ = ["RedisStore"]

logger = logging.getLogger("streaming.stores.redis")

_OURS = ("ttl", "lease", "prefix", "retry", "pool")

# KEYS[1] log; ARGV[1] first seq, ARGV[2] ttl ms (0: none), ARGV[3] '1' if the batch ends
# the log ('2': ends it and may start past a gap, a recovery after events were lost),
# ARGV[4..] event JSON. Returns -1 when appended, else the stored last seq (or -2 when the
# log is already closed).
_APPEND = """
local last = 0
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #top > 0 then
  last = tonumber(string.match(top[1][1], '-(%d+)$'))
  local head = string.sub(top[1][2][2], 1, 40)
  if string.find(head, '"generation.completed"', 1, true)
    or string.find(head, '"generation.failed"', 1, true)
    or string.find(head, '"generation.cancelled"', 1, true) then
    return -2
  end
end
local first = tonumber(ARGV[1])
if first ~= last + 1 and not (ARGV[3] == '2' and first > last) then return last end
for i = 4, #ARGV do
  redis.call('XADD', KEYS[1], '0-' .. (first + i - 4), 'e', ARGV[i])
end
if ARGV[3] ~= '0' and tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return -1
"""

# KEYS[1] gen hash, KEYS[2] running hash; ARGV: id, state, json, finished '1'/'0', owner, ttl ms.
_PUT_GENERATION = """
local cur = redis.call('HGET', KEYS[1], 'state')
if cur == 'succeeded' or cur == 'failed' or cur == 'cancelled' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'data', ARGV[3])
if ARGV[4] == '1' then
  redis.call('HDEL', KEYS[2], ARGV[1])
  if tonumber(ARGV[6]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[6]) end
else
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[5])
end
return 1
"""

# KEYS[1] a claim; ARGV[1] the value it must have, ARGV[2] the new one, ARGV[3] its TTL
# in ms (0: none). 1 if swapped.
_SWAP_CLAIM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[3]) > 0 then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else redis.call('SET', KEYS[1], ARGV[2]) end
return 1
"""

# KEYS[1] a claim; ARGV[1] the value it must have to be deleted.
_DROP_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS[1] gen hash, KEYS[2] running hash; ARGV[1] id, ARGV[2] lease key prefix.
# Returns nil, or {data, alive}: alive is 0 when it is unfinished and nobody holds a lease on it.
_GET_GENERATION = """
local d = redis.call('HGET', KEYS[1], 'data')
if not d then return nil end
local st = redis.call('HGET', KEYS[1], 'state')
if st == 'running' or st == 'waiting' then
  local owner = redis.call('HGET', KEYS[2], ARGV[1])
  if owner and redis.call('EXISTS', ARGV[2] .. owner) == 1 then return {d, 1} end
  return {d, 0}
end
return {d, 1}
"""


def _split_url(url: str) -> tuple[str, dict[str, str]]:
    """The URL for redis-py (our parameters removed) and our parameters."""
    parts = urlsplit(url)
    theirs, ours = [], {}
    for key, value in parse_qsl(parts.query):
        if key in _OURS:
            ours[key] = value
        else:
            theirs.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(theirs))), ours



def _raise_swallowed_cancel() -> None:
    """Raise the cancellation of the current task if a blocking command swallowed it.

    redis-py's blocking commands (XREAD with ``block``) can swallow a CancelledError that
    arrives at the wrong moment (redis/redis-py#2028, #2551). A follower whose client left
    would then go on reading an idle log, and go on telling the running process that
    someone follows it, so ``on_disconnect=cancel`` never fired; the pump above it stops
    only at its next batch, which an idle log never sends. ``Task.cancelling()`` still
    counts the request that was swallowed.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError

class RedisStore(Store):
    """Generations, blocks, files, event logs and control in Redis, shared by processes.

    Args:
        url: ``redis://host:port/db`` (``rediss://`` and ``unix://`` too), see the module doc.
        ttl_s: seconds finished logs, generations and blocks are kept (0: forever).
        lease_s: a process that has not renewed its lease for this long is dead.
        retry_s: how long a command is retried on connection errors before giving up.
        block_s: longest a follower blocks on the log before checking the lease.
        presence_s: how often a follower tells the running process it is there (keep it
            well under the servers' ``disconnect_grace_s``).
        pool_size: connections for commands (more callers wait their turn).
        max_followers: connections for followers blocked on a log (one each).
        prefix: prepended to every key and channel.
    """

    shared = True
    keeps_sent_marks = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        ttl_s: float | None = None,
        lease_s: float | None = None,
        retry_s: float | None = None,
        block_s: float = 1.0,
        presence_s: float = 1.0,
        pool_size: int | None = None,
        max_followers: int = 100_000,
        prefix: str | None = None,
        read_batch: int = 4096,
    ) -> None:
        self._redis_url, params = _split_url(url)
        try:
            ttl = float(params.get("ttl", 86400.0)) if ttl_s is None else ttl_s
            lease = float(params.get("lease", 10.0)) if lease_s is None else lease_s
            retry = float(params.get("retry", 10.0)) if retry_s is None else retry_s
            pool = int(params.get("pool", 64)) if pool_size is None else pool_size
        except ValueError as exc:
            raise InvalidRequestError(f"bad redis URL parameter in {url!r}: {exc}") from exc
        if lease <= 0:
            raise InvalidRequestError("the redis lease must be positive")
        self.url = url
        self.ttl_ms = int(ttl * 1000)
        self.lease_s = lease
        self.retry_s = retry
        self.block_s = min(block_s, lease / 2)
        # How long a claim waits for a generation that has ended to write its last state.
        self.finishing_wait_s = 5.0
        self.presence_s = presence_s
        self.pool_size = max(pool, 4)
        self.max_followers = max_followers
        self.prefix = params.get("prefix", "streaming:") if prefix is None else prefix
        self.read_batch = read_batch
        #: this process's identity as an owner of generations
        self.owner = uuid.uuid4().hex
        #: the run_id of the Redis last seen by a reap, and since when (loop time)
        self._redis_run: str | None = None
        self._redis_since = 0.0
        self._client: Any = None
        self._follow_client: Any = None
        self._tasks = TaskOwner("redis store", logger)
        self._closing = False
        self._local: dict[str, list[MemoryObjectSendStream[dict[str, Any]]]] = defaultdict(list)
        self._drain_locks: dict[str, anyio.Lock] = {}
        parts = urlsplit(self._redis_url)
        self._where = parts.hostname or parts.path or "redis"

    # -- keys --

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @property
    def _r(self) -> Any:
        # Any: redis-py's stubs cannot tell that decode_responses=True gives str, not bytes.
        if self._client is None:
            raise StoreError("the redis store is not open", suggestion="call open() first")
        return self._client

    @contextmanager
    def _mapped(self, what: str) -> Iterator[None]:
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailableError(
                f"redis at {self._where} is unavailable ({what}): {exc}",
                suggestion="check that Redis is running and reachable; commands were retried with backoff",
            ) from exc
        except RedisError as exc:
            raise StoreError(f"redis error ({what}): {exc}") from exc

    # -- lifecycle --

    async def open(self) -> None:
        """Connect, take this process's lease, start the heartbeat, reaper and control listener.

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        if self._client is not None:
            return
        base, cap = 0.05, 2.0
        retries, waited = 0, 0.0
        while waited < self.retry_s and retries < 100:
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
            self._redis_url, max_connections=self.pool_size, timeout=None, **options
        )
        client = aredis.Redis(connection_pool=pools)
        client.auto_close_connection_pool = True
        followers = aredis.ConnectionPool.from_url(
            self._redis_url, max_connections=self.max_followers, **options
        )
        self._follow_client = aredis.Redis(connection_pool=followers)
        self._follow_client.auto_close_connection_pool = True
        self._client = client
        self._closing = False
        self._append = client.register_script(_APPEND)
        self._put_gen = client.register_script(_PUT_GENERATION)
        self._get_gen = client.register_script(_GET_GENERATION)
        self._swap_claim = client.register_script(_SWAP_CLAIM)
        self._drop_claim = client.register_script(_DROP_CLAIM)
        try:
            with self._mapped("connect"):
                await self._renew_lease()
        except StoreError:
            self._client = None
            await client.aclose()
            await self._follow_client.aclose()
            raise
        self._tasks.spawn(self._heartbeat(), name="lease heartbeat")
        self._tasks.spawn(self._reaper(), name="reaper")
        self._tasks.spawn(self._control_loop(), name="control listener")

    async def close(self) -> None:
        """Stop the background tasks, drop the lease, disconnect."""
        client = self._client
        if client is None:
            return
        self._closing = True
        # redis-py's pubsub read can swallow a cancel: the loops also check _closing.
        await self._tasks.aclose(timeout_s=self.block_s + 2.0)
        try:
            await client.delete(self._k("lease", self.owner))
        except RedisError:
            pass
        self._client = None
        await client.aclose()
        await self._follow_client.aclose()

    async def _renew_lease(self) -> None:
        await self._r.set(self._k("lease", self.owner), "1", px=int(self.lease_s * 1000))

    async def _heartbeat(self) -> None:
        while not self._closing:
            await anyio.sleep(self.lease_s / 3)
            try:
                await self._renew_lease()
            except RedisError as exc:
                logger.warning("redis lease renewal failed: %s", exc)

    async def _reaper(self) -> None:
        while not self._closing:
            await anyio.sleep(self.lease_s / 2)
            try:
                await self.recover_interrupted()
            except (StoreError, RedisError) as exc:
                logger.warning("redis reaper: %s", exc)

    # -- records --

    async def put_generation(self, generation: Generation) -> None:
        finished = generation.state.finished
        with self._mapped("put_generation"):
            await self._put_gen(
                keys=[self._k("gen", generation.id), self._k("running")],
                args=[
                    generation.id,
                    generation.state.value,
                    generation.model_dump_json(),
                    "1" if finished else "0",
                    self.owner,
                    self.ttl_ms,
                ],
            )

    async def _read_generation(self, generation_id: str) -> tuple[Generation, bool] | None:
        with self._mapped("get_generation"):
            found = await self._get_gen(
                keys=[self._k("gen", generation_id), self._k("running")],
                args=[generation_id, self._k("lease", "")],
            )
        if not found:
            return None
        return Generation.model_validate_json(found[0]), bool(int(found[1]))

    async def get_generation(self, generation_id: str) -> Generation | None:
        """The record; one whose process died is failed (``interrupted``) on the way."""
        found = await self._read_generation(generation_id)
        if found is None:
            return None
        gen, alive = found
        if alive:
            return gen
        if not await self._reap(generation_id):
            # Someone else is reaping it: it ends the log before it writes the record,
            # so wait for it rather than answer "running" for a log that has ended.
            await self._wait_for_reap(generation_id)
        again = await self._read_generation(generation_id)
        return again[0] if again else None

    async def _wait_for_reap(self, generation_id: str) -> None:
        lock = self._k("reap", generation_id)
        with anyio.move_on_after(self.finishing_wait_s):
            while True:
                with self._mapped("get_generation"):
                    if not await self._r.exists(lock):
                        return
                await anyio.sleep(0.01)

    async def put_blocks(self, blocks: Sequence[Block]) -> None:
        if not blocks:
            return
        with self._mapped("put_blocks"):
            async with self._r.pipeline(transaction=False) as pipe:
                for block in blocks:
                    done = block.stream_state is not StreamState.STARTED
                    px = self.ttl_ms if done and self.ttl_ms > 0 else None
                    pipe.set(self._k("blk", block.id), block.model_dump_json(), px=px)
                await pipe.execute()

    async def get_block(self, block_id: str) -> Block | None:
        with self._mapped("get_block"):
            data = await self._r.get(self._k("blk", block_id))
        return Block.model_validate_json(data) if data else None

    async def put_file(self, file: File) -> None:
        meta = file.model_copy(update={"blocks": []})
        key = self._k("file", file.id)
        with self._mapped("put_file"):
            async with self._r.pipeline(transaction=True) as pipe:
                for block in file.blocks:
                    px = self.ttl_ms if self.ttl_ms > 0 else None
                    pipe.set(self._k("blk", block.id), block.model_dump_json(), px=px)
                pipe.hset(key, mapping={"data": meta.model_dump_json(), "ids": "\n".join(b.id for b in file.blocks)})
                if self.ttl_ms > 0:
                    pipe.pexpire(key, self.ttl_ms)
                await pipe.execute()

    async def get_file(self, file_id: str) -> File | None:
        with self._mapped("get_file"):
            found = await self._r.hmget(self._k("file", file_id), ["data", "ids"])
            if not found or found[0] is None:
                return None
            meta = File.model_validate_json(found[0])
            ids = found[1].split("\n") if found[1] else []
            if ids:
                raw = await self._r.mget([self._k("blk", i) for i in ids])
                meta.blocks = [Block.model_validate_json(d) for d in raw if d]
        return meta

    # -- event logs --

    async def append_events(self, generation_id: str, events: Sequence[Event]) -> None:
        await self._append_log(generation_id, events)

    async def _append_log(self, generation_id: str, events: Sequence[Event], *, after_loss: bool = False) -> None:
        """``after_loss``: the recovery's ending, numbered past events that were lost."""
        if not events:
            return
        ending = "2" if after_loss else "1" if events[-1].terminal else "0"
        with self._mapped("append_events"):
            last = await self._append(
                keys=[self._k("log", generation_id)],
                args=[
                    events[0].seq,
                    self.ttl_ms,
                    ending,
                    *(ev.to_json() for ev in events),
                ],
            )
        if int(last) == -2:
            raise StoreError(
                f"the event log of {generation_id} has ended; it takes no more events",
                code="log_closed",
                suggestion="another process failed this generation: it found no lease of this process "
                "in Redis (this process stopped renewing it in time, or Redis lost its data)",
            )
        if int(last) != -1:
            raise StoreError(
                f"event log of {generation_id} would have a gap: has {last}, got seq {events[0].seq}",
                code="log_gap",
                details={"stored_seq": int(last)},
            )

    async def reserve_seq(self, generation_id: str, seq: int) -> None:
        # Only the process running the generation sets it, one step after another.
        with self._mapped("reserve_seq"):
            await self._r.set(self._k("sent", generation_id), seq, px=self.ttl_ms if self.ttl_ms > 0 else None)

    @staticmethod
    def _events(entries: Sequence[Any]) -> list[Event]:
        return [Event.from_json(fields["e"]) for _id, fields in entries]

    async def read_events(
        self, generation_id: str, after: int = 0, limit: int | None = None
    ) -> list[Event]:
        with self._mapped("read_events"):
            entries = await self._r.xrange(
                self._k("log", generation_id), min=f"0-{max(after, 0) + 1}", max="+", count=limit
            )
        return self._events(entries)

    def follow(self, generation_id: str, after: int = 0) -> AsyncIterator[list[Event]]:
        """Also tells the running process, every ``presence_s``, that someone here follows
        it (a ``{"type": "subscriber"}`` control message, not kept): a generation with
        ``on_disconnect=cancel`` is not cancelled while a client streams it elsewhere."""
        key = self._k("log", generation_id)
        block_ms = max(1, int(min(self.block_s, self.presence_s) * 1000))
        pinged = -self.presence_s

        async def read(after: int) -> list[Event]:  # waits up to block_ms itself
            nonlocal pinged
            _raise_swallowed_cancel()
            now = anyio.current_time()
            if now - pinged >= self.presence_s:
                pinged = now
                await self._publish_presence(generation_id)
            with self._mapped("follow"):
                reply = await self._follow_client.xread({key: f"0-{max(after, 0)}"}, count=self.read_batch, block=block_ms)
            _raise_swallowed_cancel()
            entries = reply[0][1] if reply else []
            return self._events(entries) if entries else []

        async def nothing() -> None:
            return None

        async def ended(after: int) -> bool:
            # Nothing new for a while: is anyone still running it? (This may reap it.)
            gen = await self.get_generation(generation_id)
            return gen is None or (gen.state.finished and after >= gen.last_seq)  # gone, or its log expired

        return follow_log(read, nothing, after, ended)

    # -- control --

    async def _publish_presence(self, generation_id: str) -> None:
        try:
            await self._r.publish(self._k("ctl", generation_id), '{"type":"subscriber"}')
        except RedisError as exc:  # a missed ping only risks the disconnect grace
            logger.warning("redis presence of %s: %s", generation_id, exc)

    async def publish_control(self, generation_id: str, message: dict[str, Any]) -> None:
        key = self._k("ctl", generation_id)
        with self._mapped("publish_control"):
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.rpush(key, json.dumps(message))
                pipe.pexpire(key, max(self.ttl_ms, int(self.lease_s * 1000) * 10) or 86_400_000)
                pipe.publish(key, "1")
                await pipe.execute()

    @asynccontextmanager
    async def control(self, generation_id: str) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](64)
        self._local[generation_id].append(send)
        try:
            # Messages sent before we listened wait in the list.
            try:
                await self._drain(generation_id)
            except StoreError as exc:
                logger.warning("redis control of %s: %s", generation_id, exc)
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
            key = self._k("ctl", generation_id)
            with self._mapped("control"):
                async with self._r.pipeline(transaction=True) as pipe:
                    pipe.lrange(key, 0, -1)
                    pipe.delete(key)
                    raw, _ = await pipe.execute()
            self._deliver(generation_id, raw)

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

    async def _drain_all(self) -> None:
        gen_ids = list(self._local)
        if not gen_ids:
            return
        with self._mapped("control"):
            async with self._r.pipeline(transaction=False) as pipe:
                for gen_id in gen_ids:
                    pipe.llen(self._k("ctl", gen_id))
                lengths = await pipe.execute()
        for gen_id, length in zip(gen_ids, lengths, strict=True):
            if length:
                await self._drain(gen_id)

    async def _control_loop(self) -> None:
        """One pub/sub connection per process: wake-ups for every generation's control list."""
        channel_prefix = self._k("ctl", "")
        backoff = 0.05
        me = asyncio.current_task()
        while not self._closing and not (me is not None and me.cancelling()):
            pubsub = self._r.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(channel_prefix + "*")
                # Whatever was sent while we were not subscribed is waiting in the lists.
                await self._drain_all()
                backoff = 0.05
                swept = anyio.current_time()
                while not self._closing:
                    msg = await pubsub.get_message(timeout=1.0)
                    if me is not None and me.cancelling():
                        return  # redis-py swallowed our cancel
                    if anyio.current_time() - swept > self.lease_s:
                        # redis-py may have reconnected the subscription by itself: sweep
                        # the lists now and then so nothing sent meanwhile is stranded.
                        swept = anyio.current_time()
                        await self._drain_all()
                    if msg is None:
                        continue
                    gen_id = str(msg["channel"])[len(channel_prefix) :]
                    if gen_id not in self._local:
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
                with anyio.CancelScope(shield=True):
                    try:
                        await pubsub.aclose()
                    except (RedisError, OSError):
                        pass

    async def claim_tool_result(self, generation_id: str, call_id: str) -> bool:
        with self._mapped("claim_tool_result"):
            won = await self._r.set(
                self._k("claim", generation_id, call_id),
                self.owner,
                nx=True,
                px=self.ttl_ms if self.ttl_ms > 0 else None,
            )
        return bool(won)

    # -- conversations: ``busy:<file id>`` names the generation extending it and its process --

    async def claim_file(self, file_id: str, generation_id: str) -> str | None:
        key = self._k("busy", file_id)
        mine = f"{generation_id} {self.owner}"
        # A claim left by a dead process goes away with the rest of its records.
        px = self.ttl_ms if self.ttl_ms > 0 else None
        holder = "another generation"
        finishing_until: float | None = None
        with self._mapped("claim_file"):
            for _ in range(1000):
                if await self._r.set(key, mine, nx=True, px=px):
                    return None
                held: str | None = await self._r.get(key)
                if held is None:
                    continue  # released meanwhile
                holder, _, process = held.partition(" ")
                if holder == generation_id:
                    return None
                if await self._claim_is_stale(holder, process):
                    # Its generation has ended (or its process died): take it over,
                    # unless someone else did first.
                    if await self._swap_claim(keys=[key], args=[held, mine, px or 0]):
                        return None
                    continue
                if not await self._log_ended(holder):
                    return holder
                # It has sent its terminal event and is writing its last state (a client
                # that continues at once must not be told "busy"): wait a little.
                now = anyio.current_time()
                finishing_until = finishing_until or now + self.finishing_wait_s
                if now >= finishing_until:
                    return holder
                await anyio.sleep(0.02)
            return holder

    async def _log_ended(self, generation_id: str) -> bool:
        last = await self._r.xrevrange(self._k("log", generation_id), count=1)
        return bool(last) and self._events(last)[-1].terminal

    async def _claim_is_stale(self, holder: str, process: str) -> bool:
        # A dead process's generation is reaped on the way (or waited for, if another
        # process is reaping it), so its blocks are in the conversation before it is taken.
        gen = await self.get_generation(holder)
        if gen is None:
            # Not written yet (it is starting) or expired: alive while its process is.
            return not await self._r.exists(self._k("lease", process))
        return gen.state.finished

    async def release_file(self, file_id: str, generation_id: str) -> None:
        with self._mapped("release_file"):
            await self._drop_claim(keys=[self._k("busy", file_id)], args=[f"{generation_id} {self.owner}"])

    # -- model archives: a hash ``archive:<key>`` (``data`` base64, ``digest``), never expiring --

    async def put_archive(self, key: str, data: bytes) -> str:
        from streaming.stores.archives import archive_digest, check_archive_key

        digest = archive_digest(data)
        encoded = base64.b64encode(data).decode("ascii")
        with self._mapped("put_archive"):
            await self._r.hset(self._k("archive", check_archive_key(key)), mapping={"data": encoded, "digest": digest})
        return digest

    async def get_archive(self, key: str) -> bytes | None:
        from streaming.stores.archives import check_archive_key

        with self._mapped("get_archive"):
            text = await self._r.hget(self._k("archive", check_archive_key(key)), "data")
        return base64.b64decode(text) if text is not None else None

    async def archive_digest(self, key: str) -> str | None:
        from streaming.stores.archives import check_archive_key

        with self._mapped("archive_digest"):
            digest = await self._r.hget(self._k("archive", check_archive_key(key)), "digest")
        return str(digest) if digest is not None else None

    # -- leases and recovery --

    async def recover_interrupted(self) -> list[str]:
        """Fail the generations of every process whose lease expired; return their ids."""
        with self._mapped("recover_interrupted"):
            running: dict[str, str] = await self._r.hgetall(self._k("running"))
            if not running:
                return []
            owners = sorted(set(running.values()))
            alive = await self._r.exists(*[self._k("lease", o) for o in owners]) if owners else 0
        if alive == len(owners):
            return []
        with self._mapped("recover_interrupted"):
            async with self._r.pipeline(transaction=False) as pipe:
                for o in owners:
                    pipe.exists(self._k("lease", o))
                flags = await pipe.execute()
        # Never this process: it is alive, whatever Redis says (a Redis that restarted
        # without persistence lost our lease until the next renewal, not our generations).
        dead = {o for o, flag in zip(owners, flags, strict=True) if not flag and o != self.owner}
        reaped = []
        for gen_id, owner in running.items():
            if owner in dead and await self._reap(gen_id):
                reaped.append(gen_id)
        return reaped

    async def _settled(self) -> bool:
        """False for ``lease_s`` after Redis (re)started (a new ``run_id``): its leases may
        have expired or vanished while it was down, and their processes need a lease to
        renew them before anyone takes them for dead."""
        with self._mapped("reap"):
            run_id = (await self._r.info("server")).get("run_id")
        now = anyio.current_time()
        if run_id != self._redis_run:
            first = self._redis_run is None
            self._redis_run = run_id
            # The Redis this process opened with counts as settled; a new one is not yet.
            self._redis_since = now - (self.lease_s if first else 0.0)
        return now - self._redis_since >= self.lease_s

    async def _reap(self, generation_id: str) -> bool:
        """Fail one generation nobody runs any more; False if someone else did or it lives."""
        if not await self._settled():
            return False
        lock = self._k("reap", generation_id)
        with self._mapped("reap"):
            if not await self._r.set(lock, self.owner, nx=True, px=30_000):
                return False
        try:
            found = await self._read_generation(generation_id)
            if found is None:
                with self._mapped("reap"):
                    await self._r.hdel(self._k("running"), generation_id)
                return False
            gen, alive = found
            if alive or gen.state.finished:
                return False
            with self._mapped("reap"):
                if await self._r.hget(self._k("running"), generation_id) == self.owner:
                    # Ours, and we run: Redis lost our lease (it restarted empty). Renew it
                    # rather than fail a generation this process is streaming.
                    await self._renew_lease()
                    return False
            events = await self.read_events(generation_id)
            ids = list(gen.output_block_ids)
            ids += [str(ev.data["block"]["id"]) for ev in events if ev.type == "block.created"]
            blocks: dict[str, Block] = {}
            if ids:
                with self._mapped("reap"):
                    raw = await self._r.mget([self._k("blk", i) for i in ids])
                for data in raw:
                    if data:
                        block = Block.model_validate_json(data)
                        blocks[block.id] = block
            with self._mapped("reap"):
                sent = await self._r.get(self._k("sent", generation_id))
            fixed = close_interrupted(
                gen,
                blocks,
                events,
                message="the server process running this generation stopped (its lease expired)",
                sent=int(sent) if sent else 0,
            )
            if fixed.events:
                await self._append_log(generation_id, fixed.events, after_loss=True)
            await self.put_blocks(fixed.blocks)
            if gen.file_id:
                # Blocks made mid-stream join the conversation (the final write never came).
                file_key = self._k("file", gen.file_id)
                with self._mapped("reap"):
                    raw_ids = await self._r.hget(file_key, "ids")
                    if raw_ids is not None:
                        have = raw_ids.split("\n") if raw_ids else []
                        merged = have + [b.id for b in fixed.blocks if b.id not in set(have)]
                        if merged != have:
                            await self._r.hset(file_key, "ids", "\n".join(merged))
            await self.put_generation(fixed.generation)
            logger.warning("generation %s: its process died; marked failed (interrupted)", generation_id)
            # A process that was only frozen reads this when it thaws and ends its own copy,
            # even if its plugin never writes again (its next write would tell it too).
            try:
                await self.publish_control(generation_id, {"type": "interrupted"})
            except StoreError as exc:
                logger.warning("could not tell the owner of %s: %s", generation_id, exc)
            return True
        except StoreError as exc:
            logger.warning("could not reap generation %s: %s", generation_id, exc)
            return False
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self._r.delete(lock)
                except RedisError:
                    pass  # it expires by itself
