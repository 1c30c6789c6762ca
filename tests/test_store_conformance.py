"""One conformance suite, run against every store: memory, sqlite, and a real redis-server.

The memory store is the reference. Durable stores (sqlite, redis) also recover a generation
whose process died; shared stores (redis) also carry control messages and leases between
processes (here: between two store instances, each one "process").
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from streaming.errors import InvalidRequestError, StoreError, StoreUnavailableError
from streaming.events import Event
from streaming.lifecycle import GenerationMachine
from streaming.log import EventLog
from streaming.model import Block, File, Generation, GenerationState, StreamState
from streaming.stores import open_store
from streaming.stores.base import Store
from streaming.stores.memory import MemoryStore
from streaming.stores.redis import RedisStore
from streaming.stores.sqlite import SqliteStore, parse_sqlite_url
from tests.invariants import check_invariants
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

Factory = Callable[[], Awaitable[Store]]


@pytest.fixture(params=["memory", "sqlite", "redis"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_store(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Factory]:
    """``await make_store()``: an open store; every call is another "process" on the same data."""
    opened: list[Store] = []
    prefix = f"t{uuid.uuid4().hex[:8]}:"

    async def make() -> Store:
        store: Store
        if kind == "memory":
            store = opened[0] if opened else MemoryStore()
        elif kind == "sqlite":
            for old in opened:  # one process per sqlite file: the previous one is gone
                await old.close()
            store = SqliteStore(f"sqlite:///{tmp_path}/store.db")
        else:
            server: RedisServer = request.getfixturevalue("redis_server")
            store = RedisStore(f"{server.url}?prefix={prefix}&lease=1")
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in reversed(opened):
        await store.close()


@pytest.fixture
async def store(make_store: Factory) -> Store:
    return await make_store()


def _play(gen: Generation, chunks: list[str], *, finish: bool = True) -> tuple[GenerationMachine, list[Block]]:
    """A generation's events made by the real lifecycle core."""
    machine = GenerationMachine(gen, EventLog(gen.id, coalesce=False))
    blocks = [Block(file_id=gen.file_id), Block(file_id=gen.file_id)]
    machine.start(blocks, None)
    for i, chunk in enumerate(chunks):
        machine.append(blocks[i % 2].id, chunk)
    if finish:
        machine.succeed()
    return machine, blocks


# -- records --


async def test_generation_roundtrip(store: Store) -> None:
    assert await store.get_generation("gen_missing") is None
    gen = Generation(generator="echo", state=GenerationState.RUNNING, file_id="file_x")
    await store.put_generation(gen)
    got = await store.get_generation(gen.id)
    assert got is not None and got.model_dump() == gen.model_dump()
    gen.last_seq = 7
    await store.put_generation(gen)
    got = await store.get_generation(gen.id)
    assert got is not None and got.last_seq == 7


async def test_finished_generation_is_final(store: Store) -> None:
    gen = Generation(generator="echo", state=GenerationState.FAILED)
    await store.put_generation(gen)
    late = gen.model_copy(update={"state": GenerationState.RUNNING})
    await store.put_generation(late)
    got = await store.get_generation(gen.id)
    assert got is not None and got.state is GenerationState.FAILED


async def test_blocks_roundtrip(store: Store) -> None:
    assert await store.get_block("blk_missing") is None
    block = Block(text="héllo 🌍", stream_state=StreamState.STARTED, public_data=True)
    await store.put_blocks([block])
    block.text += " more"
    block.stream_state = StreamState.COMPLETE
    await store.put_blocks([block])
    got = await store.get_block(block.id)
    assert got is not None and got.model_dump() == block.model_dump()


