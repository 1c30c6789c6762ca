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
from streaming.stores.redis_logs import LOG_END, NEXT_FRAME, refusal

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
# ``busy:{file}`` = "{id} {owner}", as RedisFileClaims.release drops it). A generation that
# starts (``Store.put_started``) also claims its new conversation and sets its first sent
# mark (``sent:{id}``) here. Packed in three arguments, whatever it carries (redis-py packs
# each argument in Python, and one per field cost more than the round trip):
# ARGV[1] numbers: first seq, 1 if the events end the log, the number of events n,
# 1 if the record is finished, 1 to claim the conversation, the sent mark (0: none), ttl
# ms (0: none), the byte lengths of the record's JSON, the file's JSON (0: no file) and its
# block ids, the number of blocks m, then per block the length of its JSON and 1 if it
# expires (after ttl ms);
# ARGV[2] names, one a line: the key prefix, the generation's id, the file's id, the
# owner, the state, then the m block ids;
# ARGV[3] the bytes: the record's JSON, the file's JSON and block ids, the n events' SSE
# frames (what follows ``data: `` is stored: ``NEXT_FRAME``), then the blocks' JSON.
# Returns -1 when written, else (nothing written) what _APPEND returns.
_PUT_ALL = LOG_END + NEXT_FRAME + PUT_RECORD + """
local nums = {}
for x in string.gmatch(ARGV[1], '%d+') do nums[#nums + 1] = tonumber(x) end
local names, at = {}, 1
while true do
  local nl = string.find(ARGV[2], '\\n', at, true)
  if not nl then names[#names + 1] = string.sub(ARGV[2], at); break end
  names[#names + 1] = string.sub(ARGV[2], at, nl - 1)
  at = nl + 1
end
local first, ending, n, finished, claim, mark, ttl = nums[1], nums[2], nums[3], nums[4], nums[5], nums[6], nums[7]
local prefix, id, file, owner, state = names[1], names[2], names[3], names[4], names[5]
local blob = ARGV[3]
local log, gkey, running = prefix .. 'log:' .. id, prefix .. 'gen:' .. id, prefix .. 'running'
local fkey, busy = prefix .. 'file:' .. file, prefix .. 'busy:' .. file
local pos = 1
local json = string.sub(blob, pos, pos + nums[8] - 1)
pos = pos + nums[8]
local fdata = string.sub(blob, pos, pos + nums[9] - 1)
pos = pos + nums[9]
local fids = string.sub(blob, pos, pos + nums[10] - 1)
pos = pos + nums[10]
if n > 0 then
  local last, closed = log_end(log)
  if closed then return -2 end
  if first ~= last + 1 then return last end
  for i = 0, n - 1 do
    local json
    json, pos = next_frame(blob, pos)
    redis.call('XADD', log, '0-' .. (first + i), 'e', json)
  end
  if ending ~= 0 and ttl > 0 then redis.call('PEXPIRE', log, ttl) end
end
local mine = id .. ' ' .. owner
if claim ~= 0 then
  if ttl > 0 then redis.call('SET', busy, mine, 'NX', 'PX', ttl) else redis.call('SET', busy, mine, 'NX') end
end
if mark ~= 0 then
  local sent = prefix .. 'sent:' .. id
  if ttl > 0 then redis.call('SET', sent, mark, 'PX', ttl) else redis.call('SET', sent, mark) end
end
for k = 1, nums[11] do
  local len, expires = nums[10 + 2 * k], nums[11 + 2 * k]
  local key = prefix .. 'blk:' .. names[5 + k]
  local data = string.sub(blob, pos, pos + len - 1)
  pos = pos + len
  if expires ~= 0 and ttl > 0 then redis.call('SET', key, data, 'PX', ttl) else redis.call('SET', key, data) end
end
if nums[9] > 0 then
  redis.call('HSET', fkey, 'data', fdata, 'ids', fids)
  if ttl > 0 then redis.call('PEXPIRE', fkey, ttl) end
  if finished ~= 0 and redis.call('GET', busy) == mine then
    redis.call('DEL', busy)
  end
end
put_record(gkey, running, id, state, json, tostring(finished), owner, ttl)
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
        # Each block once: a block of the conversation expires like the file (put_file);
        # another once it has ended (put_blocks).
        expiring: dict[str, tuple[Block, bool]] = {
            b.id: (b, b.stream_state is not StreamState.STARTED) for b in blocks
        }
        file_data = file_ids = b""
        if file is not None:
            expiring.update((b.id, (b, True)) for b in file.blocks)
            file_data = file.meta_json().encode()
            file_ids = "\n".join(b.id for b in file.blocks).encode()
        gen_id = generation.id
        record = generation.model_dump_json().encode()
        numbers = [
            events[0].seq if events else 0, 1 if events and events[-1].terminal else 0, len(events),
            1 if generation.state.finished else 0, 1 if claim and file is not None else 0, reserve,
            self.ttl_ms, len(record), len(file_data), len(file_ids), len(expiring),
        ]
        names = [c.prefix, gen_id, file.id if file else "", self.owner, generation.state.value, *expiring]
        data = [record, file_data, file_ids, *(ev.to_sse() for ev in events)]
        for block, expires in expiring.values():
            js = block.model_dump_json().encode()
            numbers += (len(js), 1 if expires else 0)
            data.append(js)
        args = [" ".join(map(str, numbers)), "\n".join(names), b"".join(data)]
        # (Concurrent writes share a round trip: a burst of starts, or of ends.)
        last = await c.batched(_PUT_ALL, "put_all")(args)
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
        key = c.k("file", file.id)
        with c.mapped("put_file"):
            async with c.r.pipeline(transaction=True) as pipe:
                for block in file.blocks:
                    px = self.ttl_ms if self.ttl_ms > 0 else None
                    pipe.set(c.k("blk", block.id), block.model_dump_json(), px=px)
                pipe.hset(key, mapping={"data": file.meta_json(), "ids": "\n".join(b.id for b in file.blocks)})
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
