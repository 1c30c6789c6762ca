"""Function-call round trips mid-stream, end to end (docs/protocol.md, "Tool calls mid-stream")."""

from __future__ import annotations

import json
import threading
from typing import Literal

import httpx
import pytest
from streaming.client.client import StreamingClient

from streaming.errors import GenerationFailedError
from streaming.model import MimeTypes
from streaming.tools import ToolRegistry
from tests.invariants import check_invariants

pytestmark = pytest.mark.anyio

barrier = threading.Barrier(2, timeout=10)


def make_tools() -> ToolRegistry:
    tools = ToolRegistry()

    @tools.register
    def left(x: int) -> str:
        """Meets `right` halfway: both must run at once or the barrier breaks."""
        barrier.wait()
        return f"left({x})"

    @tools.register
    def right(x: int) -> str:
        barrier.wait()
        return f"right({x})"

    @tools.register
    async def add(a: int, b: int = 1) -> int:
        return a + b

    @tools.register
    def explode(reason: str) -> str:
        raise ValueError(f"exploded: {reason}")

    @tools.register
    def get_weather(city: str, unit: Literal["c", "f"] = "c") -> str:
        """The weather in a city."""
        return f"{city}: 21°{unit.upper()}"

    return tools


CLIENT_TOOL = {
    "name": "get_time",
    "description": "The time on the user's device.",
    "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
}


@pytest.fixture
def srv(make_server):
    return make_server(tools=make_tools(), tool_timeout_s=5.0)


def call(name: str, **args: object) -> dict:
    return {"tool_call": {"name": name, "args": args}}


ECHO = [{"echo_tool_results": True}]


async def run_text(gen) -> str:
    text = await gen.text()
    check_invariants(gen.events)
    return text


async def test_schema_from_signature() -> None:
    tool = make_tools()["get_weather"].tool
    assert tool.description == "The weather in a city."
    assert tool.parameters["required"] == ["city"]
    assert tool.parameters["properties"]["unit"]["enum"] == ["c", "f"]
    assert tool.parameters["properties"]["city"]["type"] == "string"


async def test_two_parallel_server_calls_in_one_round(srv) -> None:
    async with StreamingClient(srv.url) as client:
        gen = await client.generate(
            "scripted",
            prompt="both please",
            tools=["left", "right"],
            options={"rounds": [[call("left", x=1), call("right", x=2)], ECHO]},
        )
        text = await run_text(gen)
        # Both ran at once (the barrier), so either may finish first.
        assert sorted(text.replace("][", "]\n[").split("\n")) == [
            "[left result: left(1)]",
            "[right result: right(2)]",
        ]
        types = [e.type for e in gen.events]
        assert types.count("tool.call") == 2 and types.count("tool.result") == 2
        results = [e for e in gen.events if e.type == "tool.result"]
        assert not any(e.data["is_error"] for e in results)
        # The invocation and result blocks are in the conversation, with their roles.
        file = await client.get_file(gen.file_id)
        kinds = [(b["mime_type"], b["tags"][0]["value"]["string-value"]) for b in file["blocks"]]
        assert kinds[0] == ("text/plain", "user")
        assert (MimeTypes.FUNCTION_CALL_INVOCATION, "assistant") in kinds
        assert (MimeTypes.FUNCTION_CALL_RESULT, "tool") in kinds
        created = [e.data["block"] for e in gen.events if e.type == "block.created"]
        inv = [b for b in created if b["mime_type"] == MimeTypes.FUNCTION_CALL_INVOCATION]
        assert len(inv) == 2
        # The tool list reached the plugin as a FunctionCallingSupport capability.
        caps = gen.events[0].data["capabilities"]["capability_responses"]
        assert caps == [{"name": "steamship.function_calling_support", "fulfilled_at": 1}]


async def test_client_side_call_answered_by_the_client(srv) -> None:
    async with StreamingClient(srv.url) as client:
        seen = []

        async def get_time(args: dict) -> str:
            seen.append(args)
            return f"12:00 in {args['tz']}"

        gen = await client.generate(
            "scripted",
            prompt="what time is it?",
            tools=[CLIENT_TOOL],
            options={"rounds": [[{"text": "Let me check. "}, call("get_time", tz="UTC")], ECHO]},
        )
        gen.on_tool_call("get_time", get_time)
        assert await run_text(gen) == "Let me check. [get_time result: 12:00 in UTC]"
        assert seen == [{"tz": "UTC"}]


