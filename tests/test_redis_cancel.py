"""A follower on Redis stops when its reader leaves, even if redis-py swallows the cancel.

redis-py's blocking commands can swallow a CancelledError that arrives at the wrong moment
(redis/redis-py#2028). Here the follow client's XREAD does exactly that, against a real
redis-server: the follower must still stop, and stop telling the running process that
someone follows it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streaming.model import Generation
from streaming.stores.redis import RedisStore
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


class SwallowingXread:
    """The follow client, but its XREAD swallows the first cancel it gets."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.swallowed = 0
        self.reading = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    async def xread(self, *args: Any, **kwargs: Any) -> Any:
        self.reading.set()
        try:
            return await self.client.xread(*args, **kwargs)
        except asyncio.CancelledError:
            if self.swallowed:
                raise
            self.swallowed += 1
            return []


async def test_a_follower_stops_when_its_cancel_was_swallowed(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, block_s=0.5, presence_s=0.2)
    await store.open()
    try:
        gen = Generation(generator="echo", state="running")
        await store.put_generation(gen)
        swallowing = SwallowingXread(store._follow_client)
        store._follow_client = swallowing
        pings: list[str] = []
        pubsub = store._r.pubsub()
        await pubsub.subscribe(store._k("ctl", gen.id))

        async def follow() -> None:
            async for _ in store.follow(gen.id):
                pass

        task = asyncio.create_task(follow())
        await asyncio.wait_for(swallowing.reading.wait(), timeout=10)
        await asyncio.sleep(0.05)  # well inside the blocking XREAD (0.5 s)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=10)
        assert done, "the follower went on after its cancel was swallowed"
        assert task.cancelled() and swallowing.swallowed == 1
        # No presence after it stopped: the running process may apply its disconnect grace.
        await asyncio.sleep(0.3)
        while await pubsub.get_message(timeout=0.05) is not None:
            pass
        await asyncio.sleep(0.6)
        while (message := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)) is not None:
            pings.append(str(message["data"]))
        assert pings == []
        await pubsub.aclose()
    finally:
        await store.close()

