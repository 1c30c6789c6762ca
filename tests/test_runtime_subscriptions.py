"""Subscriptions and handles on an in-process runtime: limits, the disconnect grace, and
one handle interface for generations run here or elsewhere."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from streaming.errors import LimitExceededError, NotFoundError, ToolCallConflictError
from streaming.requests import GenerateRequest, ToolResultRequest
from streaming.runtime.elsewhere import ElsewhereGeneration
from streaming.runtime.handles import LocalGeneration
from streaming.stores.sqlite import SqliteStore

pytestmark = pytest.mark.anyio


def counting(key: str, **options: object) -> GenerateRequest:
    return GenerateRequest(generator="counting", prompt="x", options={"key": key, "delay_ms": 5, **options})


async def test_subscribers_are_limited_per_generation(make_runtime) -> None:
    runtime = await make_runtime(max_subscribers_per_generation=1)
    gen = await runtime.start(counting("subs", limit=50), subscribed=True)
    first = runtime.subscribe(gen.id)
    await first.__anext__()
    assert runtime.stats().subscribers == 1
    with pytest.raises(LimitExceededError):
        await runtime.check_subscribable(gen.id)
    with pytest.raises(LimitExceededError):
        await runtime.subscribe(gen.id).__anext__()
    await first.aclose()
    assert runtime.stats().subscribers == 0
    await runtime.check_subscribable(gen.id)


async def test_nobody_subscribed_for_the_grace_period_cancels(make_runtime) -> None:
    runtime = await make_runtime(disconnect_grace_s=0.05)
    kept = await runtime.start(counting("kept", limit=40).model_copy(update={"on_disconnect": "continue"}))
    gone = await runtime.start(counting("gone"))
    left = await runtime.start(counting("left"), subscribed=True)
    async for _ in runtime.subscribe(left.id):
        break  # one batch, then the subscriber leaves
    with anyio.fail_after(10):
        while (await runtime.get_generation(gone.id)).state.value == "running":
            await anyio.sleep(0.01)
        while (await runtime.get_generation(left.id)).state.value == "running":
            await anyio.sleep(0.01)
    assert (await runtime.get_generation(gone.id)).state.value == "cancelled"
    assert (await runtime.get_generation(left.id)).state.value == "cancelled"
    events = [e async for e in runtime.events(kept.id)]
    assert events[-1].type == "generation.completed"


async def test_one_handle_interface_here_and_elsewhere(make_runtime, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'handles.db'}"
    first = await make_runtime(SqliteStore(url))
    gen = await first.start(GenerateRequest(generator="echo", prompt="a b "), subscribed=True)
    here = await first.handle(gen.id)
    assert isinstance(here, LocalGeneration)
    live_events = [e for batch in [b async for b in here.subscribe(0)] for e in batch]
    await first.__aexit__(None, None, None)  # the process goes; the store stays

    second = await make_runtime(SqliteStore(url))
    there = await second.handle(gen.id)
    assert isinstance(there, ElsewhereGeneration)
    assert there.read().state.value == "succeeded" and there.read().last_seq == live_events[-1].seq
    replayed = [e for batch in [b async for b in there.subscribe(0)] for e in batch]
    assert [e.seq for e in replayed] == [e.seq for e in live_events]
    assert [e async for e in second.subscribe(gen.id, after=live_events[-1].seq)] == []
    assert [b.text for b in await there.output_blocks()] == ["a b "]
    assert (await there.cancel("late", 0.1)).state.value == "succeeded"
    with pytest.raises(ToolCallConflictError):
        await there.answer_tool(ToolResultRequest(call_id="c1", result=["x"]))
    with pytest.raises(NotFoundError):
        await second.handle("gen_nope")


async def test_a_turn_mark_turns_only_once_the_loop_has_run() -> None:
    from streaming.runtime.aio import TurnMark

    turn = TurnMark()
    turn.arm()
    sum(range(1000))  # work without an await: the loop has not run
    assert not turn.turned
    await anyio.lowlevel.checkpoint()
    assert turn.turned
    turn.arm()
    assert not turn.turned
