"""A generation run by one runtime, reached through another that shares its store: the
handle of a generation run elsewhere, and the control messages the running side obeys.
Two in-process runtimes share one real memory store marked shared (what Redis is across
processes: tests/test_multiprocess.py runs the same over real processes)."""

from __future__ import annotations

import pytest

from streaming.requests import GenerateRequest, ToolResultRequest
from streaming.runtime.elsewhere import ElsewhereGeneration
from streaming.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio

CLOCK = {"name": "clock", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}


class SharedMemory(MemoryStore):
    shared = True


async def test_another_runtime_streams_cancels_and_answers_through_the_store(make_runtime) -> None:
    store = SharedMemory()
    runs = await make_runtime(store, persist_interval_s=0.01)
    reaches = await make_runtime(store, persist_interval_s=0.01)

    # A client tool answered through the other runtime.
    script = {"rounds": [[{"tool_call": {"name": "clock", "args": {"tz": "UTC"}}}], [{"echo_tool_results": True}]]}
    gen = await runs.start(GenerateRequest(generator="scripted", prompt="x", tools=[CLOCK], options=script), subscribed=True)
    handle = await reaches.handle(gen.id)
    assert isinstance(handle, ElsewhereGeneration)
    seen = []
    async for batch in reaches.subscribe(gen.id):
        for event in batch:
            seen.append(event)
            if event.type == "tool.call":
                await reaches.submit_tool_result(gen.id, ToolResultRequest(call_id=event.data["call_id"], result=["noon"]))
    assert seen[-1].type == "generation.completed"
    assert [e.data["result"] for e in seen if e.type == "tool.result"] == [["noon"]]

    # A cancel sent through the other runtime stops it.
    long = await runs.start(GenerateRequest(
        generator="counting", prompt="x", options={"key": "elsewhere", "delay_ms": 5}, on_disconnect="continue"
    ))
    async for _ in reaches.subscribe(long.id):
        break  # it streams there too
    cancelled = await reaches.cancel(long.id, "stop it")
    assert cancelled.state.value == "cancelled"
    events = [e async for e in runs.events(long.id)]
    assert events[-1].type == "generation.cancelled" and events[-1].data["reason"] == "stop it"
