"""The collaborators of the redis store on their own, over a real redis-server: the
connection (keys, errors, scripts), records, logs, control, leases and conversation claims."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack

import anyio
import pytest
from anyio.lowlevel import checkpoint

from streaming.errors import StoreError, StoreUnavailableError
from streaming.events import Event
from streaming.model import Block, File, Generation, GenerationState, StreamState
from streaming.stores import redis_logs, redis_records
from streaming.stores.recovery import fold_tail
from streaming.stores.redis_claims import RedisFileClaims
from streaming.stores.redis_conn import BACKOFF_CAP_S, RedisConnection, split_url
from streaming.stores.redis_control import RedisControl
from streaming.stores.redis_leases import RedisLeases
from streaming.stores.redis_logs import RedisLogs
from streaming.stores.redis_records import RedisArchives, RedisRecords
from streaming.tasks import TaskOwner
from tests.redis_server import RedisServer, free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
async def conn(redis_server: RedisServer) -> AsyncIterator[RedisConnection]:
    connection = RedisConnection(redis_server.url, f"u{uuid.uuid4().hex[:8]}:")
    connection.connect(pool_size=8, max_followers=8, retry_s=1.0)
    yield connection
    await connection.aclose()


def _ev(gen_id: str, seq: int, kind: str = "generation.started") -> Event:
    return Event(type=kind, generation_id=gen_id, seq=seq, data={})


def _delta(gen_id: str, seq: int, block_id: str, offset: int, text: str) -> Event:
    return Event("block.delta", seq, gen_id, {"block_id": block_id, "offset": offset, "text": text})


def test_the_url_keeps_our_parameters_apart() -> None:
    theirs, ours = split_url("redis://h:1/0?ttl=5&lease=2&prefix=p:&socket_timeout=3")
    assert ours == {"ttl": "5", "lease": "2", "prefix": "p:"}
    assert theirs == "redis://h:1/0?socket_timeout=3"


async def test_keys_errors_and_scripts() -> None:
    c = RedisConnection(f"redis://127.0.0.1:{free_port()}/0", "p:")
    assert c.k("gen", "g1") == "p:gen:g1"
    with pytest.raises(StoreError, match="not open"):
        _ = c.r
    c.connect(pool_size=4, max_followers=4, retry_s=0.0)
    assert c.script("return 1") is c.script("return 1")  # registered once
    with pytest.raises(StoreUnavailableError, match="unavailable \\(probe\\)"), c.mapped("probe"):
        await c.r.get("x")  # nobody listens on that port
    await c.aclose()


async def test_records_keep_a_finished_generation_and_tell_if_its_owner_lives(conn: RedisConnection) -> None:
    records = RedisRecords(conn, owner="me", ttl_ms=0)
    gen = Generation(generator="echo", state=GenerationState.RUNNING)
    await records.put_generation(gen)
    assert await records.read_generation(gen.id) == (gen, False)  # no lease of "me" yet
    await conn.r.set(conn.k("lease", "me"), "1")
    assert (await records.read_generation(gen.id) or (None, None))[1] is True
    done = gen.model_copy(update={"state": GenerationState.SUCCEEDED})
    await records.put_generation(done)
    await records.put_generation(gen)  # late and older: ignored
    assert (await records.read_generation(gen.id) or (None,))[0] == done
    assert await conn.r.hget(conn.k("running"), gen.id) is None


async def test_records_put_all_at_once_or_nothing(conn: RedisConnection) -> None:
    records = RedisRecords(conn, owner="me", ttl_ms=60_000)
    logs = RedisLogs(conn, ttl_ms=60_000, read_batch=16)
    gen = Generation(generator="echo", state=GenerationState.RUNNING, last_seq=2)
    question = Block(text="q", request_id=gen.id)
    answer = Block(text="an", stream_state=StreamState.STARTED, request_id=gen.id)
    file = File(blocks=[question, answer])
    await records.put_all(gen, [_ev(gen.id, 1), _delta(gen.id, 2, answer.id, 0, "an")], [answer], file)
    assert [e.seq for e in await logs.read(gen.id)] == [1, 2]
    assert (await records.read_generation(gen.id) or (None,))[0] == gen
    got = await records.get_file(file.id)
    assert got is not None and [b.text for b in got.blocks] == ["q", "an"]
    assert await conn.r.pttl(conn.k("blk", answer.id)) > 0  # a block of the conversation expires with it
    await records.put_all(gen, [], [answer.model_copy(update={"id": "blk_other"})], None)  # no events, no file
    assert await conn.r.pttl(conn.k("blk", "blk_other")) == -1  # still streaming: kept
    # Refused events: nothing of the rest is written.
    done = gen.model_copy(update={"state": GenerationState.SUCCEEDED})
    with pytest.raises(StoreError) as gap:
        await records.put_all(done, [_ev(gen.id, 4)], [answer.model_copy(update={"text": "x"})], None)
    assert gap.value.code == "log_gap" and gap.value.details["stored_seq"] == 2
    assert (await records.read_generation(gen.id) or (None,))[0] == gen
    assert (await records.get_block(answer.id) or Block()).text == "an"
    await conn.r.set(conn.k("busy", file.id), f"{gen.id} me")  # its claim on the conversation
    await records.put_all(done, [_ev(gen.id, 3, "generation.completed")], [], file)
    assert await logs.ended(gen.id) and await conn.r.hget(conn.k("running"), gen.id) is None
    assert await conn.r.get(conn.k("busy", file.id)) is None  # dropped with the final write
    with pytest.raises(StoreError) as closed:
        await records.put_all(done, [_ev(gen.id, 4)], [], None)
    assert closed.value.code == "log_closed"


async def test_writes_made_at_once_share_round_trips_and_keep_their_own_results(conn: RedisConnection) -> None:
    """A burst of put_all calls goes as a few pipelines, each call its own script run: a
    refused one fails alone, the others are written."""
    records = RedisRecords(conn, owner="me", ttl_ms=60_000)
    logs = RedisLogs(conn, ttl_ms=60_000, read_batch=16)
    gens = [Generation(generator="echo", state=GenerationState.RUNNING) for _ in range(40)]
    outcomes: dict[str, BaseException | None] = {}

    async def write(gen: Generation, first_seq: int) -> None:
        try:
            await records.put_all(gen, [_ev(gen.id, first_seq)], [], File(blocks=[Block(text=gen.id)]))
            outcomes[gen.id] = None
        except StoreError as exc:
            outcomes[gen.id] = exc

    before = conn.batched(redis_records._PUT_ALL, "put_all").sent
    async with anyio.create_task_group() as tg:
        for i, gen in enumerate(gens):
            tg.start_soon(write, gen, 5 if i == 7 else 1)  # the eighth leaves a gap
    sent = conn.batched(redis_records._PUT_ALL, "put_all").sent - before
    assert 1 <= sent <= 4  # not 40 round trips
    refused = outcomes.pop(gens[7].id)
    assert isinstance(refused, StoreError) and refused.code == "log_gap"
    assert set(outcomes) == {g.id for g in gens} - {gens[7].id} and not any(outcomes.values())
    for gen in gens[:7] + gens[8:]:
        assert [e.seq for e in await logs.read(gen.id)] == [1]
        found = await records.read_generation(gen.id)
        assert found is not None and found[0].id == gen.id and found[0].last_seq == 1
    assert await logs.read(gens[7].id) == [] and await records.read_generation(gens[7].id) is None


async def test_batched_writes_survive_lost_scripts_and_fail_cleanly_when_closed(redis_server: RedisServer) -> None:
    conn = RedisConnection(redis_server.url, f"u{uuid.uuid4().hex[:8]}:")
    conn.connect(pool_size=4, max_followers=4, retry_s=0.5)
    records = RedisRecords(conn, owner="me", ttl_ms=60_000)
    first = Generation(generator="echo", state=GenerationState.RUNNING)
    await records.put_all(first, [], [], None)
    await conn.r.script_flush()  # as after a restart: EVALSHA answers NOSCRIPT
    again = [Generation(generator="echo", state=GenerationState.RUNNING) for _ in range(3)]
    async with anyio.create_task_group() as tg:
        for gen in again:
            tg.start_soon(records.put_all, gen, [], [], None)
    for gen in again:
        assert (await records.read_generation(gen.id) or (None,))[0] == gen
    # A caller that gives up leaves the others their results.
    kept = Generation(generator="echo", state=GenerationState.RUNNING)
    async with anyio.create_task_group() as tg:
        with anyio.CancelScope() as gone:
            gone.cancel()
            await records.put_all(Generation(generator="echo"), [], [], None)
        tg.start_soon(records.put_all, kept, [], [], None)
    assert (await records.read_generation(kept.id) or (None,))[0] == kept
    # Closed while calls wait to be sent: they fail as the store being unavailable.
    errors: list[BaseException] = []

    async def late() -> None:
        try:
            await records.put_all(Generation(generator="echo"), [], [], None)
        except StoreError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(late)
        tg.start_soon(late)
        await checkpoint()  # both queued, their batch's sender not started yet
        await conn.aclose()
    assert len(errors) == 2 and all(isinstance(e, StoreUnavailableError) for e in errors)


async def test_a_start_claims_its_new_conversation_and_sets_its_first_mark_in_the_same_write(
    conn: RedisConnection,
) -> None:
    records = RedisRecords(conn, owner="me", ttl_ms=60_000)
    logs = RedisLogs(conn, ttl_ms=60_000, read_batch=16)
    gen = Generation(generator="echo", state=GenerationState.RUNNING)
    question = Block(text="q", request_id=gen.id)
    file = File(blocks=[question])
    await records.put_all(gen, [], [question], file, claim=True, reserve=4097)
    assert await conn.r.get(conn.k("busy", file.id)) == f"{gen.id} me"
    assert await logs.sent_mark(gen.id) == 4097
    assert 0 < await conn.r.pttl(conn.k("sent", gen.id)) <= 60_000
    assert (await records.read_generation(gen.id) or (None,))[0] == gen
    # A conversation someone else holds is not taken (SET NX); without claim or mark, neither is written.
    other = Generation(generator="echo", state=GenerationState.RUNNING)
    await records.put_all(other, [], [], file, claim=True, reserve=0)
    assert await conn.r.get(conn.k("busy", file.id)) == f"{gen.id} me"
    assert await logs.sent_mark(other.id) == 0
    # A write refused for its events writes neither the claim nor the mark.
    third, lone = Generation(generator="echo", state=GenerationState.RUNNING), File()
    with pytest.raises(StoreError) as gap:
        await records.put_all(third, [_ev(third.id, 2)], [], lone, claim=True, reserve=9)
    assert gap.value.code == "log_gap"
    assert await conn.r.get(conn.k("busy", lone.id)) is None and await logs.sent_mark(third.id) == 0


async def test_records_add_blocks_to_a_conversation_once(conn: RedisConnection) -> None:
    records = RedisRecords(conn, owner="me", ttl_ms=0)
    a, b = Block(text="a"), Block(text="b")
    file = File(blocks=[a])
    await records.put_file(file)
    await records.add_to_file(file.id, [a, b])
    await records.put_blocks([b])
    got = await records.get_file(file.id)
    assert got is not None and [x.text for x in got.blocks] == ["a", "b"]
    assert set(await records.get_blocks([a.id, b.id, "blk_none"])) == {a.id, b.id}
    await records.add_to_file("file_none", [a])  # no such conversation: nothing made
    assert await records.get_file("file_none") is None


async def test_archives(conn: RedisConnection) -> None:
    archives = RedisArchives(conn)
    digest = await archives.put("model/v1", b"\x00weights")
    assert await archives.get("model/v1") == b"\x00weights"
    assert await archives.digest("model/v1") == digest
    assert await archives.get("model/none") is None


async def test_logs_append_without_gaps_and_close_at_the_terminal_event(conn: RedisConnection) -> None:
    logs = RedisLogs(conn, ttl_ms=0, read_batch=16)
    await logs.append("g", [_ev("g", 1), _ev("g", 2)])
    with pytest.raises(StoreError) as gap:
        await logs.append("g", [_ev("g", 4)])
    assert gap.value.code == "log_gap" and gap.value.details["stored_seq"] == 2
    assert not await logs.ended("g")
    await logs.append("g", [_ev("g", 9, "generation.failed")], after_loss=True)  # past lost events
    assert await logs.ended("g")
    with pytest.raises(StoreError) as closed:
        await logs.append("g", [_ev("g", 10)])
    assert closed.value.code == "log_closed"
    assert [e.seq for e in await logs.read("g", after=1)] == [2, 9]
    assert [e.seq for e in await logs.read("g", limit=1)] == [1]
    assert await logs.sent_mark("g") == 0
    await logs.reserve_seq("g", 7)
    assert await logs.sent_mark("g") == 7


async def test_append_many_refuses_per_log_and_writes_the_others(conn: RedisConnection, monkeypatch) -> None:
    logs = RedisLogs(conn, ttl_ms=0, read_batch=64)
    await logs.append("gap", [_ev("gap", 1)])
    await logs.append("closed", [_ev("closed", 1), _ev("closed", 2, "generation.failed")])
    text = 'ünïcödé "quoted"\nnew line \ud800 and 😀'
    batch: list[tuple[str, Sequence[Event]]] = [
        ("fresh", [_ev("fresh", 1), _delta("fresh", 2, "b", 0, text)]),
        ("gap", [_ev("gap", 3)]),  # the log has 1
        ("empty", []),
        ("closed", [_ev("closed", 3)]),
        ("ends", [_ev("ends", 1), _ev("ends", 2, "generation.completed")]),
    ]
    results = await logs.append_many(batch)
    assert results[0] is None and results[2] is None and results[4] is None
    assert isinstance(results[1], StoreError) and results[1].code == "log_gap"
    assert results[1].details["stored_seq"] == 1
    assert isinstance(results[3], StoreError) and results[3].code == "log_closed"
    stored = await logs.read("fresh")
    assert [e.to_json() for e in stored] == [e.to_json() for e in batch[0][1]]
    assert stored[1].data["text"] == text
    assert [e.seq for e in await logs.read("gap")] == [1]
    assert [e.seq for e in await logs.read("closed")] == [1, 2]
    assert await logs.ended("ends")
    # Split into several calls when a batch is big; each log still gets its own answer.
    monkeypatch.setattr(redis_logs, "MANY_EVENTS", 6)
    many: list[tuple[str, Sequence[Event]]] = [(f"m{i}", [_ev(f"m{i}", 1), _ev(f"m{i}", 2, "block.created")]) for i in range(5)]
    many.append(("gap", [_ev("gap", 5)]))
    results = await logs.append_many(many)
    assert results[:5] == [None] * 5 and isinstance(results[5], StoreError)
    for i in range(5):
        assert [e.seq for e in await logs.read(f"m{i}")] == [1, 2]


def test_fold_tail_adds_what_the_snapshot_lacks_by_offset() -> None:
    a = Block(id="a", text="hel", stream_state=StreamState.STARTED, request_id="g")
    b = Block(id="b", text="", stream_state=StreamState.STARTED, request_id="g")
    c = Block(id="c", text="done", stream_state=StreamState.COMPLETE, request_id="g")
    d = Block(id="d", text="x", stream_state=StreamState.STARTED, request_id="g")
    events = [
        _delta("g", 2, "a", 0, "he"),  # before the snapshot: skipped
        _delta("g", 3, "a", 2, "llo"),  # straddles it: its end is added
        _delta("g", 4, "b", 0, "one "),
        _delta("g", 5, "c", 4, "more"),  # not streaming: left alone
        _delta("g", 6, "d", 5, "late"),  # a hole (the events start too late): d stops here
        _delta("g", 7, "a", 5, " world"),
        Event("block.completed", 8, "g", {"block_id": "a", "length": 11}),
        _delta("g", 9, "b", 4, "two"),
        _delta("g", 10, "d", 1, "y"),
    ]
    fold_tail([a, b, c, d], events)
    assert (a.text, a.stream_state) == ("hello world", StreamState.COMPLETE)
    assert (b.text, b.stream_state) == ("one two", StreamState.STARTED)
    assert (c.text, c.stream_state) == ("done", StreamState.COMPLETE)
    assert (d.text, d.stream_state) == ("x", StreamState.STARTED)


async def test_logs_follow_pings_and_ends(conn: RedisConnection) -> None:
    logs = RedisLogs(conn, ttl_ms=0, read_batch=16)
    pings: list[str] = []

    async def ping(generation_id: str) -> None:
        pings.append(generation_id)

    async def lookup(generation_id: str) -> Generation | None:
        return Generation(id=generation_id, generator="echo", state=GenerationState.RUNNING)  # still running

    await logs.append("f", [_ev("f", 1)])
    seen: list[int] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:

            async def follow() -> None:
                async for batch in logs.follow("f", 0, block_s=0.1, presence_s=0.05, ping=ping, lookup=lookup):
                    seen.extend(e.seq for e in batch)

            tg.start_soon(follow)
            await anyio.sleep(0.3)
            await logs.append("f", [_ev("f", 2, "generation.completed")])
    assert seen == [1, 2] and pings and set(pings) == {"f"}


async def test_control_keeps_what_was_sent_before_anyone_listened(conn: RedisConnection) -> None:
    closing = False
    control = RedisControl(conn, owner="me", ttl_ms=0, lease_s=1.0, closing=lambda: closing)
    await control.publish("g", {"type": "cancel", "reason": "early"})
    got: list[dict[str, object]] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(control.run)
            async with control.listen("g") as messages:
                assert control.listening() == ["g"]
                got.append(await messages.__anext__())  # drained from the list
                await control.publish_presence("g")  # a passing message, through pub/sub
                got.append(await messages.__anext__())
                await control.publish("g", {"type": "tool_result"})
                got.append(await messages.__anext__())
            closing = True
            tg.cancel_scope.cancel()
    assert [m["type"] for m in got] == ["cancel", "subscriber", "tool_result"]
    assert control.listening() == []
    assert await control.claim_tool_result("g", "call_1")
    assert not await control.claim_tool_result("g", "call_1")


async def test_control_drains_the_lists_of_listeners_that_start_together_at_once(conn: RedisConnection) -> None:
    tasks = TaskOwner("test", logging.getLogger("test"))
    control = RedisControl(conn, owner="me", ttl_ms=0, lease_s=60.0, closing=lambda: True, spawn=tasks.spawn)
    names = [f"g{i}" for i in range(5)]
    for name in names:
        await control.publish(name, {"type": "cancel", "reason": name})
    with anyio.fail_after(10):
        async with AsyncExitStack() as stack:
            streams = [await stack.enter_async_context(control.listen(name)) for name in names]
            got = [(await stream.__anext__())["reason"] for stream in streams]
    assert got == names  # (no pub/sub loop runs, and the sweep is a lease away: drained at once)
    assert [await conn.r.llen(conn.k("ctl", name)) for name in names] == [0] * len(names)
    await tasks.aclose(timeout_s=1.0)


async def _lranges(conn: RedisConnection) -> int:
    stats = await conn.r.info("commandstats")
    return int(stats.get("cmdstat_lrange", {}).get("calls", 0))


async def test_a_new_generation_s_list_is_read_only_if_a_message_may_have_come(conn: RedisConnection) -> None:
    """A generation written under a new id (``expect``) has an empty list until someone
    learns its id: starting to listen reads it only if a wake-up came for it meanwhile, or
    the subscription went down since."""
    tasks = TaskOwner("test", logging.getLogger("test"))
    closing = False
    control = RedisControl(conn, owner="me", ttl_ms=0, lease_s=60.0, closing=lambda: closing, spawn=tasks.spawn)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(control.run)
            while not control._subscribed:
                await anyio.sleep(0.01)
            await anyio.sleep(0.05)  # (its first sweep of the lists is done)
            # Quiet: listening costs no read of the list.
            control.expect("quiet")
            before = await _lranges(conn)
            async with control.listen("quiet") as messages:
                await control.publish("quiet", {"type": "cancel", "reason": "later"})
                assert (await messages.__anext__())["reason"] == "later"  # (read on its wake-up)
            assert await _lranges(conn) == before + 1
            # A cancel that came between the start and the listening is read when it listens.
            control.expect("early")
            await control.publish("early", {"type": "cancel", "reason": "early"})
            while control._expected.get("early") != -1:  # (its wake-up came)
                await anyio.sleep(0.01)
            async with control.listen("early") as messages:
                assert (await messages.__anext__())["reason"] == "early"
            # Expected while the subscription was down: read when it listens.
            control._subscribed = False
            control.expect("unsure")
            control._subscribed = True
            await conn.r.rpush(conn.k("ctl", "unsure"), '{"type": "cancel", "reason": "unsure"}')  # no wake-up
            async with control.listen("unsure") as messages:
                assert (await messages.__anext__())["reason"] == "unsure"
            closing = True
            tg.cancel_scope.cancel()
    assert control._expected == {}
    await tasks.aclose(timeout_s=1.0)


async def _leases(conn: RedisConnection, owner: str, records: RedisRecords, logs: RedisLogs) -> RedisLeases:
    control = RedisControl(conn, owner=owner, ttl_ms=0, lease_s=1.0, closing=lambda: True)
    return RedisLeases(
        conn, owner=owner, lease_s=1.0, finishing_wait_s=1.0, records=records, logs=logs,
        put_blocks=records.put_blocks, put_generation=records.put_generation,
        publish_control=control.publish, closing=lambda: True,
    )


async def test_leases_reap_the_generations_of_a_dead_process_only(conn: RedisConnection) -> None:
    logs = RedisLogs(conn, ttl_ms=0, read_batch=16)
    dead_records, live_records = RedisRecords(conn, owner="dead", ttl_ms=0), RedisRecords(conn, owner="live", ttl_ms=0)
    leases = await _leases(conn, "live", live_records, logs)
    await leases.renew()
    orphan = Generation(generator="echo", state=GenerationState.RUNNING)
    mine = Generation(generator="echo", state=GenerationState.RUNNING)
    await dead_records.put_generation(orphan)
    await live_records.put_generation(mine)
    await logs.append(orphan.id, [Event(type="generation.started", generation_id=orphan.id, seq=1, data={})])
    assert await leases.recover_interrupted() == [orphan.id]
    found = await live_records.read_generation(orphan.id)
    assert found is not None and found[0].state is GenerationState.FAILED
    assert await logs.ended(orphan.id)
    assert await leases.recover_interrupted() == []  # ours lives; the dead one is done
    assert not await conn.r.exists(conn.k("reap", orphan.id))  # the reap lock is gone
    await leases.drop()
    assert not await conn.r.exists(leases.lease_key())


async def test_leases_wait_a_lease_and_a_retry_after_redis_restarted(conn: RedisConnection) -> None:
    leases = await _leases(conn, "me", RedisRecords(conn, owner="me", ttl_ms=0), RedisLogs(conn, ttl_ms=0, read_batch=1))
    assert await leases.settled()  # the Redis it opened with
    leases.redis_run = "another run"  # as if Redis restarted since
    assert not await leases.settled()
    # A lease later, a process whose renewal still waits out its backoff has not renewed yet.
    leases.redis_since -= leases.lease_s + 0.01
    assert not await leases.settled()
    leases.redis_since -= BACKOFF_CAP_S
    assert await leases.settled()


async def test_one_claim_per_conversation_and_a_finished_holder_is_taken_over(conn: RedisConnection) -> None:
    logs = RedisLogs(conn, ttl_ms=0, read_batch=16)
    generations: dict[str, Generation] = {}

    async def lookup(generation_id: str) -> Generation | None:
        return generations.get(generation_id)

    def claims(owner: str) -> RedisFileClaims:
        return RedisFileClaims(conn, owner=owner, ttl_ms=0, finishing_wait_s=0.2, logs=logs, lookup=lookup)

    a, b = claims("proc_a"), claims("proc_b")
    await conn.r.set(conn.k("lease", "proc_a"), "1")
    assert await a.claim("file_1", "gen_1") is None
    assert await a.claim("file_1", "gen_1") is None  # its own claim
    assert await b.claim("file_1", "gen_2") == "gen_1"  # starting (no record), its process lives
    await b.release("file_1", "gen_1")  # not b's claim: kept
    assert await b.claim("file_1", "gen_2") == "gen_1"
    generations["gen_1"] = Generation(id="gen_1", generator="echo", state=GenerationState.SUCCEEDED)
    assert await b.claim("file_1", "gen_2") is None  # it ended: taken over
    await b.release("file_1", "gen_2")
    assert await conn.r.get(conn.k("busy", "file_1")) is None


async def test_a_claim_waits_a_little_for_a_holder_whose_log_has_ended(conn: RedisConnection) -> None:
    logs = RedisLogs(conn, ttl_ms=0, read_batch=16)
    running = Generation(id="gen_1", generator="echo", state=GenerationState.RUNNING)

    async def lookup(generation_id: str) -> Generation | None:
        return running

    holder = RedisFileClaims(conn, owner="p", ttl_ms=0, finishing_wait_s=0.2, logs=logs, lookup=lookup)
    other = RedisFileClaims(conn, owner="q", ttl_ms=0, finishing_wait_s=0.2, logs=logs, lookup=lookup)
    assert await holder.claim("file_2", "gen_1") is None
    await logs.append("gen_1", [_ev("gen_1", 1, "generation.completed")])
    started = anyio.current_time()
    assert await other.claim("file_2", "gen_2") == "gen_1"  # its record never said finished
    assert anyio.current_time() - started >= 0.2