async def test_three_rounds_in_a_row(srv) -> None:
    async with StreamingClient(srv.url) as client:
        gen = await client.generate(
            "scripted",
            prompt="chain",
            tools=["add", CLIENT_TOOL],
            options={
                "rounds": [
                    [call("add", a=1, b=2)],
                    [call("get_time", tz="CET")],
                    [call("add", a=40)],
                    [{"text": "done: "}, {"echo_tool_results": True}],
                ]
            },
        )
        gen.on_tool_call("get_time", lambda args: ["noon"])
        text = await run_text(gen)
        assert text == "done: [add result: 3][get_time result: noon][add result: 41]"
        started_rounds = [e for e in gen.events if e.type == "block.created" and e.data["block"]["mime_type"] == "text/plain"]
        assert len(started_rounds) == 3  # rounds 2-4 preallocate their own text block


async def test_tool_that_raises_and_bad_arguments(srv) -> None:
    async with StreamingClient(srv.url) as client:
        gen = await client.generate(
            "scripted",
            prompt="x",
            tools=["explode", "add", CLIENT_TOOL],
            options={
                "rounds": [
                    [call("explode", reason="boom"), call("add", a="not a number"), call("get_time"),
                     call("nonexistent")],
                    ECHO,
                ]
            },
        )
        asked = []
        gen.on_tool_call("get_time", lambda args: asked.append(args) or "never")
        text = await run_text(gen)
        results = [e.data for e in gen.events if e.type == "tool.result"]
        assert [r["is_error"] for r in results] == [True, True, True, True]
        assert "[explode error: ValueError: exploded: boom]" in text
        assert "[add error: invalid arguments: a: Input should be a valid integer" in text
        assert "[get_time error: invalid arguments: arguments.tz: field required]" in text
        assert "[nonexistent error: unknown tool 'nonexistent']" in text
        assert asked == []  # invalid client-side calls never reach the client


async def test_client_that_never_answers_times_out(make_server) -> None:
    srv = make_server(tool_timeout_s=0.5)
    async with StreamingClient(srv.url) as client:
        gen = await client.generate(
            "scripted", prompt="x", tools=[CLIENT_TOOL], options={"rounds": [[call("get_time", tz="UTC")], ECHO]}
        )
        with pytest.raises(GenerationFailedError) as info:
            await gen.text()
        assert info.value.code == "tool_timeout"
        check_invariants(gen.events)


async def test_unknown_and_answered_call_ids_conflict(srv) -> None:
    async with StreamingClient(srv.url) as client:
        gen = await client.generate(
            "scripted", prompt="x", tools=[CLIENT_TOOL],
            options={"rounds": [[call("get_time", tz="UTC")], ECHO]},
        )
        call_id = None
        async for ev in gen:
            if ev.type == "tool.call":
                call_id = ev.data["call_id"]
                break
        assert call_id
        async with httpx.AsyncClient(base_url=srv.url) as http:
            url = f"/generations/{gen.id}/tool-results"
            r = await http.post(url, json={"call_id": "call_unknown", "result": "x"})
            assert r.status_code == 409 and r.json()["error"]["code"] == "tool_call_conflict"
            r = await http.post(url, json={"call_id": call_id})
            assert r.status_code == 422
            r = await http.post(url, json={"call_id": call_id, "result": ["first"]})
            assert r.status_code == 202
            r = await http.post(url, json={"call_id": call_id, "result": ["second"]})
            assert r.status_code == 409
        assert await run_text(gen) == "[get_time result: first]"


async def test_result_on_another_connection(srv) -> None:
    """The stream runs on one connection; the tool result arrives on a different one."""
    async with StreamingClient(srv.url) as client, httpx.AsyncClient(base_url=srv.url) as other:
        gen = await client.generate(
            "scripted", prompt="x", tools=[CLIENT_TOOL],
            options={"rounds": [[call("get_time", tz="UTC")], ECHO]},
        )
        async for ev in gen:
            if ev.type == "tool.call":
                r = await other.post(
                    f"/generations/{gen.id}/tool-results",
                    json={"call_id": ev.data["call_id"], "result": "from elsewhere"},
                )
                assert r.status_code == 202
        assert await run_text(gen) == "[get_time result: from elsewhere]"


async def test_max_tool_rounds(make_server) -> None:
    srv = make_server(tools=make_tools(), max_tool_rounds=2)
    async with StreamingClient(srv.url) as client:
        gen = await client.generate(
            "scripted", prompt="x", tools=["add"],
            options={"rounds": [[call("add", a=1)], [call("add", a=2)], [call("add", a=3)], ECHO]},
        )
        with pytest.raises(GenerationFailedError) as info:
            await gen.text()
        assert info.value.code == "max_tool_rounds"
        check_invariants(gen.events)


