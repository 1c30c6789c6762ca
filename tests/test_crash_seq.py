"""kill -9 at random points: every resuming client is told, and no seq is ever reused.

Real ``streaming serve`` processes. Clients stream generations and record every event they
receive; the server is killed with SIGKILL at a random moment (the runtime streams ahead of
its batched store writes, so clients have seen events the store never got). After the
restart (sqlite) or once the lease lapses (redis, read through the other process), each
client resumes with ``Last-Event-ID``: it must get a terminal event above its cursor, and
every seq it received must, if the log holds it, hold the very event it received.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from streaming.wire import Event, EventDecoder
from tests.redis_server import RedisServer
from tests.server_process import ServerProcess, server_pair

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

WORDS = " ".join(f"w{i}" for i in range(200)) + " "
STREAMS = 4
ROUNDS = 3


async def stream(url: str, gen_id: str, got: list[Event], after: int = 0) -> None:
    """Read the generation's SSE stream into ``got`` until it ends or the connection drops."""
    headers = {"accept": "text/event-stream"}
    if after:
        headers["last-event-id"] = str(after)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            async with http.stream("GET", f"/generations/{gen_id}/events", headers=headers) as r:
                assert r.status_code == 200
                decoder = EventDecoder()
                async for chunk in r.aiter_bytes():
                    for event in decoder.decode(chunk):
                        got.append(event)
                        if event.terminal:
                            return
    except (httpx.TransportError, httpx.RemoteProtocolError):
        pass  # killed


async def start(url: str, rng: random.Random) -> str:
    body = {
        "generator": "echo", "prompt": WORDS, "on_disconnect": "continue",
        "options": {"repeat": rng.randint(20, 200), "delay_ms": rng.choice([0, 0, 0.2, 1])},
    }
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        r = await http.post("/generations", json=body, headers={"accept": "application/json"})
    assert r.status_code == 201, r.text
    return str(r.json()["generation"]["id"])


async def stream_until_killed(url: str, kill: object, rng: random.Random) -> dict[str, list[Event]]:
    """Start STREAMS generations, stream each, and kill the server after a random delay."""
    seen: dict[str, list[Event]] = {}
    async with anyio.create_task_group() as tg:
        for _ in range(STREAMS):
            gen_id = await start(url, rng)
            seen[gen_id] = []
            tg.start_soon(stream, url, gen_id, seen[gen_id])
        await anyio.sleep(rng.uniform(0.05, 1.5))
        kill()  # type: ignore[operator]
    return seen


async def check_told(url: str, seen: dict[str, list[Event]]) -> int:
    """Resume every stream where its client was; compare what it saw with the log. Returns
    how many events clients had seen beyond what was stored (lost)."""
    lost = 0
    for gen_id, got in seen.items():
        cursor = got[-1].seq if got else 0
        assert [e.seq for e in got] == list(range(1, cursor + 1))  # what it saw was gapless
        if got and got[-1].terminal:
            continue  # it ended before the kill, and this client knows it
        resumed: list[Event] = []
        with anyio.fail_after(60):
            await stream(url, gen_id, resumed, after=cursor)
        # Told: a terminal event above its cursor, saying why.
        assert resumed, f"{gen_id}: resuming after {cursor} gave nothing"
        assert resumed[-1].terminal and resumed[-1].seq > cursor
        assert all(e.seq > cursor for e in resumed)
        whole: list[Event] = []
        with anyio.fail_after(60):
            await stream(url, gen_id, whole)
        if resumed[-1].type == "generation.failed":
            assert resumed[-1].data["error"]["code"] == "interrupted"
        # No seq reused: every seq the client got is, in the log, the very event it got.
        stored = {e.seq: e for e in whole}
        for event in got:
            if event.seq in stored:
                assert stored[event.seq].to_json() == event.to_json(), f"seq {event.seq} of {gen_id} reused"
            else:
                lost += 1
        if lost_info := whole[-1].data.get("events_lost"):
            assert lost_info["through"] >= cursor
        assert [e.seq for e in whole] == sorted(stored)
    return lost


async def test_kill_9_on_sqlite_at_random_points(tmp_path: Path) -> None:
    rng = random.Random()
    data = tmp_path / "data"
    for round_ in range(ROUNDS):
        srv = ServerProcess(tmp_path / f"serve{round_}.log", "--data-dir", str(data)).start()
        try:
            seen = await stream_until_killed(srv.url, srv.kill, rng)
        finally:
            srv.kill()
        again = ServerProcess(tmp_path / f"again{round_}.log", "--data-dir", str(data)).start()
        try:
            await check_told(again.url, seen)
        finally:
            again.kill()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


async def test_kill_9_with_redis_at_random_points(redis_server: RedisServer, tmp_path: Path) -> None:
    """A streams and dies; its clients resume through B once A's lease has lapsed."""
    rng = random.Random()
    for round_ in range(ROUNDS):
        url = f"{redis_server.url}?lease=1&prefix=crash{uuid.uuid4().hex[:8]}:"
        logs = tmp_path / f"round{round_}"
        logs.mkdir()
        with server_pair(logs, url) as (a, b):
            seen = await stream_until_killed(a.url, a.kill, rng)
            await check_told(b.url, seen)
