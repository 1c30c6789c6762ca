"""Two real ``streaming serve`` processes sharing one real redis-server.

A generation started through process A is streamed, resumed, cancelled and answered
(a client-side tool) through process B; when A is killed mid-stream, B reports the
generation ``interrupted`` once A's lease expires.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from streaming.client.client import StreamingClient

from streaming.events import Event
from tests.invariants import check_invariants
from tests.redis_server import RedisServer
from tests.server_process import ServerProcess, server_pair

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LEASE_S = 2.0
GRACE_S = 3.0  # disconnect grace of the pair (on_disconnect=cancel)


def store_url(redis_server: RedisServer, prefix: str) -> str:
    return f"{redis_server.url}?lease={LEASE_S:g}&prefix={prefix}"


@pytest.fixture(scope="module")
def pair(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    logs = tmp_path_factory.mktemp("logs")
    url = store_url(redis_server, f"mp{uuid.uuid4().hex[:8]}:")
    with server_pair(logs, url, "--disconnect-grace", str(GRACE_S)) as (a, b):
        yield a, b


SLOW_TEXT = {"rounds": [[{"text": "slow words arrive one by one ", "chunk": 5}, {"sleep_ms": 300},
                         {"text": "and then the end.", "chunk": 4}]]}
FOREVER = {"rounds": [[{"text": "started", "chunk": 3}, {"sleep_ms": 600_000}, {"text": "never"}]]}


async def lost_ending(client: StreamingClient, generation_id: str, after: int) -> list[Event]:
    """The events after ``after`` of a generation another process failed because its own
    process died or froze. The recovery numbers them past the store's mark of how far the
    log may have been sent (seqs are never reused), so they follow a gap, which a
    GenerationStream's fold does not cross: read them as they come on the wire."""
    with anyio.fail_after(30):
        ending = [e async for e in client.iter_events(generation_id, after=after)]
    assert [e.type for e in ending][-1] == "generation.failed"
    assert ending[0].seq > after and [e.seq for e in ending] == list(range(ending[0].seq, ending[-1].seq + 1))
    lost = ending[-1].data.get("events_lost")
    if lost is not None:
        assert lost["after"] <= after <= lost["through"] < ending[0].seq
    return ending


def before_gap(events: list[Event]) -> int:
    """The seq of the last event a client had before a crash's gap (or of its last event)."""
    for here, after in zip(events, events[1:], strict=False):
        if after.seq != here.seq + 1:
            return here.seq
    return events[-1].seq


async def until(stream: object, predicate: object) -> list[Event]:
    """Read a GenerationStream until ``predicate(event)``; return what was read."""
    seen: list[Event] = []
    async for event in stream:  # type: ignore[attr-defined]
        seen.append(event)
        if predicate(event):  # type: ignore[operator]
            break
    return seen


