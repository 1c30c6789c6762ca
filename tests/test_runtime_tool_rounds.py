"""Tool rounds and the plugin driver on an in-process runtime (no server): server and
client answers, calls nobody can answer, the round cap, and every plugin shape."""

from __future__ import annotations

from typing import Any

import pytest

from streaming.events import Event
from streaming.requests import GenerateRequest, ToolResultRequest
from streaming.runtime import Runtime
from streaming.tools import ToolRegistry
from tests.invariants import check_invariants

pytestmark = pytest.mark.anyio

CLOCK = {"name": "clock", "description": "The time on the user's device.",
         "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}
ECHO = [{"echo_tool_results": True}]


def call(name: str, **args: Any) -> dict[str, Any]:
    return {"tool_call": {"name": name, "args": args}}


def server_tools() -> ToolRegistry:
    tools = ToolRegistry()

    @tools.register
    def add(a: int, b: int = 1) -> int:
        return a + b

    return tools


async def play(runtime: Runtime, request: GenerateRequest) -> list[Event]:
    gen = await runtime.start(request, subscribed=True)
    events = [e async for e in runtime.events(gen.id)]
    check_invariants(events)
    return events


def of(events: list[Event], kind: str) -> list[dict[str, Any]]:
    return [e.data for e in events if e.type == kind]


async def test_a_server_tool_answers_and_the_next_round_sees_the_result(make_runtime) -> None:
    runtime = await make_runtime(tools=server_tools())
    events = await play(runtime, GenerateRequest(
        generator="scripted", prompt="x", tools=["add"], options={"rounds": [[call("add", a=2)], ECHO]}
    ))
    (called,) = of(events, "tool.call")
    assert called["client_side"] is False
    assert of(events, "tool.result")[0]["result"] == ["3"]
    assert events[-1].type == "generation.completed"
    assert runtime.stats().tool_calls == 1 and runtime.stats().tool_errors == 0


async def test_a_client_answers_a_call_while_the_generation_waits(make_runtime) -> None:
    runtime = await make_runtime()
    gen = await runtime.start(GenerateRequest(
        generator="scripted", prompt="x", tools=[CLOCK], options={"rounds": [[call("clock", tz="UTC")], ECHO]}
    ), subscribed=True)
    events: list[Event] = []
    async for event in runtime.events(gen.id):
        events.append(event)
        if event.type == "tool.call":
            assert event.data["client_side"] is True
            await runtime.submit_tool_result(gen.id, ToolResultRequest(call_id=event.data["call_id"], result=["noon"]))
    check_invariants(events)
    assert of(events, "tool.result")[0]["result"] == ["noon"]
    assert events[-1].type == "generation.completed"


async def test_calls_nobody_can_answer_get_error_results_at_once(make_runtime) -> None:
    runtime = await make_runtime(tools=server_tools())
    events = await play(runtime, GenerateRequest(
        generator="scripted", prompt="x", tools=[CLOCK],
        options={"rounds": [[call("nope"), call("add", a=1), call("clock", tz=3)], ECHO]},
    ))
    results = of(events, "tool.result")
    assert [r["is_error"] for r in results] == [True, True, True]
    assert [r["result"][0].split(":")[0] for r in results] == [
        "unknown tool 'nope'", "tool 'add' was not offered", "invalid arguments",
    ]
    assert runtime.stats().tool_errors == 3


async def test_the_round_cap_fails_the_generation(make_runtime) -> None:
    runtime = await make_runtime(tools=server_tools(), max_tool_rounds=2)
    events = await play(runtime, GenerateRequest(
        generator="scripted", prompt="x", tools=["add"], options={"rounds": [[call("add", a=1)]] * 5},
    ))
    assert events[-1].data["error"]["code"] == "max_tool_rounds"


async def test_client_tools_return_ends_the_generation_at_the_call(make_runtime) -> None:
    runtime = await make_runtime()
    events = await play(runtime, GenerateRequest(
        generator="scripted", prompt="x", tools=[CLOCK], client_tools="return",
        options={"rounds": [[call("clock", tz="UTC")], ECHO]},
    ))
    assert of(events, "tool.call") and not of(events, "tool.result")
    assert events[-1].type == "generation.completed"


@pytest.mark.parametrize("shape", ["CountingGenerator", "SyncCountingGenerator", "BlockApiGenerator", "ThreadBlockApiGenerator"])
async def test_every_plugin_shape_streams_into_its_blocks(make_runtime, shape: str) -> None:
    runtime = await make_runtime(generators={"shape": f"tests.plugins:{shape}"})
    events = await play(runtime, GenerateRequest(
        generator="shape", prompt="x", options={"key": f"shape-{shape}", "limit": 3, "delay_ms": 0}
    ))
    assert events[-1].type == "generation.completed"
    text = "".join(e.data["text"] for e in events if e.type == "block.delta")
    expected = "block 0 ünïcødé ✓" if shape == "BlockApiGenerator" else "0 1 2 "
    assert text == expected


async def test_a_plugin_that_raises_aborts_its_blocks(make_runtime) -> None:
    runtime = await make_runtime(generators={"raising": "tests.plugins:RaisingGenerator"})
    events = await play(runtime, GenerateRequest(generator="raising", prompt="x", options={"k": 2, "blocks": 2}))
    assert [e.type for e in events[-3:]] == ["block.aborted", "block.aborted", "generation.failed"]
    assert "model exploded" in events[-1].data["error"]["message"]
