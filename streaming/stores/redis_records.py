"""Records of :class:`~streaming.stores.redis.RedisStore`: generations (``gen:{id}`` and the
``running`` hash), blocks (``blk:{id}``), files (``file:{id}``) and model archives
(``archive:{key}``)."""

from __future__ import annotations

import base64
from collections.abc import Sequence

from streaming.events import Event
from streaming.model import Block, File, Generation, StreamState
from streaming.stores.archives import archive_digest, check_archive_key
from streaming.stores.recovery import fold_tail
from streaming.stores.redis_conn import RedisConnection
from streaming.stores.redis_logs import LOG_END, refusal

__all__ = ["RedisArchives", "RedisRecords"]

# A Lua function: write a generation's record (hash ``gkey``: state, data) unless the one
# stored has finished (a finished record is final); enter it in the ``running`` hash under
# ``owner``, or take it out (and let the record expire after ``ttl`` ms) once finished.
PUT_RECORD = """
local function put_record(gkey, running, id, state, json, finished, owner, ttl)
  local cur = redis.call('HGET', gkey, 'state')
  if cur == 'succeeded' or cur == 'failed' or cur == 'cancelled' then return 0 end
  redis.call('HSET', gkey, 'state', state, 'data', json)
  if finished == '1' then
    redis.call('HDEL', running, id)
    if tonumber(ttl) > 0 then redis.call('PEXPIRE', gkey, ttl) end
  else
    redis.call('HSET', running, id, owner)
  end
  return 1
end
"""

# KEYS[1] gen hash, KEYS[2] running hash; ARGV: id, state, json, finished '1'/'0', owner, ttl ms.
_PUT_GENERATION = PUT_RECORD + """
return put_record(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
"""

# Everything a generation changed, at once: its new events, blocks, conversation and record
# (and, once finished with its conversation, the conversation's claim if it still holds it:
# ``busy:{file}`` = "{id} {owner}", as RedisFileClaims.release drops it).
# A generation that starts (``Store.put_started``) also claims its new conversation and
# sets its first sent mark (``sent:{id}``) here.
# KEYS[1] log, KEYS[2] gen hash, KEYS[3] running hash, KEYS[4] file hash, KEYS[5] the
# conversation's claim, KEYS[6] the sent mark, KEYS[7..] blocks;
# ARGV[1..6] as _PUT_GENERATION's, ARGV[7] first seq, ARGV[8] '1' if the events end the log,
# ARGV[9] number of events n, ARGV[10] file data ('' for no file), ARGV[11] file block ids,
# ARGV[12] '1' to claim the conversation, ARGV[13] the sent mark (0: none),
# ARGV[14..13+n] the events, then per block its JSON and '1' if it expires (after ttl ms).
# Returns -1 when written, else (nothing written) what _APPEND returns.
_PUT_ALL = LOG_END + PUT_RECORD + """
local ttl = tonumber(ARGV[6])
local n = tonumber(ARGV[9])
if n > 0 then
  local last, closed = log_end(KEYS[1])
  if closed then return -2 end
  local first = tonumber(ARGV[7])
  if first ~= last + 1 then return last end
  for i = 0, n - 1 do
    redis.call('XADD', KEYS[1], '0-' .. (first + i), 'e', ARGV[14 + i])
  end
  if ARGV[8] ~= '0' and ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
end
if ARGV[12] == '1' then
  if ttl > 0 then
    redis.call('SET', KEYS[5], ARGV[1] .. ' ' .. ARGV[5], 'NX', 'PX', ttl)
  else
    redis.call('SET', KEYS[5], ARGV[1] .. ' ' .. ARGV[5], 'NX')
  end
end
if ARGV[13] ~= '0' then
  if ttl > 0 then redis.call('SET', KEYS[6], ARGV[13], 'PX', ttl) else redis.call('SET', KEYS[6], ARGV[13]) end
end
local a = 14 + n
for k = 7, #KEYS do
  if ARGV[a + 1] == '1' and ttl > 0 then
    redis.call('SET', KEYS[k], ARGV[a], 'PX', ttl)
  else
    redis.call('SET', KEYS[k], ARGV[a])
  end
  a = a + 2
end
if ARGV[10] ~= '' then
  redis.call('HSET', KEYS[4], 'data', ARGV[10], 'ids', ARGV[11])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[4], ttl) end
  if ARGV[4] == '1' and redis.call('GET', KEYS[5]) == ARGV[1] .. ' ' .. ARGV[5] then
    redis.call('DEL', KEYS[5])
  end
end
put_record(KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
return -1
"""

# KEYS[1] gen hash, KEYS[2] running hash, KEYS[3] its log; ARGV[1] id, ARGV[2] lease key
# prefix. Returns nil, or {data, alive, logged}: alive is 0 when it is unfinished and nobody
# holds a lease on it; logged, for an unfinished one, the last seq of its stored log (its
# record is rewritten when more than text happens, not for every flush of text).
_GET_GENERATION = """
local d = redis.call('HGET', KEYS[1], 'data')
if not d then return nil end
local st = redis.call('HGET', KEYS[1], 'state')
if st == 'running' or st == 'waiting' then
  local logged = 0
  local top = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
  if #top > 0 then logged = tonumber(string.match(top[1][1], '-(%d+)$')) end
  local owner = redis.call('HGET', KEYS[2], ARGV[1])
  if owner and redis.call('EXISTS', ARGV[2] .. owner) == 1 then return {d, 1, logged} end
  return {d, 0, logged}
end
return {d, 1, 0}
"""