async def test_start_on_a_stream_and_resume_on_b(pair: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = pair
    async with StreamingClient(a.url) as on_a, StreamingClient(b.url) as on_b:
        gen = await on_a.generate("scripted", prompt="hi", options=SLOW_TEXT, on_disconnect="continue")
        # B knows it at once, and streams it live from the shared log.
        assert (await on_b.get_generation(gen.id))["generation"]["state"] == "running"
        with anyio.fail_after(30):
            from_b = [e async for e in on_b.iter_events(gen.id)]
        assert from_b[-1].type == "generation.completed"
        with anyio.fail_after(30):
            from_a = [e async for e in on_a.iter_events(gen.id)]
        assert [e.to_json() for e in from_b] == [e.to_json() for e in from_a]
        stored = await on_b.get_generation(gen.id)
        text = "slow words arrive one by one and then the end."
        check_invariants(from_b, final_blocks={stored["blocks"][0]["id"]: text})
        # Resume on B from the middle: no gap, no duplicate.
        middle = len(from_b) // 2
        with anyio.fail_after(30):
            resumed = [e async for e in on_b.iter_events(gen.id, after=middle)]
        assert [e.to_json() for e in resumed] == [e.to_json() for e in from_b[middle:]]
        assert (await on_b.get_file(gen.file_id or ""))["blocks"][-1]["text"] == text


async def test_resume_on_b_while_it_runs_on_a(pair: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = pair
    async with StreamingClient(a.url) as on_a, StreamingClient(b.url) as on_b:
        gen = await on_a.generate("scripted", prompt="hi", options=SLOW_TEXT, on_disconnect="continue")
        first = await until(gen, lambda e: e.type == "block.delta")
        await gen._source.aclose()  # type: ignore[union-attr]  # the client moves to B
        with anyio.fail_after(30):
            rest = [e async for e in on_b.iter_events(gen.id, after=first[-1].seq)]
        check_invariants(first + rest)
        assert rest[-1].type == "generation.completed"


async def test_a_subscriber_on_b_keeps_it_alive_on_a(pair: tuple[ServerProcess, ServerProcess]) -> None:
    """on_disconnect=cancel (the default): A sees no subscriber of its own, yet one on B counts."""
    a, b = pair
    script = {"rounds": [[{"text": "wait for it", "chunk": 4}, {"sleep_ms": int(GRACE_S * 1500)},
                         {"text": "... done"}]]}
    async with StreamingClient(a.url) as on_a, StreamingClient(b.url) as on_b:
        gen = await on_a.generate("scripted", prompt="hi", options=script)
        with anyio.fail_after(60):
            from_b = [e async for e in on_b.iter_events(gen.id)]
        assert from_b[-1].type == "generation.completed"
        check_invariants(from_b)
        # With nobody streaming it anywhere, the grace runs out and A cancels it.
        idle = await on_a.generate("scripted", prompt="hi", options=FOREVER)
        watching = await on_b.attach(idle.id)
        await until(watching, lambda e: e.type == "block.delta")
        await watching._source.aclose()  # type: ignore[union-attr]  # the client on B leaves
        with anyio.fail_after(60):
            while (state := (await on_b.get_generation(idle.id))["generation"]) ["state"] != "cancelled":
                await anyio.sleep(0.1)
        assert state["state"] == "cancelled"
        with anyio.fail_after(30):
            events = [e async for e in on_b.iter_events(idle.id)]
        assert events[-1].data["reason"] == "client disconnected"
        check_invariants(events)


async def test_cancel_through_b(pair: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = pair
    async with StreamingClient(a.url) as on_a, StreamingClient(b.url) as on_b:
        gen = await on_a.generate("scripted", prompt="hi", options=FOREVER, on_disconnect="continue")
        watching = await on_b.attach(gen.id)
        await until(watching, lambda e: e.type == "block.delta")
        with anyio.fail_after(30):
            state = (await on_b.cancel(gen.id))["state"]
            while state != "cancelled":  # the cancel reached A; its flush reaches the store
                await anyio.sleep(0.05)
                state = (await on_b.get_generation(gen.id))["generation"]["state"]
            await watching.wait()
        assert watching.state == "cancelled"
        check_invariants(watching.events)
        assert [e.type for e in watching.events[-2:]] == ["block.aborted", "generation.cancelled"]
        # Idempotent, through either process.
        assert (await on_a.cancel(gen.id))["state"] == "cancelled"
        assert (await on_b.cancel(gen.id))["state"] == "cancelled"


async def test_client_side_tool_answered_through_b(pair: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = pair
    lookup = {
        "name": "lookup",
        "description": "Look a word up in the client's dictionary.",
        "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
    }
    script = {"rounds": [[{"tool_call": {"name": "lookup", "args": {"word": "lease"}}}],
                         [{"echo_tool_results": True}]]}
    asked: list[dict[str, object]] = []

    def answer(args: dict[str, object]) -> str:
        asked.append(args)
        return "a contract to use a thing for a time"

    async with StreamingClient(a.url) as on_a, StreamingClient(b.url) as on_b:
        gen = await on_a.generate("scripted", prompt="define lease", options=script, tools=[lookup],
                                  on_disconnect="continue")
        via_b = await on_b.attach(gen.id)
        via_b.on_tool_call("lookup", answer)
        with anyio.fail_after(30):
            await via_b.wait()
        assert asked == [{"word": "lease"}]
        assert via_b.state == "succeeded", via_b.error
        check_invariants(via_b.events)
        results = [e for e in via_b.events if e.type == "tool.result"]
        assert [r.data["result"] for r in results] == [["a contract to use a thing for a time"]]
        stored = await on_a.get_generation(gen.id)
        assert "[lookup result: a contract to use a thing for a time]" in [b["text"] for b in stored["blocks"]]
        # The call is answered once: a second answer through either process is refused.
        call_id = results[0].data["call_id"]
        for client in (on_a, on_b):
            async with httpx.AsyncClient(base_url=client.base_url) as http:
                again = await http.post(f"/generations/{gen.id}/tool-results", json={"call_id": call_id, "result": "x"})
            assert again.status_code == 409


async def test_kill_a_mid_stream_b_reports_interrupted(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    url = store_url(redis_server, f"kill{uuid.uuid4().hex[:8]}:")
    with server_pair(tmp_path, url) as (a, b):
        async with StreamingClient(a.url) as on_a, StreamingClient(b.url) as on_b:
            gen = await on_a.generate("scripted", prompt="hi", options=FOREVER, on_disconnect="continue")
            watching = await on_b.attach(gen.id)
            seen = await until(watching, lambda e: e.type == "block.delta")
            a.kill()
            # B notices once A's lease has expired; the guard only bounds a hang.
            with anyio.fail_after(LEASE_S * 10):
                await watching.wait()
            assert seen[-1] in watching.events
            # The client's own fold applies the ending across the gap it declares.
            assert watching.state == "failed" and watching.error is not None
            assert watching.error["code"] == "interrupted"
            cursor = before_gap(watching.events)
            ending = await lost_ending(on_b, gen.id, cursor)
            assert [e.seq for e in watching.events if e.seq > cursor] == [e.seq for e in ending]
            before = [e for e in watching.events if e.seq <= cursor]
            assert ending[-1].data["error"]["code"] == "interrupted"
            # Across the gap, what B's client got is a well formed generation.
            closed = [Event(e.type, cursor + i, e.generation_id, e.data) for i, e in enumerate(ending, 1)]
            check_invariants(before + closed)
            stored = await on_b.get_generation(gen.id)
            assert stored["generation"]["state"] == "failed"
            assert stored["generation"]["error"]["code"] == "interrupted"
            assert [blk["stream_state"] for blk in stored["blocks"]] == ["aborted"]
            assert stored["blocks"][0]["text"].startswith("sta")


# -- Redis going away --


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", durable=True).start()
    yield server
    server.stop()


async def test_redis_restart_mid_stream_is_retried(durable_redis: RedisServer, tmp_path: Path) -> None:
    url = store_url(durable_redis, "restart:")
    script = {"rounds": [[{"text": "before the restart, ", "chunk": 5}, {"sleep_ms": 1500},
                         {"text": "after the restart.", "chunk": 5}]]}
    with server_pair(tmp_path, url) as (a, b):
        async with StreamingClient(a.url) as on_a, StreamingClient(b.url) as on_b:
            gen = await on_a.generate("scripted", prompt="hi", options=script, on_disconnect="continue")
            watching = await on_b.attach(gen.id)
            await until(watching, lambda e: e.type == "block.delta")
            durable_redis.restart()
            with anyio.fail_after(60):
                await watching.wait()
            assert watching.state == "succeeded", watching.error
            stored = await on_b.get_generation(gen.id)
            block = stored["blocks"][0]
            assert block["text"] == "before the restart, after the restart."
            check_invariants(watching.events, final_blocks={block["id"]: block["text"]})


async def test_redis_gone_too_long_fails_store_unavailable(durable_redis: RedisServer, tmp_path: Path) -> None:
    # Commands are retried for 0.5 s, far less than the lease: A gives up before anyone
    # could take A for dead.
    url = f"{durable_redis.url}?lease=30&retry=0.5&prefix=gone:"
    script = {"rounds": [[{"text": "before", "chunk": 3}, {"sleep_ms": 500},
                         {"text": " during", "chunk": 3}, {"sleep_ms": 600_000}]]}
    with server_pair(tmp_path, url) as (a, b):
        async with StreamingClient(a.url) as on_a, StreamingClient(b.url) as on_b:
            gen = await on_a.generate("scripted", prompt="hi", options=script, on_disconnect="continue")
            await until(gen, lambda e: e.type == "block.delta")
            durable_redis.stop()
            with anyio.fail_after(60):
                await gen.wait()
            assert gen.state == "failed"
            assert gen.error is not None and gen.error["code"] == "store_unavailable"
            check_invariants(gen.events)
            durable_redis.start()
            # A writes the ending it could not write before, once Redis is back.
            with anyio.fail_after(60):
                while True:
                    try:
                        state = (await on_b.get_generation(gen.id))["generation"]["state"]
                    except Exception:  # B's own retries may still be running out
                        state = None
                    if state == "failed":
                        break
                    await anyio.sleep(0.1)
                from_b = [e async for e in on_b.iter_events(gen.id)]
            assert [e.to_json() for e in from_b] == [e.to_json() for e in gen.events]


async def test_a_paused_process_loses_its_lease_and_stops(redis_server: RedisServer, tmp_path: Path) -> None:
    """A frozen (not dead) past its lease: B fails the generation; A, thawed, gives it up too."""
    url = store_url(redis_server, f"pause{uuid.uuid4().hex[:8]}:")
    script = {"rounds": [[{"text": "one", "chunk": 3}, {"sleep_ms": int(LEASE_S * 1000)},
                         {"text": " two", "chunk": 4}, {"sleep_ms": 600_000}]]}
    with server_pair(tmp_path, url) as (a, b):
        async with StreamingClient(a.url) as on_a, StreamingClient(b.url) as on_b:
            gen = await on_a.generate("scripted", prompt="hi", options=script, on_disconnect="continue")
            await until(gen, lambda e: e.type == "block.delta")
            watching = await on_b.attach(gen.id)
            await until(watching, lambda e: e.type == "block.delta")
            assert a.proc is not None
            a.proc.send_signal(signal.SIGSTOP)
            try:
                with anyio.fail_after(LEASE_S * 10):
                    await watching.wait()
            finally:
                a.proc.send_signal(signal.SIGCONT)
            assert watching.state == "failed"
            ending = await lost_ending(on_b, gen.id, before_gap(watching.events))
            assert ending[-1].data["error"]["code"] == "interrupted"
            # A wakes up, finds its log closed by B, and ends its own copy the same way.
            with anyio.fail_after(30):
                await gen.wait()
            assert gen.state == "failed"
            assert gen.error is not None and gen.error["code"] == "interrupted"
            check_invariants(gen.events)
            stored = await on_a.get_generation(gen.id)
            assert stored["generation"]["error"]["code"] == "interrupted"
            with anyio.fail_after(30):
                final = [e async for e in on_b.iter_events(gen.id)]
            assert [e.to_json() for e in final] == [e.to_json() for e in watching.events]
            assert [e.to_json() for e in watching.events[-len(ending):]] == [e.to_json() for e in ending]
            # What A's own client saw and the stored log never disagree on a seq.
            stored_by_seq = {e.seq: e.to_json() for e in final}
            assert all(stored_by_seq.get(e.seq, e.to_json()) == e.to_json() for e in gen.events)


@pytest.fixture
def forgetful_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis-forgetful").start()  # no persistence
    yield server
    server.stop()


async def test_redis_losing_its_data_does_not_fail_a_single_servers_generation(
    forgetful_redis: RedisServer, tmp_path: Path
) -> None:
    """Redis restarts empty while one server streams: the server writes the log again and the
    generation completes. It used to reap itself (its lease had vanished with Redis's data)
    and fail its own generation as "failed by another process"."""
    url = f"{forgetful_redis.url}?lease=1.5&prefix=forget:"
    srv = ServerProcess(tmp_path / "single.log", store=url).start()
    try:
        words = [{"text": f"word{i} ", "chunk": 8} for i in range(120)]
        script = {"rounds": [[step for w in words for step in (w, {"sleep_ms": 25})]]}
        async with StreamingClient(srv.url) as client:
            gen = await client.generate("scripted", prompt="hi", options=script, on_disconnect="continue")
            await until(gen, lambda e: e.type == "block.delta")
            forgetful_redis.restart()  # empty: no persistence
            # And it loses its data again and again for a while (as if it kept restarting):
            # the server's lease is gone far more often than the heartbeat renews it.
            import redis.asyncio as aioredis

            flusher = aioredis.Redis.from_url(forgetful_redis.url)
            try:
                for _ in range(100):
                    await flusher.flushall()
                    await anyio.sleep(0.02)
            finally:
                await flusher.aclose()
            with anyio.fail_after(60):
                await gen.wait()
            assert gen.state == "succeeded", gen.error
            check_invariants(gen.events)
            # The log was written again from the start: a reader of the store gets all of it.
            stored = await client.get_generation(gen.id)
            assert stored["generation"]["state"] == "succeeded"
            assert stored["blocks"][0]["text"] == "".join(f"word{i} " for i in range(120))
    finally:
        srv.kill()


async def test_leases_expired_while_redis_was_down_are_not_taken_for_dead(
    durable_redis: RedisServer, tmp_path: Path
) -> None:
    """Redis is down longer than the lease: every lease has expired when it is back. The
    processes get a lease to renew theirs before anyone reaps: A's generation completes."""
    url = f"{durable_redis.url}?lease=1&prefix=down:"
    script = {"rounds": [[{"text": "before the outage, ", "chunk": 5}, {"sleep_ms": 4000},
                         {"text": "after it.", "chunk": 5}]]}
    with server_pair(tmp_path, url) as (a, b):
        async with StreamingClient(a.url) as on_a, StreamingClient(b.url) as on_b:
            gen = await on_a.generate("scripted", prompt="hi", options=script, on_disconnect="continue")
            watching = await on_b.attach(gen.id)
            await until(watching, lambda e: e.type == "block.delta")
            durable_redis.stop()
            await anyio.sleep(2.5)  # the leases (1 s) expire meanwhile
            durable_redis.start()
            with anyio.fail_after(60):
                await watching.wait()
            assert watching.state == "succeeded", watching.error
            check_invariants(watching.events)
            stored = await on_b.get_generation(gen.id)
            assert stored["blocks"][0]["text"] == "before the outage, after it."