async def test_files_keep_block_order(store: Store) -> None:
    assert await store.get_file("file_missing") is None
    file = File(handle="chat")
    file.blocks = [Block(file_id=file.id, index=i, text=f"m{i}") for i in range(5)]
    await store.put_file(file)
    got = await store.get_file(file.id)
    assert got is not None
    assert [b.text for b in got.blocks] == [f"m{i}" for i in range(5)]
    assert got.handle == "chat"
    # A block written later shows in the file.
    file.blocks[2].text = "edited"
    await store.put_blocks([file.blocks[2]])
    got = await store.get_file(file.id)
    assert got is not None and got.blocks[2].text == "edited"


async def test_a_store_keeps_none_of_what_it_is_given(store: Store) -> None:
    """What a store is given it copies or encodes: the caller goes on changing its own
    objects (the runtime hands over the blocks of the conversation it holds)."""
    file = File()
    file.blocks = [Block(file_id=file.id, index=i, text=f"m{i}") for i in range(3)]
    gen = Generation(generator="echo", file_id=file.id)
    await store.put_all(gen, blocks=[file.blocks[0]], file=file)
    file.blocks[1].text = "changed by the caller"
    file.blocks.append(Block(file_id=file.id, text="appended by the caller"))
    got = await store.get_file(file.id)
    assert got is not None and [b.text for b in got.blocks] == ["m0", "m1", "m2"]
    await store.put_file(file)  # written again: now it holds the change
    file.blocks[0].text = "changed after the second write"
    got = await store.get_file(file.id)
    assert got is not None
    assert [b.text for b in got.blocks] == ["m0", "changed by the caller", "m2", "appended by the caller"]


async def test_a_file_handed_over_is_stored_and_what_readers_get_are_their_own(store: Store) -> None:
    """The runtime hands over the conversation it builds for each write (it changes none of
    it after): a store may keep those objects, yet every reader still gets its own copy, and
    a second hand-over with one block changed and one new stores exactly that."""
    file = File()
    file.blocks = [Block(file_id=file.id, index=i, text=f"m{i}") for i in range(2)]
    gen = Generation(generator="echo", file_id=file.id)
    await store.put_all(gen, file=file, handed_over=True)
    got = await store.get_file(file.id)
    assert got is not None and [b.text for b in got.blocks] == ["m0", "m1"]
    got.blocks[0].text = "changed by a reader"
    got.blocks.append(Block(file_id=file.id, text="appended by a reader"))
    again = await store.get_file(file.id)
    assert again is not None and [b.text for b in again.blocks] == ["m0", "m1"]
    turn = File(id=file.id, blocks=[file.blocks[0], file.blocks[1].model_copy(update={"text": "m1 edited"})])
    turn.blocks.append(Block(file_id=file.id, index=2, text="new"))
    await store.put_all(gen, file=turn, handed_over=True)
    got = await store.get_file(file.id)
    assert got is not None and [b.text for b in got.blocks] == ["m0", "m1 edited", "new"]
    block = await store.get_block(turn.blocks[1].id)
    assert block is not None and block.text == "m1 edited"


# -- event logs --


async def test_append_and_read_after_cursor(store: Store) -> None:
    gen = Generation(generator="echo")
    machine, blocks = _play(gen, ["a", "b", "ç", "🌍"])
    events = machine.log.read(0)
    await store.append_events(gen.id, events[:3])
    await store.append_events(gen.id, events[3:])
    stored = await store.read_events(gen.id)
    assert [e.to_json() for e in stored] == [e.to_json() for e in events]  # byte for byte
    assert [e.seq for e in await store.read_events(gen.id, after=2)] == list(range(3, len(events) + 1))
    assert [e.seq for e in await store.read_events(gen.id, after=1, limit=2)] == [2, 3]
    assert await store.read_events(gen.id, after=len(events)) == []
    assert await store.read_events("gen_missing") == []
    check_invariants(stored, final_blocks={b.id: machine.blocks[b.id].text for b in blocks})


