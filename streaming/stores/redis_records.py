"""Records of :class:`~streaming.stores.redis.RedisStore`: generations (``gen:{id}`` and the
``running`` hash), blocks (``blk:{id}``), files (``file:{id}``) and model archives
(``archive:{key}``)."""

from __future__ import annotations

import base64
from collections.abc import Sequence

from streaming.model import Block, File, Generation, StreamState
from streaming.stores.archives import archive_digest, check_archive_key
from streaming.stores.redis_conn import RedisConnection

__all__ = ["RedisArchives", "RedisRecords"]

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


class RedisRecords:
    """Generations, blocks and files. A finished generation is final (never replaced by an
    older state); finished records and blocks expire after ``ttl_ms`` (0: never)."""

    def __init__(self, conn: RedisConnection, *, owner: str, ttl_ms: int) -> None:
        self.conn = conn
        self.owner = owner
        self.ttl_ms = ttl_ms

    async def put_generation(self, generation: Generation) -> None:
        """Write the record; an unfinished one is entered in ``running`` under ``owner``."""
        c = self.conn
        with c.mapped("put_generation"):
            await c.script(_PUT_GENERATION)(
                keys=[c.k("gen", generation.id), c.k("running")],
                args=[
                    generation.id,
                    generation.state.value,
                    generation.model_dump_json(),
                    "1" if generation.state.finished else "0",
                    self.owner,
                    self.ttl_ms,
                ],
            )

    async def read_generation(self, generation_id: str) -> tuple[Generation, bool] | None:
        """The record and whether it is alive (finished, or its owner holds a lease)."""
        c = self.conn
        with c.mapped("get_generation"):
            found = await c.script(_GET_GENERATION)(
                keys=[c.k("gen", generation_id), c.k("running")],
                args=[generation_id, c.k("lease", "")],
            )
        if not found:
            return None
        return Generation.model_validate_json(found[0]), bool(int(found[1]))

    async def put_blocks(self, blocks: Sequence[Block]) -> None:
        if not blocks:
            return
        c = self.conn
        with c.mapped("put_blocks"):
            async with c.r.pipeline(transaction=False) as pipe:
                for block in blocks:
                    done = block.stream_state is not StreamState.STARTED
                    px = self.ttl_ms if done and self.ttl_ms > 0 else None
                    pipe.set(c.k("blk", block.id), block.model_dump_json(), px=px)
                await pipe.execute()

    async def get_block(self, block_id: str) -> Block | None:
        with self.conn.mapped("get_block"):
            data = await self.conn.r.get(self.conn.k("blk", block_id))
        return Block.model_validate_json(data) if data else None

    async def get_blocks(self, ids: Sequence[str]) -> dict[str, Block]:
        """The blocks of ``ids`` that exist, by id."""
        blocks: dict[str, Block] = {}
        if ids:
            with self.conn.mapped("reap"):
                raw = await self.conn.r.mget([self.conn.k("blk", i) for i in ids])
            for data in raw:
                if data:
                    block = Block.model_validate_json(data)
                    blocks[block.id] = block
        return blocks

    async def put_file(self, file: File) -> None:
        c = self.conn
        meta = file.model_copy(update={"blocks": []})
        key = c.k("file", file.id)
        with c.mapped("put_file"):
            async with c.r.pipeline(transaction=True) as pipe:
                for block in file.blocks:
                    px = self.ttl_ms if self.ttl_ms > 0 else None
                    pipe.set(c.k("blk", block.id), block.model_dump_json(), px=px)
                pipe.hset(key, mapping={"data": meta.model_dump_json(), "ids": "\n".join(b.id for b in file.blocks)})
                if self.ttl_ms > 0:
                    pipe.pexpire(key, self.ttl_ms)
                await pipe.execute()

    async def get_file(self, file_id: str) -> File | None:
        c = self.conn
        with c.mapped("get_file"):
            found = await c.r.hmget(c.k("file", file_id), ["data", "ids"])
            if not found or found[0] is None:
                return None
            meta = File.model_validate_json(found[0])
            ids = found[1].split("\n") if found[1] else []
            if ids:
                raw = await c.r.mget([c.k("blk", i) for i in ids])
                meta.blocks = [Block.model_validate_json(d) for d in raw if d]
        return meta

    async def add_to_file(self, file_id: str, blocks: Sequence[Block]) -> None:
        """Append to the block order of ``file_id`` (if it exists) the blocks it lacks."""
        key = self.conn.k("file", file_id)
        with self.conn.mapped("reap"):
            raw_ids = await self.conn.r.hget(key, "ids")
            if raw_ids is not None:
                have = raw_ids.split("\n") if raw_ids else []
                merged = have + [b.id for b in blocks if b.id not in set(have)]
                if merged != have:
                    await self.conn.r.hset(key, "ids", "\n".join(merged))


class RedisArchives:
    """Model archives: a hash ``archive:<key>`` (``data`` base64, ``digest``), never expiring."""

    def __init__(self, conn: RedisConnection) -> None:
        self.conn = conn

    async def put(self, key: str, data: bytes) -> str:
        digest = archive_digest(data)
        encoded = base64.b64encode(data).decode("ascii")
        with self.conn.mapped("put_archive"):
            await self.conn.r.hset(
                self.conn.k("archive", check_archive_key(key)), mapping={"data": encoded, "digest": digest}
            )
        return digest

    async def get(self, key: str) -> bytes | None:
        with self.conn.mapped("get_archive"):
            text = await self.conn.r.hget(self.conn.k("archive", check_archive_key(key)), "data")
        return base64.b64decode(text) if text is not None else None

    async def digest(self, key: str) -> str | None:
        with self.conn.mapped("archive_digest"):
            digest = await self.conn.r.hget(self.conn.k("archive", check_archive_key(key)), "digest")
        return str(digest) if digest is not None else None