# KEYS: block keys; ARGV[1] the key prefix. Returns {blocks, tails}: blocks[i] the JSON of
# KEYS[i] (false if none); tails, for the generation of each block still streaming, its id
# and the entries of its log after the last seq its record names (the record is written
# after the blocks, so the blocks stored hold at least that much of the log). Atomic:
# nothing is written between reading a block, its record and its log.
_GET_BLOCKS = """
local blocks = {}
local tails = {}
local seen = {}
for i, key in ipairs(KEYS) do
  local b = redis.call('GET', key)
  blocks[i] = b or false
  if b and string.find(b, '"started"', 1, true) then
    local ok, o = pcall(cjson.decode, b)
    if ok and type(o) == 'table' then
      local gen = o['request_id'] or o['requestId']
      local st = o['stream_state'] or o['streamState']
      if st == 'started' and type(gen) == 'string' and not seen[gen] then
        seen[gen] = true
        local after = 0
        local d = redis.call('HGET', ARGV[1] .. 'gen:' .. gen, 'data')
        if d then
          local ok2, r = pcall(cjson.decode, d)
          if ok2 and type(r) == 'table' and tonumber(r['last_seq']) then after = tonumber(r['last_seq']) end
        end
        tails[#tails + 1] = gen
        tails[#tails + 1] = redis.call('XRANGE', ARGV[1] .. 'log:' .. gen, '0-' .. (after + 1), '+')
      end
    end
  end
end
return {blocks, tails}
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

    async def put_all(
        self, generation: Generation, events: Sequence[Event], blocks: Sequence[Block], file: File | None,
        *, claim: bool = False, reserve: int = 0,
    ) -> None:
        """``Store.put_all`` in one script: atomic, one round trip; with ``claim`` and
        ``reserve``, ``Store.put_started`` (a new conversation claimed for the generation,
        its first sent mark). A refused write (``log_gap``, ``log_closed``) writes none of it.

        Raises:
            StoreError: code ``log_gap`` or ``log_closed`` (nothing was written).
        """
        c = self.conn
        ttl = self.ttl_ms
        # Each block once: a block of the conversation expires like the file (put_file);
        # another once it has ended (put_blocks).
        expiring: dict[str, tuple[Block, bool]] = {
            b.id: (b, b.stream_state is not StreamState.STARTED) for b in blocks
        }
        file_data = file_ids = ""
        if file is not None:
            expiring.update((b.id, (b, True)) for b in file.blocks)
            file_data = file.model_copy(update={"blocks": []}).model_dump_json()
            file_ids = "\n".join(b.id for b in file.blocks)
        gen_id = generation.id
        file_id = file.id if file else ""
        keys = [
            c.k("log", gen_id), c.k("gen", gen_id), c.k("running"), c.k("file", file_id), c.k("busy", file_id),
            c.k("sent", gen_id),
        ]
        keys += [c.k("blk", block_id) for block_id in expiring]
        args: list[str | int | bytes] = [
            gen_id, generation.state.value, generation.model_dump_json(),
            "1" if generation.state.finished else "0", self.owner, ttl,
            events[0].seq if events else 0, "1" if events and events[-1].terminal else "0", len(events),
            file_data, file_ids, "1" if claim and file is not None else "0", reserve,
        ]
        args += [ev.json_bytes() for ev in events]
        for block, expires in expiring.values():
            args += (block.model_dump_json(), "1" if expires else "0")
        with c.mapped("put_all"):
            last = await c.script(_PUT_ALL)(keys=keys, args=args)
        refused = refusal(gen_id, int(last), events[0].seq if events else 0)
        if refused is not None:
            raise refused

    async def read_generation(self, generation_id: str) -> tuple[Generation, bool] | None:
        """The record and whether it is alive (finished, or its owner holds a lease)."""
        c = self.conn
        with c.mapped("get_generation"):
            found = await c.script(_GET_GENERATION)(
                keys=[c.k("gen", generation_id), c.k("running"), c.k("log", generation_id)],
                args=[generation_id, c.k("lease", "")],
            )
        if not found:
            return None
        gen = Generation.model_validate_json(found[0])
        logged = int(found[2])
        if logged > gen.last_seq:
            gen.last_seq = logged  # (a running one's record says how far it was when last written)
        return gen, bool(int(found[1]))

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
        blocks = await self.read_blocks([block_id], "get_block")
        return blocks[0]

    async def read_blocks(self, ids: Sequence[str], what: str) -> list[Block | None]:
        """The blocks of ``ids`` (None where there is none), one round trip; a block still
        streaming gets the text its generation's log has beyond its stored snapshot."""
        c = self.conn
        with c.mapped(what):
            raw, tails = await c.script(_GET_BLOCKS)(keys=[c.k("blk", i) for i in ids], args=[c.prefix])
        blocks = [Block.model_validate_json(d) if d else None for d in raw]
        if tails:
            found = [b for b in blocks if b is not None]
            for n in range(0, len(tails), 2):
                gen_id = tails[n]
                # (entries as a script returns them: [id, [field, value]])
                events = (Event.from_json(fields[1]) for _id, fields in tails[n + 1])
                fold_tail((b for b in found if b.request_id == gen_id), events)
        return blocks

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
            meta.blocks = [b for b in await self.read_blocks(ids, "get_file") if b is not None]
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