async def test_append_refuses_a_gap(store: Store) -> None:
    gen = Generation(generator="echo")
    machine, _ = _play(gen, ["a", "b"])
    events = machine.log.read(0)
    await store.append_events(gen.id, events[:2])
    with pytest.raises(StoreError) as gap:
        await store.append_events(gen.id, events[3:])
    assert gap.value.code == "log_gap" and gap.value.details["stored_seq"] == 2
    with pytest.raises(StoreError) as overlap:
        await store.append_events(gen.id, events[1:])
    assert overlap.value.code == "log_gap" and overlap.value.details["stored_seq"] == 2
    await store.append_events(gen.id, events[2:])
    assert len(await store.read_events(gen.id)) == len(events)
    # Nothing follows the terminal event.
    with pytest.raises(StoreError) as closed:
        await store.append_events(gen.id, [Event.delta(len(events) + 1, gen.id, "blk_x", 0, "x")])
    assert closed.value.code == "log_closed"


async def test_follow_live_until_terminal(store: Store) -> None:
    gen = Generation(generator="echo")
    machine, _ = _play(gen, [f"c{i} " for i in range(40)])
    events = machine.log.read(0)
    got: list[Event] = []
    caught_up = anyio.Event()

    async def follower() -> None:
        async for batch in store.follow(gen.id, 0):
            got.extend(batch)
            if got[-1].seq == 5:
                caught_up.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(follower)
        await store.append_events(gen.id, events[:5])
        await caught_up.wait()
        for i in range(5, len(events), 7):
            await store.append_events(gen.id, events[i : i + 7])
    assert [e.to_json() for e in got] == [e.to_json() for e in events]


async def test_follow_from_cursor_of_finished_log(store: Store) -> None:
    gen = Generation(generator="echo")
    machine, _ = _play(gen, ["x", "y", "z"])
    events = machine.log.read(0)
    await store.append_events(gen.id, events)
    got: list[Event] = []
    async for batch in store.follow(gen.id, 3):
        got.extend(batch)
    assert [e.seq for e in got] == list(range(4, len(events) + 1))


async def test_a_burst_of_generations_at_once(store: Store) -> None:
    """Many writers at the same moment (a burst of requests) all land; none is refused."""

    async def one() -> None:
        gen = Generation(generator="echo")
        machine, blocks = _play(gen, ["a", "b", "c"])
        await store.put_blocks(blocks)
        await store.put_generation(machine.generation)
        await store.append_events(gen.id, machine.log.read(0))
        assert [e.seq for e in await store.read_events(gen.id)] == list(range(1, machine.log.last_seq + 1))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for _ in range(300):
                tg.start_soon(one)


# -- control --


async def test_control_reaches_the_listener(make_store: Factory) -> None:
    runner = await make_store()
    other = await make_store()  # the same store as seen by another process (shared stores)
    sender = other if runner.shared else runner
    gen_id = "gen_" + uuid.uuid4().hex
    received: list[dict[str, Any]] = []
    async with runner.control(gen_id) as messages:
        await sender.publish_control("gen_other", {"type": "cancel", "reason": "not for us"})
        await sender.publish_control(gen_id, {"type": "tool.result", "call_id": "c1", "result": ["42"]})
        await sender.publish_control(gen_id, {"type": "cancel", "reason": "stop"})
        with anyio.fail_after(10):
            async for msg in messages:
                received.append(msg)
                if len(received) == 2:
                    break
    assert received == [
        {"type": "tool.result", "call_id": "c1", "result": ["42"]},
        {"type": "cancel", "reason": "stop"},
    ]


async def test_claim_tool_result_once(store: Store) -> None:
    gen_id = "gen_" + uuid.uuid4().hex
    results: list[bool] = []

    async def claim() -> None:
        results.append(await store.claim_tool_result(gen_id, "call_1"))

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(claim)
    assert sorted(results) == [False] * 7 + [True]
    assert await store.claim_tool_result(gen_id, "call_2") is True
    assert await store.claim_tool_result(gen_id, "call_2") is False


