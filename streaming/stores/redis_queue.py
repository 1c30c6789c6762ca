"""The worker queue on Redis: generations waiting for a worker, and the workers' announcements.

Keys (under the store's prefix, beside :mod:`streaming.stores.redis`'s):

- ``q:{generator}``: a Redis Stream, one entry per generation waiting for a worker that
  hosts ``generator`` (``g`` its id, ``r`` the request JSON, ``o`` its owner); read through
  the consumer group ``workers`` (one consumer per worker process). An entry is acknowledged
  and deleted once its generation has started (or ended without starting), so the length of
  the stream is the queue's depth, and the time in the id of its first entry is the oldest
  wait.
- ``workers``: a hash, worker id -> its announcement (JSON: generators, capabilities,
  concurrency, running); a worker is live while its store lease (``lease:{id}``) is.
- ``lease:q:{generator}``: renewed by every live worker hosting ``generator``; a waiting
  generation's record names ``q:{generator}`` as the process running it, so when no worker
  hosts its generator any more for a lease, the reaper fails it ``interrupted`` like any
  generation whose process died.
- ``start:{generation}``: who may start it (the gate). Set by the worker that claimed it;
  taken over only when that worker's lease has lapsed; refused once the generation is no
  longer ``waiting``. That is what makes a start happen exactly once.
- ``turns:{file}``: a list, the queued turns of a conversation in the order they were
  queued (those no longer ``waiting`` are pruned whenever it is read). ``multitask:
  reject`` is checked against it and the conversation's claim in the script that queues
  (two turns racing through two API processes cannot both pass); a worker starts an
  ``enqueue`` turn only when it is the first waiting one and the conversation is free,
  else it hands the entry back (:meth:`RedisQueue.hand_back`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from streaming.errors import StoreError
from streaming.model import Block, File, Generation
from streaming.stores.redis import RedisStore

__all__ = ["QueueItem", "QueueSnapshot", "RedisQueue", "WorkerInfo", "WorkerStore"]

GROUP = "workers"

# The queued turns of a conversation still waiting, first queued first (KEYS[1] the
# conversation's turns list, ARGV[1] the gen hash key prefix); the others are pruned.
_WAITING_TURNS = """
local function waiting_turns(turns, gen_prefix)
  local out = {}
  for _, id in ipairs(redis.call('LRANGE', turns, 0, -1)) do
    if redis.call('HGET', gen_prefix .. id, 'state') == 'waiting' then
      out[#out + 1] = id
    else
      redis.call('LREM', turns, 0, id)
    end
  end
  return out
end
"""

# KEYS: queue stream, gen hash, running hash, queue lease, the conversation's turns list,
# its claim (busy). ARGV: max depth, gen id, gen JSON, queue owner, request JSON, owner,
# lease ms, multitask ('' without a conversation), gen key prefix, lease key prefix, ttl ms.
# 1 if queued, 0 if the queue is full, else the id of the generation in the way (reject).
_ENQUEUE = _WAITING_TURNS + """
local ahead = {}
if ARGV[8] ~= '' then ahead = waiting_turns(KEYS[5], ARGV[9]) end
if ARGV[8] == 'reject' then
  local held = redis.call('GET', KEYS[6])
  if held then
    local holder, process = string.match(held, '^(%S+) ?(.*)$')
    local st = redis.call('HGET', ARGV[9] .. holder, 'state')
    if st then
      if st ~= 'succeeded' and st ~= 'failed' and st ~= 'cancelled' then return holder end
    elseif process ~= '' and redis.call('EXISTS', ARGV[10] .. process) == 1 then
      return holder
    end
  end
  if #ahead > 0 then return ahead[1] end
end
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[2], 'state', 'waiting', 'data', ARGV[3])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
if redis.call('EXISTS', KEYS[4]) == 0 then redis.call('SET', KEYS[4], '1', 'PX', ARGV[7]) end
redis.call('XADD', KEYS[1], '*', 'g', ARGV[2], 'r', ARGV[5], 'o', ARGV[6])
if ARGV[8] ~= '' then
  redis.call('RPUSH', KEYS[5], ARGV[2])
  if tonumber(ARGV[11]) > 0 then redis.call('PEXPIRE', KEYS[5], ARGV[11]) end
