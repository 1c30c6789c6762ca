"""Conversation claims of :class:`~streaming.stores.redis.RedisStore`: ``busy:{file}`` names
the generation extending a conversation and its process (``SET NX``; taken over once that
generation has ended or its process died, deleted at its end)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from streaming.model import Generation
from streaming.stores.redis_conn import RedisConnection
from streaming.stores.redis_logs import RedisLogs

__all__ = ["RedisFileClaims"]

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


class RedisFileClaims:
    """One generation at a time extends a conversation, across every process.

    ``lookup`` is the store's ``get_generation`` (it reaps a generation whose process died,
    so its blocks are in the conversation before the claim is taken over).
    """

    def __init__(
        self,
        conn: RedisConnection,
        *,
        owner: str,
        ttl_ms: int,
        finishing_wait_s: float,
        logs: RedisLogs,
        lookup: Callable[[str], Awaitable[Generation | None]],
    ) -> None:
        self.conn = conn
        self.owner = owner
        self.ttl_ms = ttl_ms
        self.finishing_wait_s = finishing_wait_s
        self.logs = logs
        self._lookup = lookup

    async def claim(self, file_id: str, generation_id: str) -> str | None:
        """None if claimed for ``generation_id``, else the id of the generation holding it."""
        c = self.conn
        key = c.k("busy", file_id)
        mine = f"{generation_id} {self.owner}"
        # A claim left by a dead process goes away with the rest of its records.
        px = self.ttl_ms if self.ttl_ms > 0 else None
        holder = "another generation"
        finishing_until: float | None = None
        with c.mapped("claim_file"):
            for _ in range(1000):
                if await c.r.set(key, mine, nx=True, px=px):
                    return None
                held: str | None = await c.r.get(key)
                if held is None:
                    continue  # released meanwhile
                holder, _, process = held.partition(" ")
                if holder == generation_id:
                    return None
                if await self._is_stale(holder, process):
                    # Its generation has ended (or its process died): take it over,
                    # unless someone else did first.
                    if await c.script(_SWAP_CLAIM)(keys=[key], args=[held, mine, px or 0]):
                        return None
                    continue
                if not await self.logs.ended(holder):
                    return holder
                # It has sent its terminal event and is writing its last state (a client
                # that continues at once must not be told "busy"): wait a little.
                now = anyio.current_time()
                finishing_until = finishing_until or now + self.finishing_wait_s
                if now >= finishing_until:
                    return holder
                await anyio.sleep(0.02)
            return holder

    async def _is_stale(self, holder: str, process: str) -> bool:
        # A dead process's generation is reaped on the way (or waited for, if another
        # process is reaping it), so its blocks are in the conversation before it is taken.
        gen = await self._lookup(holder)
        if gen is None:
            # Not written yet (it is starting) or expired: alive while its process is.
            return not await self.conn.r.exists(self.conn.k("lease", process))
        return gen.state.finished

    async def release(self, file_id: str, generation_id: str) -> None:
        """Drop ``generation_id``'s claim on ``file_id`` (if it still holds it)."""
        c = self.conn
        with c.mapped("release_file"):
            await c.script(_DROP_CLAIM)(keys=[c.k("busy", file_id)], args=[f"{generation_id} {self.owner}"])