@pytest.mark.parametrize("kind", ["redis"])
async def test_one_claim_per_conversation_across_processes(make_store: Factory) -> None:
    a, b = await make_store(), await make_store()
    gen_a = Generation(generator="echo", file_id="conv")
    gen_b = Generation(generator="echo", file_id="conv")
    # Racing claims from two processes: exactly one wins, the other is told who holds it.
    got = [await a.claim_file("conv", gen_a.id), await b.claim_file("conv", gen_b.id)]
    assert got == [None, gen_a.id]
    assert await a.claim_file("conv", gen_a.id) is None  # the holder may claim again
    # Held while the holder is starting (no record yet) or running, by a live process.
    await a.put_generation(gen_a.model_copy(update={"state": GenerationState.RUNNING}))
    assert await b.claim_file("conv", gen_b.id) == gen_a.id
    # Released: free for the next one.
    await a.release_file("conv", gen_a.id)
    assert await b.claim_file("conv", gen_b.id) is None
    await a.release_file("conv", gen_a.id)  # not the holder: changes nothing
    assert await a.claim_file("conv", gen_a.id) == gen_b.id
    # A holder that ended without releasing (its last write failed, say) is stale.
    machine, _ = _play(gen_b, ["x"])
    await b.put_generation(machine.generation)
    assert await a.claim_file("conv", gen_a.id) is None
    # A holder whose process died is stale too (once its lease lapses).
    gen_c = Generation(generator="echo", file_id="conv2")
    assert await b.claim_file("conv2", gen_c.id) is None
    await b.close()
    with anyio.fail_after(10):
        while await a.claim_file("conv2", gen_a.id) is not None:
            await anyio.sleep(0.2)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_single_process_stores_leave_claims_to_the_runtime(store: Store) -> None:
    assert not store.shared
    assert await store.claim_file("conv", "gen_1") is None
    assert await store.claim_file("conv", "gen_2") is None
    await store.release_file("conv", "gen_1")