end
return 1
"""

# KEYS[1] the conversation's turns list; ARGV[1] the gen hash key prefix.
_TURNS = _WAITING_TURNS + """
return waiting_turns(KEYS[1], ARGV[1])
"""

# KEYS: start gate, gen hash. ARGV: me, lease key prefix, gate TTL ms.
# 1: start it; 0: a live process holds the gate; -1: it is no longer waiting (or gone).
_GATE = """
if redis.call('HGET', KEYS[2], 'state') ~= 'waiting' then return -1 end
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. holder) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"""


@dataclass(frozen=True, slots=True)
class QueueItem:
    generator: str
    entry_id: str
    generation_id: str
    request: str  # the GenerateRequest's JSON
    owner: str | None


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    id: str
    generators: list[str]
    capabilities: dict[str, dict[str, str]]
    concurrency: int
    running: int
    pid: int | None = None
    host: str | None = None
    #: per generator: ``{"chat", "description", "reason"}`` (what ``GET /generators`` lists)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """Live workers and, per generator, the queue's depth and oldest wait (seconds)."""

    workers: list[WorkerInfo] = field(default_factory=list)
    depth: dict[str, int] = field(default_factory=dict)
    oldest_wait_s: dict[str, float] = field(default_factory=dict)

    def hosted(self) -> dict[str, WorkerInfo]:
        """A live worker announcing each generator (the first found)."""
        found: dict[str, WorkerInfo] = {}
        for worker in self.workers:
            for name in worker.generators:
                found.setdefault(name, worker)
        return found