async def test_cancel_while_waiting_for_a_client_tool(srv) -> None:
    async with StreamingClient(srv.url) as client:
        gen = await client.generate(
            "scripted", prompt="x", tools=[CLIENT_TOOL],
            options={"rounds": [[call("get_time", tz="UTC")], ECHO]},
        )
        async for ev in gen:
            if ev.type == "tool.call":
                state = await gen.cancel()
                assert state["state"] == "cancelled"
        assert gen.state == "cancelled"
        check_invariants(gen.events)
        async with httpx.AsyncClient(base_url=srv.url) as http:
            call_id = next(e.data["call_id"] for e in gen.events if e.type == "tool.call")
            r = await http.post(f"/generations/{gen.id}/tool-results", json={"call_id": call_id, "result": "late"})
            assert r.status_code == 409


async def test_server_tools_by_declaration_and_not_offered(srv) -> None:
    async with StreamingClient(srv.url) as client:
        # Declared by a full schema whose name is a server tool: the server runs it.
        decl = {"name": "get_weather", "description": "w", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
        gen = await client.generate(
            "scripted", prompt="x", tools=[decl],
            options={"rounds": [[call("get_weather", city="Oslo", unit="f")], ECHO]},
        )
        assert await run_text(gen) == "[get_weather result: Oslo: 21°F]"
        # A server tool the request did not offer is refused, not run.
        gen = await client.generate(
            "scripted", prompt="x", tools=["add"],
            options={"rounds": [[call("explode", reason="no")], ECHO]},
        )
        assert await run_text(gen) == "[explode error: tool 'explode' was not offered]"
        # Naming a server tool that does not exist is a clear 422.
        async with httpx.AsyncClient(base_url=srv.url) as http:
            r = await http.post("/generations", json={"generator": "echo", "prompt": "x", "tools": ["nope"]})
            assert r.status_code == 422


async def test_system_prompt_best_effort_and_conversation(srv) -> None:
    async with StreamingClient(srv.url) as client:
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]
        folded = await client.generate(
            "echo", messages=messages,
            capabilities=[{"name": "steamship.system_prompt_support", "request_level": "best-effort"}],
        )
        assert await folded.text() == "Be brief.\n\nhello there"
        caps = folded.events[0].data["capabilities"]["capability_responses"]
        assert caps == [{"name": "steamship.system_prompt_support", "fulfilled_at": 2}]
        legacy = await client.generate("echo", messages=messages)
        assert await legacy.text() == "hello there"
        # A conversation continues in its file: history reaches the plugin with roles.
        first = await client.generate("echo", prompt="one", capabilities=[{"name": "steamship.conversation_support"}])
        await first.text()
        second = await client.generate("echo", prompt="two", file_id=first.file_id)
        assert await second.text() == "two"
        file = await client.get_file(first.file_id)
        assert [b["text"] for b in file["blocks"]] == ["one", "one", "two", "two"]
        roles = [b["tags"][0]["value"]["string-value"] for b in file["blocks"]]
        assert roles == ["user", "assistant", "user", "assistant"]


async def test_tool_call_args_stream_as_json(srv) -> None:
    async with StreamingClient(srv.url) as client:
        gen = await client.generate(
            "scripted", prompt="x", tools=["add"],
            options={"rounds": [[call("add", a=2, b=3)], ECHO]},
        )
        await run_text(gen)
        call_ev = next(e for e in gen.events if e.type == "tool.call")
        block = await client.get_block(call_ev.data["block_id"])
        assert json.loads(block["text"])["args"] == {"a": 2, "b": 3}
        assert call_ev.data["args"] == {"a": 2, "b": 3}
        completed_seq = next(e.seq for e in gen.events if e.type == "block.completed" and e.data["block_id"] == block["id"])
        assert completed_seq < call_ev.seq
        result_ev = next(e for e in gen.events if e.type == "tool.result")
        assert result_ev.data["result"] == ["5"]


async def test_client_tools_return_ends_the_turn(srv) -> None:
    async with httpx.AsyncClient(base_url=srv.url) as http:
        r = await http.post("/generations", json={
            "generator": "scripted", "prompt": "x", "tools": [CLIENT_TOOL, "add"], "client_tools": "return",
            "options": {"rounds": [[call("add", a=1), call("get_time", tz="UTC")], ECHO]},
        })
        gen_id = r.json()["generation"]["id"]
    async with StreamingClient(srv.url) as client:
        gen = await client.attach(gen_id)
        await run_text(gen)
        assert gen.state == "succeeded"
        calls = [e.data for e in gen.events if e.type == "tool.call"]
        results = [e.data for e in gen.events if e.type == "tool.result"]
        # The server's own call of the turn was answered; the client's is left for its next request.
        assert [(c["tool_name"], c["client_side"]) for c in calls] == [("add", False), ("get_time", True)]
        assert [r["tool_name"] for r in results] == ["add"]
        with pytest.raises(Exception) as info:
            await client.submit_tool_result(gen_id, calls[1]["call_id"], "late")
        assert getattr(info.value, "status", None) == 409