# -- recovery (durable stores) --


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_recover_interrupted_generation(make_store: Factory) -> None:
    first = await make_store()
    file = File()
    gen = Generation(generator="scripted", file_id=file.id)
    machine, blocks = _play(gen, ["part", "ial ", "text"], finish=False)
    machine.complete_block(blocks[1].id)
    file.blocks = [machine.block_snapshot(b) for b in machine.order]
    await first.put_file(file)  # as at the start: the preallocated blocks
    machine.create_block(Block(file_id=file.id))  # created mid-stream, never written
    await first.put_generation(gen)
    await first.append_events(gen.id, machine.log.read(0))
    # The process dies (its lease goes; for sqlite a new process opens the file).
    await first.close()
    second = await make_store()
    recovered = await second.recover_interrupted()
    assert gen.id in recovered
    assert gen.id not in await second.recover_interrupted()
    got = await second.get_generation(gen.id)
    assert got is not None and got.state is GenerationState.FAILED
    assert got.error is not None and got.error.code == "interrupted"
    events = await second.read_events(gen.id)
    assert events[-1].type == "generation.failed"
    assert got.last_seq == events[-1].seq
    texts = check_invariants(events)
    aborted = {e.data["block_id"] for e in events if e.type == "block.aborted"}
    assert aborted == {blocks[0].id, machine.order[2]}
    b0 = await second.get_block(blocks[0].id)
    assert b0 is not None and b0.stream_state is StreamState.ABORTED and b0.text == texts[blocks[0].id] == "parttext"
    b1 = await second.get_block(blocks[1].id)
    assert b1 is not None and b1.stream_state is StreamState.COMPLETE and b1.text == "ial "
    conversation = await second.get_file(file.id)
    assert conversation is not None
    assert [b.id for b in conversation.blocks] == machine.order
    assert [b.stream_state for b in conversation.blocks] == [
        StreamState.ABORTED, StreamState.COMPLETE, StreamState.ABORTED
    ]
    # A follower is told, and does not hang.
    with anyio.fail_after(10):
        seen = [e async for batch in second.follow(gen.id, 0) for e in batch]
    assert seen[-1].type == "generation.failed"


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_recover_generation_that_never_flushed(make_store: Factory) -> None:
    first = await make_store()
    gen = Generation(generator="echo", state=GenerationState.RUNNING)
    block = Block(file_id=gen.file_id, stream_state=StreamState.STARTED)
    gen.output_block_ids = [block.id]
    await first.put_blocks([block])
    await first.put_generation(gen)
    await first.close()
    second = await make_store()
    assert await second.recover_interrupted() == [gen.id]
    events = await second.read_events(gen.id)
    check_invariants(events)
    assert [e.type for e in events] == ["generation.started", "block.aborted", "generation.failed"]


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
async def test_a_started_generation_comes_with_its_claim_and_its_first_mark(make_store: Factory) -> None:
    """``put_started``: record, inputs, conversation, its claim (shared stores) and its first
    sent mark (stores that keep them) at once; its log takes events from seq 1 with no
    read first. A process that dies then has its generation ended past the mark."""
    first = await make_store()
    file = File()
    question = Block(file_id=file.id, text="q")
    file.blocks = [question]
    gen = Generation(generator="echo", file_id=file.id)
    machine, _ = _play(gen, ["a", "b"], finish=False)
    await first.put_started(machine.generation, blocks=[question], file=file, claim=True, reserve=machine.log.last_seq + 100)
    await first.append_events(gen.id, machine.log.read(0))
    assert [e.seq for e in await first.read_events(gen.id)] == list(range(1, machine.log.last_seq + 1))
    got = await first.get_file(file.id)
    assert got is not None and [b.text for b in got.blocks] == ["q"]
    if not first.durable:
        return
    if first.shared:
        other = await make_store()
        assert await other.claim_file(file.id, "gen_other") == gen.id  # claimed with the start
    await first.close()
    second = await make_store()
    assert await second.recover_interrupted() == [gen.id]
    events = await second.read_events(gen.id)
    assert events[-1].type == "generation.failed" and events[-1].seq > machine.log.last_seq + 100


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_a_generation_that_died_before_its_first_write_ends_past_its_mark(make_store: Factory) -> None:
    """Started (its record and first sent mark stored), streamed, and dead before any event
    reached the store: a client that saw seqs up to the mark resumes after them and is told."""
    first = await make_store()
    file = File()
    gen = Generation(generator="echo", file_id=file.id)
    machine, _ = _play(gen, ["a", "b"], finish=False)
    mark = machine.log.last_seq + 100
    await first.put_started(machine.generation, file=file, reserve=mark)
    await first.close()
    second = await make_store()
    assert await second.recover_interrupted() == [gen.id]
    events = await second.read_events(gen.id)
    assert events[0].type == "generation.started" and events[-1].type == "generation.failed"
    assert events[-1].seq > mark
    # Resuming anywhere up to the mark gets the ending.
    for after in (1, machine.log.last_seq, mark):
        assert [e.seq for e in await second.read_events(gen.id, after)] == [e.seq for e in events if e.seq > after]
    with anyio.fail_after(10):
        seen = [e async for batch in second.follow(gen.id, machine.log.last_seq) for e in batch]
    assert seen[-1].type == "generation.failed"


# -- shared stores: leases across processes --


async def _running_in_another_process(make_store: Factory, text: str) -> tuple[Store, Store, GenerationMachine]:
    """(owner, other, machine): a generation ``owner`` runs, half written; ``other`` is a
    second process on the same data."""
    owner = await make_store()
    other = await make_store()
    gen = Generation(generator="echo", file_id="f")
    machine, _ = _play(gen, [text], finish=False)
    await owner.put_generation(gen)
    await owner.append_events(gen.id, machine.log.read(0))
    return owner, other, machine


@pytest.mark.parametrize("kind", ["redis"])
async def test_a_live_process_keeps_its_generations(make_store: Factory) -> None:
    owner, other, machine = await _running_in_another_process(make_store, "still going")
    gen = machine.generation
    assert gen.id not in await other.recover_interrupted()
    got = await other.get_generation(gen.id)
    assert got is not None and got.state is GenerationState.RUNNING


