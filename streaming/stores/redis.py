"""``redis://host:port/db``: the distributed store; several server processes share it.

Layout (every key under a prefix, ``streaming:`` by default):

- ``gen:{id}``: a hash (``state``, ``data`` = the generation's JSON);
- ``blk:{id}``: a block's JSON; ``file:{id}``: a hash (``data``, ``ids`` = block order).
  A running generation's blocks and record are rewritten when more than text happens
  (and every 1,024 events), not for every flush of text: a read of a block still
  streaming adds the text of its generation's log after the seq its record names (one
  script, atomic), so another process sees its text as far as the log has it;
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
Lua script; the runtime appends the new events of every generation it runs in one call per
flush, ``append_many``), and a finished generation record is never replaced by an older state. A
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

The store composes one collaborator per concept: :mod:`~streaming.stores.redis_conn` (URL,
keys, pools, scripts, errors), :mod:`~streaming.stores.redis_records` (generations, blocks,
files, archives), :mod:`~streaming.stores.redis_logs` (event logs, following, sent marks),
:mod:`~streaming.stores.redis_leases` (leases, reaping, recovery),
:mod:`~streaming.stores.redis_control` (control messages, presence, tool claims) and
:mod:`~streaming.stores.redis_claims` (conversation claims).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any

from streaming.errors import InvalidRequestError, StoreError
from streaming.events import Event
from streaming.model import Block, File, Generation
from streaming.stores.base import Store
from streaming.stores.redis_claims import RedisFileClaims
from streaming.stores.redis_conn import RedisConnection, split_url
from streaming.stores.redis_control import RedisControl
from streaming.stores.redis_leases import RedisLeases
from streaming.stores.redis_logs import RedisLogs
from streaming.stores.redis_records import RedisArchives, RedisRecords
from streaming.tasks import TaskOwner

__all__ = ["RedisStore"]

logger = logging.getLogger("streaming.stores.redis")


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
    #: a block read while it streams gets the text of the log beyond its stored snapshot
    #: (the runtime then rewrites a running generation's blocks only when more than text
    #: happens; see ``StoreWriter._records_changed``)
    folds_text = True

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
        redis_url, params = split_url(url)
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
        self._conn = RedisConnection(redis_url, self.prefix)
        self._tasks = TaskOwner("redis store", logger)
        #: (conversation, generation) whose claim a final put_all dropped
        self._released: set[tuple[str, str]] = set()
        self._closing = False
        self._records = RedisRecords(self._conn, owner=self.owner, ttl_ms=self.ttl_ms)
        self._archives = RedisArchives(self._conn)
        self._logs = RedisLogs(self._conn, ttl_ms=self.ttl_ms, read_batch=read_batch)
        self._control = RedisControl(
            self._conn, owner=self.owner, ttl_ms=self.ttl_ms, lease_s=lease, closing=self._is_closing,
            spawn=self._tasks.spawn,
        )
        self._leases = RedisLeases(
            self._conn,
            owner=self.owner,
            lease_s=lease,
            finishing_wait_s=self.finishing_wait_s,
            records=self._records,
            logs=self._logs,
            put_blocks=self.put_blocks,
            put_generation=self.put_generation,
            publish_control=self.publish_control,
            closing=self._is_closing,
        )
        self._file_claims = RedisFileClaims(
            self._conn,
            owner=self.owner,
            ttl_ms=self.ttl_ms,
            finishing_wait_s=self.finishing_wait_s,
            logs=self._logs,
            lookup=self.get_generation,
        )

    def _is_closing(self) -> bool:
        return self._closing

    # -- the connection (also used by the worker tier's queue, on this store) --

    def _k(self, *parts: str) -> str:
        return self._conn.k(*parts)

    @property
    def _r(self) -> Any:
        return self._conn.r

    @property
    def _client(self) -> Any:
        return self._conn.client

    @property
    def _follow_client(self) -> Any:
        return self._conn.follow_client

    @_follow_client.setter
    def _follow_client(self, client: Any) -> None:
        self._conn.follow_client = client

    def _mapped(self, what: str) -> AbstractContextManager[None]:
        return self._conn.mapped(what)

    # -- lifecycle --

    async def open(self) -> None:
        """Connect, take this process's lease, start the heartbeat, reaper and control listener.

        Raises:
            StoreUnavailableError: Redis cannot be reached.
        """
        if self._conn.client is not None:
            return
        self._conn.connect(pool_size=self.pool_size, max_followers=self.max_followers, retry_s=self.retry_s)
        self._closing = False
        try:
            with self._mapped("connect"):
                await self._leases.renew()
        except StoreError:
            await self._conn.aclose()
            raise
        self._tasks.spawn(self._leases.heartbeat(), name="lease heartbeat")
        self._tasks.spawn(self._leases.reaper(), name="reaper")
        self._tasks.spawn(self._control.run(), name="control listener")

    async def close(self) -> None:
        """Stop the background tasks, drop the lease, disconnect."""
        if self._conn.client is None:
            return
        self._closing = True
        # redis-py's pubsub read can swallow a cancel: the loops also check _closing.
        await self._tasks.aclose(timeout_s=self.block_s + 2.0)
        await self._leases.drop()
        await self._conn.aclose()

    # -- records --

    async def put_generation(self, generation: Generation) -> None:
        await self._records.put_generation(generation)

    async def put_all(self, generation: Generation, **changes: Any) -> None:
        """One script (atomic, one round trip): events, blocks, conversation, record; the
        final write (finished, with its conversation) also drops the conversation's claim,
        so :meth:`release_file` then has nothing to send."""
        file: File | None = changes.get("file")
        await self._records.put_all(generation, changes.get("events", ()), changes.get("blocks", ()), file)
        if file is not None and generation.state.finished:
            self._released.add((file.id, generation.id))

    async def put_started(
        self,
        generation: Generation,
        *,
        blocks: Sequence[Block] = (),
        file: File,
        claim: bool = False,
        reserve: int = 0,
        handed_over: bool = False,
    ) -> None:
        """One script, as :meth:`put_all`, that also claims the conversation and sets
        the first sent mark. Its control list is new too: the control listener will not
        read it when the generation starts listening, unless a message came meanwhile."""
        self._control.expect(generation.id)
        try:
            await self._records.put_all(generation, (), blocks, file, claim=claim, reserve=reserve)
        except BaseException:
            self._control.unexpect(generation.id)
            raise

    async def get_generation(self, generation_id: str) -> Generation | None:
        """The record; one whose process died is failed (``interrupted``) on the way."""
        found = await self._records.read_generation(generation_id)
        if found is None:
            return None
        gen, alive = found
        if alive:
            return gen
        if not await self._leases.reap(generation_id):
            # Someone else is reaping it: it ends the log before it writes the record,
            # so wait for it rather than answer "running" for a log that has ended.
            await self._leases.wait_for_reap(generation_id)
        again = await self._records.read_generation(generation_id)
        return again[0] if again else None

    async def put_blocks(self, blocks: Sequence[Block]) -> None:
        await self._records.put_blocks(blocks)

    async def get_block(self, block_id: str) -> Block | None:
        return await self._records.get_block(block_id)

    async def put_file(self, file: File) -> None:
        await self._records.put_file(file)

    async def get_file(self, file_id: str) -> File | None:
        return await self._records.get_file(file_id)

    # -- event logs --

    async def append_events(self, generation_id: str, events: Sequence[Event]) -> None:
        await self._logs.append(generation_id, events)

    async def append_many(self, logs: Sequence[tuple[str, Sequence[Event]]]) -> list[Exception | None]:
        """One script call (one round trip) for the events of many generations."""
        return await self._logs.append_many(logs)

    async def reserve_seq(self, generation_id: str, seq: int) -> None:
        await self._logs.reserve_seq(generation_id, seq)

    async def read_events(
        self, generation_id: str, after: int = 0, limit: int | None = None
    ) -> list[Event]:
        return await self._logs.read(generation_id, after, limit)

    def follow(self, generation_id: str, after: int = 0) -> AsyncIterator[list[Event]]:
        """Also tells the running process, every ``presence_s``, that someone here follows
        it (a ``{"type": "subscriber"}`` control message, not kept): a generation with
        ``on_disconnect=cancel`` is not cancelled while a client streams it elsewhere."""
        return self._logs.follow(
            generation_id,
            after,
            block_s=self.block_s,
            presence_s=self.presence_s,
            ping=self._control.publish_presence,
            lookup=self.get_generation,
        )

    # -- control --

    async def publish_control(self, generation_id: str, message: dict[str, Any]) -> None:
        await self._control.publish(generation_id, message)

    def control(self, generation_id: str) -> AbstractAsyncContextManager[AsyncIterator[dict[str, Any]]]:
        return self._control.listen(generation_id)

    async def claim_tool_result(self, generation_id: str, call_id: str) -> bool:
        return await self._control.claim_tool_result(generation_id, call_id)

    # -- conversations --

    async def claim_file(self, file_id: str, generation_id: str) -> str | None:
        return await self._file_claims.claim(file_id, generation_id)

    async def release_file(self, file_id: str, generation_id: str) -> None:
        if (file_id, generation_id) in self._released:
            self._released.discard((file_id, generation_id))  # dropped with its final write
            return
        await self._file_claims.release(file_id, generation_id)

    # -- recovery --

    async def recover_interrupted(self) -> list[str]:
        """Fail the generations of every process whose lease expired; return their ids."""
        return await self._leases.recover_interrupted()

    # -- model archives --

    async def put_archive(self, key: str, data: bytes) -> str:
        return await self._archives.put(key, data)

    async def get_archive(self, key: str) -> bytes | None:
        return await self._archives.get(key)

    async def archive_digest(self, key: str) -> str | None:
        return await self._archives.digest(key)
