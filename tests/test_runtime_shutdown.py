"""Shutdown: a grace period for running generations, and ``stop_now`` that ends it at once."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from streaming.requests import GenerateRequest

pytestmark = pytest.mark.anyio

SLOW = {"repeat": 100, "delay_ms": 200}


async def test_stop_now_ends_the_grace_period_with_a_terminal_event(make_runtime: Any) -> None:
    runtime = await make_runtime(shutdown_grace_s=60)
    gen = await runtime.start(GenerateRequest(generator="echo", prompt="a b", options=SLOW), subscribed=True)
    events = []

    async def follow() -> None:
        async for ev in runtime.events(gen.id):
            events.append(ev)

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        while not any(ev.type == "block.delta" for ev in events):
            await anyio.sleep(0.01)
        runtime.begin_shutdown()
        await anyio.sleep(0.3)
        assert not events[-1].terminal  # the grace period lets it run
        started = time.monotonic()
        runtime.stop_now()
    assert time.monotonic() - started < 10  # not the 60 s grace
    assert events[-1].type == "generation.failed"
    assert events[-1].to_dict()["error"]["code"] == "shutdown"
    assert (await runtime.get_generation(gen.id)).state == "failed"


async def test_the_grace_period_ends_when_every_generation_has(make_runtime: Any) -> None:
    runtime = await make_runtime(shutdown_grace_s=60)
    gen = await runtime.start(GenerateRequest(generator="echo", prompt="a b c", options={"delay_ms": 20}))
    started = time.monotonic()
    await runtime.shutdown()
    assert time.monotonic() - started < 30
    assert (await runtime.get_generation(gen.id)).state == "succeeded"
