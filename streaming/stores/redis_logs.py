"""Event logs of :class:`~streaming.stores.redis.RedisStore`: ``log:{id}``, a Redis Stream whose
entry ids are ``0-{seq}`` (each entry ``e`` = the event's JSON, replayed byte for byte), and
the ``sent:{id}`` marks of what reached clients before it was stored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import anyio

from streaming.errors import StoreError
from streaming.events import Event
from streaming.model import Generation
from streaming.stores.follow import follow_log
from streaming.stores.redis_conn import RedisConnection

__all__ = ["LOG_END", "NEXT_FRAME", "RedisLogs", "raise_swallowed_cancel", "refusal"]

# A Lua function of the scripts that append: the last seq of log ``key`` (0: empty) and
# whether its last event is terminal (the log is closed).
LOG_END = """
local function log_end(key)
  local top = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if #top == 0 then return 0, false end
  local head = string.sub(top[1][2][2], 1, 40)
  local closed = string.find(head, '"generation.completed"', 1, true)
    or string.find(head, '"generation.failed"', 1, true)
    or string.find(head, '"generation.cancelled"', 1, true)
  return tonumber(string.match(top[1][1], '-(%d+)$')), closed ~= nil
end
"""

# A Lua function of the scripts that take events as their SSE frames: the JSON of the frame
# in ``blob`` at ``pos``, and where the next frame starts. A frame is ``id: …\nevent: …\ndata:
# <JSON>\n\n``; JSON has no raw newline, so it ends at its first blank line.
NEXT_FRAME = """
local function next_frame(blob, pos)
  local _, data = string.find(blob, '\\ndata: ', pos, true)
  local stop = string.find(blob, '\\n\\n', data + 1, true)
  return string.sub(blob, data + 1, stop - 1), stop + 2
end
"""

# KEYS[1] log; ARGV[1] first seq, ARGV[2] ttl ms (0: none), ARGV[3] '1' if the batch ends
# the log ('2': ends it and may start past a gap, a recovery after events were lost),
# ARGV[4..] event JSON. Returns -1 when appended, else the stored last seq (or -2 when the
# log is already closed).
_APPEND = LOG_END + """
local last, closed = log_end(KEYS[1])
if closed then return -2 end
local first = tonumber(ARGV[1])
if first ~= last + 1 and not (ARGV[3] == '2' and first > last) then return last end
for i = 4, #ARGV do
  redis.call('XADD', KEYS[1], '0-' .. (first + i - 4), 'e', ARGV[i])