class RedisQueue:
    """The queue operations of API processes and workers, on an open :class:`RedisStore`."""

    def __init__(self, store: RedisStore, *, max_depth: int = 1000) -> None:
        self.store = store
        self.max_depth = max_depth
        self._groups: set[str] = set()
        self._enqueue = None
        self._gate = None

    @property
    def me(self) -> str:
        return self.store.owner

    def _k(self, *parts: str) -> str:
        return self.store._k(*parts)

    @property
    def _r(self) -> Any:
        return self.store._r

    def _scripts(self) -> tuple[Any, Any]:
        if self._enqueue is None or self._gate is None:
            self._enqueue = self._r.register_script(_ENQUEUE)
            self._gate = self._r.register_script(_GATE)
        return self._enqueue, self._gate

    # -- API processes --

    async def enqueue(
        self, generation: Generation, request_json: str, owner: str | None, multitask: str = "reject"
    ) -> bool | str:
        """Write ``generation`` (``waiting``) and queue it: True; False if its queue is
        full. A turn of a conversation (``file_id``) with ``multitask: reject`` is queued
        only if no generation runs on it and no other turn of it waits (checked in the
        same script): else the id of the one in the way is returned, nothing written."""
        enqueue, _ = self._scripts()
        name = generation.generator
        file_id = generation.file_id or ""
        with self.store._mapped("enqueue"):
            done = await enqueue(
                keys=[
                    self._k("q", name), self._k("gen", generation.id), self._k("running"), self._k("lease", "q", name),
                    self._k("turns", file_id), self._k("busy", file_id),
                ],
                args=[
                    self.max_depth, generation.id, generation.model_dump_json(), f"q:{name}",
                    request_json, owner or "", int(self.store.lease_s * 1000), multitask if file_id else "",
                    self._k("gen", ""), self._k("lease", ""), max(self.store.ttl_ms, 86_400_000),
                ],
            )
        if isinstance(done, str) and not done.lstrip("-").isdigit():
            return done
        return bool(int(done))

    async def waiting_turns(self, file_id: str) -> list[str]:
        """The queued turns of ``file_id`` still waiting, in the order they were queued."""
        with self.store._mapped("turns"):
            found = await self._r.eval(_TURNS, 1, self._k("turns", file_id), self._k("gen", ""))
        return [str(i) for i in found or []]

    async def snapshot(self) -> QueueSnapshot:
        """Live workers (pruning the dead ones' announcements), and the queues they serve."""
        with self.store._mapped("workers"):
            raw: dict[str, str] = await self._r.hgetall(self._k("workers"))
            ids = sorted(raw)
            alive = []
            if ids:
                async with self._r.pipeline(transaction=False) as pipe:
                    for wid in ids:
                        pipe.exists(self._k("lease", wid))
                    alive = await pipe.execute()
        workers: list[WorkerInfo] = []
        dead: list[str] = []
        for wid, flag in zip(ids, alive, strict=True):
            if not flag:
                dead.append(wid)
                continue
            try:
                data = json.loads(raw[wid])
                workers.append(WorkerInfo(
                    id=wid, generators=list(data["generators"]), capabilities=dict(data.get("capabilities") or {}),
                    concurrency=int(data["concurrency"]), running=int(data.get("running", 0)),
                    pid=data.get("pid"), host=data.get("host"), details=dict(data.get("details") or {}),
                ))
            except (ValueError, KeyError, TypeError):
                dead.append(wid)
        names = sorted({n for w in workers for n in w.generators})
        depth: dict[str, int] = {}
        oldest: dict[str, float] = {}
        with self.store._mapped("workers"):
            if dead:
                await self._r.hdel(self._k("workers"), *dead)
            if names:
                async with self._r.pipeline(transaction=False) as pipe:
                    for name in names:
                        pipe.xlen(self._k("q", name))
                        pipe.xrange(self._k("q", name), min="-", max="+", count=1)
                    replies = await pipe.execute()
                now_ms = time.time() * 1000
                for i, name in enumerate(names):
                    depth[name] = int(replies[2 * i])
                    first = replies[2 * i + 1]
                    oldest[name] = max(0.0, (now_ms - int(first[0][0].split("-")[0])) / 1000) if first else 0.0
        return QueueSnapshot(workers, depth, oldest)

    async def gate(self, generation_id: str) -> int:
        """Take the right to start ``generation_id`` (1), or find a live process has it
        (0), or that it is no longer waiting (-1)."""
        _, gate = self._scripts()
        with self.store._mapped("gate"):
            verdict = int(await gate(
                keys=[self._k("start", generation_id), self._k("gen", generation_id)],
                args=[self.me, self._k("lease", ""), max(self.store.ttl_ms, 86_400_000)],
            ))
        if verdict == 1 and isinstance(self.store, WorkerStore):
            self.store.gated.add(generation_id)
        return verdict

    # -- workers --

    async def announce(
        self, generators: list[str], capabilities: dict[str, dict[str, str]], concurrency: int, running: int,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Say (again) what this worker hosts; renew the queues' leases of its generators."""
        data = {"generators": generators, "capabilities": capabilities, "concurrency": concurrency,
                "running": running, **(extra or {})}
        px = int(self.store.lease_s * 1000)
        with self.store._mapped("announce"):
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.hset(self._k("workers"), self.me, json.dumps(data))
                for name in generators:
                    pipe.set(self._k("lease", "q", name), "1", px=px)
                await pipe.execute()

    async def withdraw(self) -> None:
        with self.store._mapped("announce"):
            await self._r.hdel(self._k("workers"), self.me)

    async def ensure_groups(self, generators: list[str]) -> None:
        for name in generators:
            if name in self._groups:
                continue
            try:
                with self.store._mapped("queue"):
                    await self._r.xgroup_create(self._k("q", name), GROUP, id="0", mkstream=True)
            except Exception as exc:  # noqa: BLE001 - BUSYGROUP: it exists already
                if not isinstance(exc.__cause__, ResponseError) and not isinstance(exc, ResponseError):
                    raise
                if "BUSYGROUP" not in str(exc):
                    raise
            self._groups.add(name)

    @staticmethod
    def _items(name: str, entries: list[Any]) -> list[QueueItem]:
        items = []
        for entry_id, fields in entries:
            if not fields:
                continue  # deleted meanwhile
            items.append(QueueItem(name, entry_id, fields["g"], fields["r"], fields.get("o") or None))
        return items

    async def take(self, generators: list[str], count: int, block_ms: int) -> list[QueueItem]:
        """Up to ``count`` entries for this worker: first those another worker claimed and
        left pending longer than a lease (it may be dead), then new ones (waiting up to
        ``block_ms`` for some)."""
        await self.ensure_groups(generators)
        items: list[QueueItem] = []
        idle_ms = int(self.store.lease_s * 1000)
        with self.store._mapped("queue"):
            for name in generators:
                if len(items) >= count:
                    return items
                reply = await self._r.xautoclaim(
                    self._k("q", name), GROUP, self.me, min_idle_time=idle_ms, start_id="0-0", count=count - len(items)
                )
                items += self._items(name, reply[1])
            if items:
                return items
            reply = await self.store._follow_client.xreadgroup(
                GROUP, self.me, {self._k("q", name): ">" for name in generators}, count=count, block=block_ms
            )
        for stream, entries in reply or []:
            name = str(stream)[len(self._k("q", "")):]
            items += self._items(name, entries)
        return items[:count] if len(items) > count else items

    async def hand_back(self, item: QueueItem, after_s: float) -> None:
        """Give the entry back to the group without starting it: it stays pending, but
        idle as if ``after_s`` from now its lease ran out, so that any worker hosting its
        generator claims it then (:meth:`take`), this one included."""
        idle_ms = max(0, int(self.store.lease_s * 1000) - int(after_s * 1000))
        with self.store._mapped("queue"):
            await self._r.xclaim(
                self._k("q", item.generator), GROUP, self.me, 0, [item.entry_id], idle=idle_ms, justid=True
            )

    async def done(self, item: QueueItem) -> None:
        """The entry's generation has started (or ended without starting): drop it."""
        key = self._k("q", item.generator)
        with self.store._mapped("queue"):
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.xack(key, GROUP, item.entry_id)
                pipe.xdel(key, item.entry_id)
                await pipe.execute()


# KEYS: start gate, gen hash, running hash. ARGV: me, gen id. If the generation is still
# waiting and ours to start, mark it started by this process (state ``running``, run here),
# so that no other worker's gate lets it through from now on: 1. Else 0.
_START_IF_OURS = """
if redis.call('HGET', KEYS[2], 'state') ~= 'waiting' then return 0 end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'state', 'running')
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
return 1
"""


class WorkerStore(RedisStore):
    """The store of a worker: before its first write of a generation it took through the
    gate, one script checks that the gate is still its own and the generation still
    ``waiting``, and marks it started by this process (its state ``running`` in Redis,
    this process running it). A worker that froze while its plugin prepared the blocks
    (longer than its lease, so another worker took the generation over and started it)
    thus starts nothing: that write raises ``StoreError`` (code ``not_ours``) before
    anything of it is stored. And once marked, no other worker's gate lets it through: a
    worker that freezes after the mark past its lease has its generation reaped
    (``interrupted``) like any it runs, never started a second time."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        #: generations this worker took the gate of and has not written yet
        self.gated: set[str] = set()

    async def _confirm(self, generation_ids: set[str]) -> None:
        for generation_id in generation_ids & self.gated:
            with self._mapped("gate"):
                ours = await self._r.eval(
                    _START_IF_OURS, 3, self._k("start", generation_id), self._k("gen", generation_id),
                    self._k("running"), self.owner, generation_id,
                )
            self.gated.discard(generation_id)
            if not int(ours):
                raise StoreError(
                    f"generation {generation_id} was started by another worker (this one stalled past its lease)",
                    code="not_ours",
                )

    async def put_blocks(self, blocks: Sequence[Block]) -> None:
        if self.gated:
            await self._confirm({b.request_id for b in blocks if b.request_id})
        await super().put_blocks(blocks)

    async def put_file(self, file: File) -> None:
        if self.gated:
            await self._confirm({b.request_id for b in file.blocks if b.request_id})
        await super().put_file(file)

    async def put_generation(self, generation: Generation) -> None:
        if self.gated:
            await self._confirm({generation.id})
        await super().put_generation(generation)

    async def put_all(self, generation: Generation, **changes: Any) -> None:
        await self._confirm_writes(generation, changes)
        await super().put_all(generation, **changes)

    async def put_started(self, generation: Generation, **changes: Any) -> None:
        await self._confirm_writes(generation, changes)
        await super().put_started(generation, **changes)

    async def _confirm_writes(self, generation: Generation, changes: dict[str, Any]) -> None:
        """The gate of the generations a ``put_all``/``put_started`` writes: its own and
        those of its blocks and its conversation's."""
        if self.gated:
            file: File | None = changes.get("file")
            blocks = [*changes.get("blocks", ()), *(file.blocks if file else ())]
            await self._confirm({generation.id} | {b.request_id for b in blocks if b.request_id})