@pytest.mark.parametrize("kind", ["redis"])
async def test_follower_sees_a_dead_owner_fail(make_store: Factory) -> None:
    owner, other, machine = await _running_in_another_process(make_store, "half")
    gen = machine.generation
    seen: list[Event] = []
    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:

            async def follow() -> None:
                async for batch in other.follow(gen.id, 0):
                    seen.extend(batch)

            tg.start_soon(follow)
            await owner.close()  # the owner's lease is gone
    assert seen[-1].type == "generation.failed"
    assert seen[-1].data["error"]["code"] == "interrupted"
    check_invariants(seen)


@pytest.mark.parametrize("kind", ["redis"])
async def test_a_reader_waits_for_a_reap_in_progress(make_store: Factory) -> None:
    # Another process is reaping a dead owner's generation: it has ended the log but not
    # yet written the record. A reader must not answer "running" for that ended log.
    owner, reader, machine = await _running_in_another_process(make_store, "half")
    gen = machine.generation
    await owner.close()  # its lease is gone
    assert isinstance(reader, RedisStore)
    lock = reader._k("reap", gen.id)
    await reader._r.set(lock, "another-process", px=30_000)  # that reaper, mid-way
    got: list[Generation | None] = []

    async def read() -> None:
        got.append(await reader.get_generation(gen.id))

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        await anyio.sleep(0.3)
        assert not got  # still waiting for the reaper
        machine.fail("interrupted", "its process died")
        await reader.put_generation(machine.generation)  # the reaper's last writes
        await reader._r.delete(lock)
    assert got[0] is not None and got[0].state is GenerationState.FAILED


async def test_redis_retention_ttl(redis_server: RedisServer) -> None:
    prefix = f"ttl{uuid.uuid4().hex[:8]}:"
    store = RedisStore(f"{redis_server.url}?prefix={prefix}&ttl=120")
    await store.open()
    try:
        gen = Generation(generator="echo")
        machine, blocks = _play(gen, ["a", "b"], finish=False)
        await store.put_generation(gen)
        await store.append_events(gen.id, machine.log.read(0))
        r = store._r
        assert await r.pttl(f"{prefix}log:{gen.id}") == -1  # running: kept
        machine.succeed()
        await store.append_events(gen.id, machine.log.read(len(await store.read_events(gen.id))))
        await store.put_generation(machine.generation)
        await store.put_blocks([machine.block_snapshot(b.id) for b in blocks])
        for key in (f"log:{gen.id}", f"gen:{gen.id}", f"blk:{blocks[0].id}"):
            assert 0 < await r.pttl(prefix + key) <= 120_000
        # Nothing is appended after the end.
        with pytest.raises(StoreError):
            await store.append_events(gen.id, [Event.delta(machine.log.last_seq + 1, gen.id, "blk_x", 0, "x")])
    finally:
        await store.close()


# -- URLs --


def test_open_store_by_url(tmp_path: Path) -> None:
    assert isinstance(open_store("memory://"), MemoryStore)
    sqlite = open_store(f"sqlite:///{tmp_path}/x.db")
    assert isinstance(sqlite, SqliteStore) and sqlite.path == f"{tmp_path}/x.db"
    assert parse_sqlite_url("sqlite:///data/s.db?ttl=60") == ("data/s.db", {"ttl": "60"})
    redis = open_store("redis://127.0.0.1:1/2?ttl=5&lease=3&prefix=p:")
    assert isinstance(redis, RedisStore)
    assert (redis.ttl_ms, redis.lease_s, redis.prefix) == (5000, 3.0, "p:")