end
if ARGV[3] ~= '0' and tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return -1
"""

# The same for several logs at once, packed so that a call has four arguments however many
# logs and events it carries (redis-py packs each argument in Python: one per event made
# the packing cost more than the round trip). ARGV[1] ttl ms (0: none), ARGV[2] the prefix
# of log keys, ARGV[3] numbers, per log: first seq, 1 if the batch ends the log else 0,
# the number of events n, the byte length of the generation id; ARGV[4] the bytes: per log
# its id, then its n events as their SSE frames (the JSON stored is cut out of each:
# ``NEXT_FRAME``; no per-event work in Python). Returns '' when every log took its events,
# else "k r k r ...": for the k-th log (from 1) refused, what _APPEND returns (its stored
# last seq, or -2: closed).
_APPEND_MANY = LOG_END + NEXT_FRAME + """
local ttl = tonumber(ARGV[1])
local prefix = ARGV[2]
local blob = ARGV[4]
local nums = {}
for x in string.gmatch(ARGV[3], '%d+') do nums[#nums + 1] = tonumber(x) end
local out = {}
local t, pos, k = 1, 1, 0
while t <= #nums do
  k = k + 1
  local first, ending, n, idlen = nums[t], nums[t + 1], nums[t + 2], nums[t + 3]
  t = t + 4
  local key = prefix .. string.sub(blob, pos, pos + idlen - 1)
  pos = pos + idlen
  local res = -1
  local last, closed = log_end(key)
  if closed then res = -2 elseif first ~= last + 1 then res = last end
  for i = 0, n - 1 do
    local json
    json, pos = next_frame(blob, pos)
    if res == -1 then redis.call('XADD', key, '0-' .. (first + i), 'e', json) end
  end
  if res == -1 then
    if ending ~= 0 and ttl > 0 then redis.call('PEXPIRE', key, ttl) end
  else
    out[#out + 1] = k .. ' ' .. res
  end
end
return table.concat(out, ' ')
"""

#: at most this many events go into one call of _APPEND_MANY (Redis runs a script alone)
MANY_EVENTS = 4096


def refusal(generation_id: str, last: int, first: int) -> StoreError | None:
    """The error of an append the script refused (``last`` its reply), or None."""
    if last == -1:
        return None
    if last == -2:
        return StoreError(
            f"the event log of {generation_id} has ended; it takes no more events",
            code="log_closed",
            suggestion="another process failed this generation: it found no lease of this process "
            "in Redis (this process stopped renewing it in time, or Redis lost its data)",
        )
    return StoreError(
        f"event log of {generation_id} would have a gap: has {last}, got seq {first}",
        code="log_gap",
        details={"stored_seq": last},
    )


def raise_swallowed_cancel() -> None:
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


def events_of(entries: Sequence[Any]) -> list[Event]:
    """The events of stream entries ``(id, {"e": json})``."""
    return [Event.from_json(fields["e"]) for _id, fields in entries]


class RedisLogs:
    """Appending (atomic: ``seq`` continuity, nothing after a terminal event), reading by
    cursor, following live, and the sent marks. Ended logs expire after ``ttl_ms``."""

    def __init__(self, conn: RedisConnection, *, ttl_ms: int, read_batch: int) -> None:
        self.conn = conn
        self.ttl_ms = ttl_ms
        self.read_batch = read_batch

    async def append(self, generation_id: str, events: Sequence[Event], *, after_loss: bool = False) -> None:
        """``after_loss``: the recovery's ending, numbered past events that were lost. Its
        events may skip seqs themselves (a log that was never written gets its
        ``generation.started`` at seq 1, and the rest past the sent mark): each run of
        consecutive seqs is appended under its own entry ids, in order.

        Raises:
            StoreError: code ``log_closed`` or ``log_gap`` (see ``Store.append_events``).
        """
        if not events:
            return
        if after_loss:
            run = 1
            while run < len(events) and events[run].seq == events[run - 1].seq + 1:
                run += 1
            if run < len(events):
                await self.append(generation_id, events[:run], after_loss=True)
                await self.append(generation_id, events[run:], after_loss=True)
                return
        c = self.conn
        ending = "2" if after_loss else "1" if events[-1].terminal else "0"
        with c.mapped("append_events"):
            last = await c.script(_APPEND)(
                keys=[c.k("log", generation_id)],
                args=[events[0].seq, self.ttl_ms, ending, *(ev.to_json() for ev in events)],
            )
        refused = refusal(generation_id, int(last), events[0].seq)
        if refused is not None:
            raise refused

    async def append_many(self, logs: Sequence[tuple[str, Sequence[Event]]]) -> list[Exception | None]:
        """The events of several generations, one script call (one round trip) for up to
        ``MANY_EVENTS`` events; per generation None, or the ``log_gap``/``log_closed``
        error that refused its events (see ``Store.append_many``).

        Raises:
            StoreError: the call failed as a whole (``store_unavailable`` after retries).
        """
        c = self.conn
        results: list[Exception | None] = [None] * len(logs)
        chunks: list[list[int]] = []  # indices in ``logs``, one script call each
        size = MANY_EVENTS
        for i, (_, events) in enumerate(logs):
            if events:
                if size + len(events) > MANY_EVENTS:
                    chunks.append([])
                    size = 0
                chunks[-1].append(i)
                size += len(events) + 3
        for n, chunk in enumerate(chunks):
            numbers: list[str] = []
            data: list[bytes] = []
            for i in chunk:
                generation_id, events = logs[i]
                gid = generation_id.encode()
                numbers.append(f"{events[0].seq} {1 if events[-1].terminal else 0} {len(events)} {len(gid)}")
                data.append(gid)
                data += [ev.to_sse() for ev in events]
            try:
                with c.mapped("append_events"):
                    reply = await c.script(_APPEND_MANY)(
                        keys=[], args=[self.ttl_ms, c.k("log", ""), " ".join(numbers), b"".join(data)]
                    )
            except StoreError as exc:
                if n == 0:
                    raise
                for i in (i for later in chunks[n:] for i in later):
                    results[i] = exc  # the calls before landed; this one and the rest did not
                break
            refused = str(reply).split()
            for k, last in zip(refused[::2], refused[1::2], strict=True):
                i = chunk[int(k) - 1]
                results[i] = refusal(logs[i][0], int(last), logs[i][1][0].seq)
        return results

    async def reserve_seq(self, generation_id: str, seq: int) -> None:
        # Only the process running the generation sets it, one step after another.
        c = self.conn
        with c.mapped("reserve_seq"):
            await c.r.set(c.k("sent", generation_id), seq, px=self.ttl_ms if self.ttl_ms > 0 else None)

    async def sent_mark(self, generation_id: str) -> int:
        """The highest ``seq`` reserved for ``generation_id`` (0: none)."""
        with self.conn.mapped("reap"):
            sent = await self.conn.r.get(self.conn.k("sent", generation_id))
        return int(sent) if sent else 0

    async def read(self, generation_id: str, after: int = 0, limit: int | None = None) -> list[Event]:
        c = self.conn
        with c.mapped("read_events"):
            entries = await c.r.xrange(c.k("log", generation_id), min=f"0-{max(after, 0) + 1}", max="+", count=limit)
        return events_of(entries)

    async def ended(self, generation_id: str) -> bool:
        """Whether the log's last event is terminal."""
        last = await self.conn.r.xrevrange(self.conn.k("log", generation_id), count=1)
        return bool(last) and events_of(last)[-1].terminal

    def follow(
        self,
        generation_id: str,
        after: int,
        *,
        block_s: float,
        presence_s: float,
        ping: Callable[[str], Awaitable[None]],
        lookup: Callable[[str], Awaitable[Generation | None]],
    ) -> AsyncIterator[list[Event]]:
        """Batches after ``after`` until the terminal event, each read blocking in XREAD up
        to ``block_s``; ``ping`` (the presence message) is sent every ``presence_s``, and
        ``lookup`` (the record, which may reap it) tells whether an idle log has ended."""
        c = self.conn
        key = c.k("log", generation_id)
        block_ms = max(1, int(min(block_s, presence_s) * 1000))
        pinged = -presence_s

        async def read(after: int) -> list[Event]:  # waits up to block_ms itself
            nonlocal pinged
            raise_swallowed_cancel()
            now = anyio.current_time()
            if now - pinged >= presence_s:
                pinged = now
                await ping(generation_id)
            with c.mapped("follow"):
                reply = await c.follow_client.xread({key: f"0-{max(after, 0)}"}, count=self.read_batch, block=block_ms)
            raise_swallowed_cancel()
            entries = reply[0][1] if reply else []
            return events_of(entries) if entries else []

        async def nothing() -> None:
            return None

        async def ended(after: int) -> bool:
            # Nothing new for a while: is anyone still running it? (This may reap it.)
            gen = await lookup(generation_id)
            return gen is None or (gen.state.finished and after >= gen.last_seq)  # gone, or its log expired

        return follow_log(read, nothing, after, ended)
