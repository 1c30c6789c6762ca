"""Leases, reaping and recovery of :class:`~streaming.stores.redis.RedisStore`.

Each process holds ``lease:{owner}``, a key with a TTL it renews while it lives; ``running``
maps each unfinished generation to its owner. A generation whose owner's lease expired is
failed with code ``interrupted`` by whoever notices first (the reaper of any process, a
reader of its generation, or ``recover_interrupted``), under ``reap:{id}`` (``SET NX``) so
exactly one does it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
from redis.exceptions import RedisError

from streaming.errors import StoreError
from streaming.model import Block, Generation
from streaming.stores.recovery import close_interrupted
from streaming.stores.redis_conn import BACKOFF_CAP_S, RedisConnection
from streaming.stores.redis_logs import RedisLogs
from streaming.stores.redis_records import RedisRecords

__all__ = ["RedisLeases"]

logger = logging.getLogger("streaming.stores.redis")


class RedisLeases:
    """This process's lease and the reaping of the generations of dead processes.

    ``put_blocks``, ``put_generation`` and ``publish_control`` are the store's own (a
    subclass's checks apply to the writes of a reap too).
    """

    def __init__(
        self,
        conn: RedisConnection,
        *,
        owner: str,
        lease_s: float,
        finishing_wait_s: float,
        records: RedisRecords,
        logs: RedisLogs,
        put_blocks: Callable[[Sequence[Block]], Awaitable[None]],
        put_generation: Callable[[Generation], Awaitable[None]],
        publish_control: Callable[[str, dict[str, Any]], Awaitable[None]],
        closing: Callable[[], bool],
    ) -> None:
        self.conn = conn
        self.owner = owner
        self.lease_s = lease_s
        self.finishing_wait_s = finishing_wait_s
        self.records = records
        self.logs = logs
        self._put_blocks = put_blocks
        self._put_generation = put_generation
        self._publish_control = publish_control
        self._closing = closing
        #: the run_id of the Redis last seen by a reap, and since when (loop time)
        self.redis_run: str | None = None
        self.redis_since = 0.0

    def lease_key(self, owner: str | None = None) -> str:
        return self.conn.k("lease", owner or self.owner)

    async def renew(self) -> None:
        await self.conn.r.set(self.lease_key(), "1", px=int(self.lease_s * 1000))

    async def drop(self) -> None:
        """Delete this process's lease (it is closing); errors are ignored."""
        await self.conn.delete_quietly(self.lease_key())

    async def heartbeat(self) -> None:
        """Renew the lease every third of it until the store closes."""
        while not self._closing():
            await anyio.sleep(self.lease_s / 3)
            try:
                await self.renew()
            except RedisError as exc:
                logger.warning("redis lease renewal failed: %s", exc)

    async def reaper(self) -> None:
        """Recover the generations of dead processes every half lease until the store closes."""
        while not self._closing():
            await anyio.sleep(self.lease_s / 2)
            try:
                await self.recover_interrupted()
            except (StoreError, RedisError) as exc:
                logger.warning("redis reaper: %s", exc)

    async def recover_interrupted(self) -> list[str]:
        """Fail the generations of every process whose lease expired; return their ids."""
        c = self.conn
        with c.mapped("recover_interrupted"):
            running: dict[str, str] = await c.r.hgetall(c.k("running"))
            if not running:
                return []
            owners = sorted(set(running.values()))
            alive = await c.r.exists(*[self.lease_key(o) for o in owners]) if owners else 0
        if alive == len(owners):
            return []
        with c.mapped("recover_interrupted"):
            async with c.r.pipeline(transaction=False) as pipe:
                for o in owners:
                    pipe.exists(self.lease_key(o))
                flags = await pipe.execute()
        # Never this process: it is alive, whatever Redis says (a Redis that restarted
        # without persistence lost our lease until the next renewal, not our generations).
        dead = {o for o, flag in zip(owners, flags, strict=True) if not flag and o != self.owner}
        reaped = []
        for gen_id, owner in running.items():
            if owner in dead and await self.reap(gen_id):
                reaped.append(gen_id)
        return reaped

    async def settled(self) -> bool:
        """False for ``lease_s`` and one retry interval after Redis (re)started (a new
        ``run_id``): its leases may have expired or vanished while it was down, and their
        processes need a lease to renew them before anyone takes them for dead, counting
        from the renewal still waiting out its backoff (up to ``BACKOFF_CAP_S``) when Redis
        came back."""
        with self.conn.mapped("reap"):
            run_id = (await self.conn.r.info("server")).get("run_id")
        now = anyio.current_time()
        if run_id != self.redis_run:
            first = self.redis_run is None
            self.redis_run = run_id
            # The Redis this process opened with counts as settled; a new one is not yet.
            self.redis_since = now - (self.settle_s if first else 0.0)
        return now - self.redis_since >= self.settle_s

    @property
    def settle_s(self) -> float:
        return self.lease_s + BACKOFF_CAP_S

    async def wait_for_reap(self, generation_id: str) -> None:
        """Wait (up to ``finishing_wait_s``) until nobody is reaping ``generation_id``."""
        lock = self.conn.k("reap", generation_id)
        with anyio.move_on_after(self.finishing_wait_s):
            while True:
                with self.conn.mapped("get_generation"):
                    if not await self.conn.r.exists(lock):
                        return
                await anyio.sleep(0.01)

    async def reap(self, generation_id: str) -> bool:
        """Fail one generation nobody runs any more; False if someone else did or it lives."""
        if not await self.settled():
            return False
        c = self.conn
        lock = c.k("reap", generation_id)
        with c.mapped("reap"):
            if not await c.r.set(lock, self.owner, nx=True, px=30_000):
                return False
        try:
            found = await self.records.read_generation(generation_id)
            if found is None:
                with c.mapped("reap"):
                    await c.r.hdel(c.k("running"), generation_id)
                return False
            gen, alive = found
            if alive or gen.state.finished:
                return False
            with c.mapped("reap"):
                if await c.r.hget(c.k("running"), generation_id) == self.owner:
                    # Ours, and we run: Redis lost our lease (it restarted empty). Renew it
                    # rather than fail a generation this process is streaming.
                    await self.renew()
                    return False
            events = await self.logs.read(generation_id)
            ids = list(gen.output_block_ids)
            ids += [str(ev.data["block"]["id"]) for ev in events if ev.type == "block.created"]
            blocks = await self.records.get_blocks(ids)
            fixed = close_interrupted(
                gen,
                blocks,
                events,
                message="the server process running this generation stopped (its lease expired)",
                sent=await self.logs.sent_mark(generation_id),
            )
            if fixed.events:
                await self.logs.append(generation_id, fixed.events, after_loss=True)
            await self._put_blocks(fixed.blocks)
            if gen.file_id:
                # Blocks made mid-stream join the conversation (the final write never came).
                await self.records.add_to_file(gen.file_id, fixed.blocks)
            await self._put_generation(fixed.generation)
            logger.warning("generation %s: its process died; marked failed (interrupted)", generation_id)
            # A process that was only frozen reads this when it thaws and ends its own copy,
            # even if its plugin never writes again (its next write would tell it too).
            try:
                await self._publish_control(generation_id, {"type": "interrupted"})
            except StoreError as exc:
                logger.warning("could not tell the owner of %s: %s", generation_id, exc)
            return True
        except StoreError as exc:
            logger.warning("could not reap generation %s: %s", generation_id, exc)
            return False
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await c.r.delete(lock)
                except RedisError:
                    pass  # it expires by itself