def test_sqlite_url_parameters_are_read_and_bad_ones_refused(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/p.db?poll=0.1&ttl=60&retry=2&batch=0.5&batch_max=3")
    assert isinstance(store, SqliteStore)
    assert (store.poll_interval_s, store.ttl_s, store.retry_s, store.batch_s, store.batch_max_s) == (0.1, 60, 2, 0.5, 3)
    for query, words in (("tll=60", "unknown parameter 'tll'"), ("ttl=soon", "bad sqlite URL parameter"),
                         ("ttl=nan", "ttl must be a number of seconds, at least 0"),
                         ("batch=-1", "batch must be a number of seconds"), ("poll=inf", "poll must be")):
        with pytest.raises(InvalidRequestError, match=words):
            open_store(f"sqlite:///{tmp_path}/p.db?{query}")


def test_serve_says_what_is_wrong_with_a_bad_sqlite_url(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streaming.server.cli", "serve", "--store", f"sqlite:///{tmp_path}/s.db?tll=60",
         "--port", "0"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode != 0 and "unknown parameter 'tll'" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


async def test_sqlite_is_one_process_per_file(tmp_path: Path) -> None:
    first = SqliteStore(f"sqlite:///{tmp_path}/one.db")
    await first.open()
    try:
        second = SqliteStore(f"sqlite:///{tmp_path}/one.db")
        with pytest.raises(StoreError, match="in use"):
            await second.open()
    finally:
        await first.close()


async def test_sqlite_retention_drops_old_finished_logs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ttl.db"
    store = SqliteStore(url)
    await store.open()
    old, recent = Generation(generator="echo"), Generation(generator="echo")
    for gen in (old, recent):
        machine, _ = _play(gen, ["x"])
        await store.append_events(gen.id, machine.log.read(0))
        await store.put_generation(machine.generation)
    expired = old.model_copy(update={"finished_at": old.finished_at - 7200})  # type: ignore[operator]
    await store.close()
    # Age the first one (as if it finished two hours ago), directly in the file.
    conn = sqlite3.connect(tmp_path / "ttl.db")
    conn.execute("UPDATE generations SET finished_at = ? WHERE id = ?", (expired.finished_at, old.id))
    conn.commit()
    conn.close()
    store = SqliteStore(url + "?ttl=3600")
    await store.open()
    try:
        assert await store.get_generation(old.id) is None
        assert await store.read_events(old.id) == []
        assert (await store.get_generation(recent.id)) is not None
        assert len(await store.read_events(recent.id)) > 0
    finally:
        await store.close()


async def test_sqlite_failing_commits_are_retried_then_reported(tmp_path: Path) -> None:
    db = tmp_path / "failing.db"
    store = SqliteStore(f"sqlite:///{db}?retry=0.2")
    await store.open()
    # Another connection makes every event insert fail (as a full disk would), then stops.
    other = sqlite3.connect(db)
    other.executescript(
        "CREATE TABLE broken (x); INSERT INTO broken VALUES (1);"
        "CREATE TRIGGER fail BEFORE INSERT ON segments WHEN EXISTS (SELECT 1 FROM broken)"
        " BEGIN SELECT RAISE(ABORT, 'disk is full'); END;"
    )
    try:
        gen = Generation(generator="echo")
        machine, _ = _play(gen, ["kept", " in order"])
        events = machine.log.read(0)
        await store.append_events(gen.id, events[:2])  # queued: the writer will fail on it
        with anyio.fail_after(30), pytest.raises(StoreUnavailableError):
            await store.read_events(gen.id)
        with pytest.raises(StoreUnavailableError):
            await store.append_events(gen.id, events[2:])
        other.execute("DELETE FROM broken")
        other.commit()
        with anyio.fail_after(30):
            while True:
                try:
                    stored = await store.read_events(gen.id)
                    break
                except StoreUnavailableError:
                    await anyio.sleep(0.05)
        assert [e.to_json() for e in stored] == [e.to_json() for e in events[:2]]
        await store.append_events(gen.id, events[2:])
        assert len(await store.read_events(gen.id)) == len(events)
    finally:
        other.close()
        await store.close()
