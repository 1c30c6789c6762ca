"""The official ``openai`` package as a client of ``/v1/responses``, over a real uvicorn on
loopback: streaming and not, tool round trips answered by the client and by the server, a
failure mid-stream, resume after a dropped connection, cancel, errors, and the same
generations through the native routes."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import openai
import pytest

from streaming.model import Usage
from streaming.plugin.streaming_generator import StreamingGenerator
from streaming.tools import ToolRegistry
from tests.invariants import check_invariants
from tests.test_openai_api import events_of

WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CLOCK: Any = {"type": "function", "name": "clock", "description": "The time.", "parameters": {"type": "object"}}

TEXT = "the quick brown fox jumps over the lazy dog"


class LimitedGenerator(StreamingGenerator):
    """Streams the prompt's words up to ``max_tokens`` of them, and reports the words it
    sampled as ``sampled tokens`` (a model that stops at its limit)."""

    def determine_output_block_types(self, request: Any) -> Any:
        from streaming.plugin import BlockTypePluginOutput
        from streaming.plugin.request import InvocableResponse

        return InvocableResponse(data=BlockTypePluginOutput(block_types_to_create=["text/plain"]))

    async def run(self, request: Any) -> AsyncIterator[Any]:
        words = request.data.blocks[-1].text.split()
        limit = int(request.data.options.get("max_tokens") or len(words))
        for word in words[:limit]:
            yield word + " "
        yield Usage(operation_unit="prompt tokens", operation_amount=len(words))
        yield Usage(operation_unit="sampled tokens", operation_amount=min(limit, len(words)))


def dialect_server(make_server: Callable[..., Any]) -> Any:
    """A server with a server-side tool (``clock``) and the ``limited`` generator, whose
    dropped streams have time to resume."""
    tools = ToolRegistry()

    @tools.register(name="clock", description="The time.")
    def clock() -> str:
        return "12:00"

    return make_server(tools=tools, generators={"limited": "tests.test_responses_e2e:LimitedGenerator"},
                       disconnect_grace_s=30)


@pytest.fixture
def live(make_server: Callable[..., Any]) -> Any:
    return dialect_server(make_server)


@pytest.fixture
def client(live: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)


def script(*rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return {"options": {"rounds": list(rounds)}}


def gen_id(response_id: str) -> str:
    assert response_id.startswith("resp_gen_")
    return response_id.removeprefix("resp_")


def state(live: Any, generation: str) -> str:
    return str(httpx.get(f"{live.url}/generations/{generation}", timeout=30).json()["generation"]["state"])


def wait_for_state(live: Any, generation: str, *states: str) -> str:
    deadline = time.monotonic() + 60
    while (now := state(live, generation)) not in states:
        assert time.monotonic() < deadline, now
        time.sleep(0.05)
    return now


def test_streamed_text_is_exact_and_numbered(client: openai.OpenAI, live: Any) -> None:
    events = list(client.responses.create(model="echo", input=TEXT, stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[1].type == "response.in_progress"
    assert events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == TEXT
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == TEXT and final.status == "completed"
    generation = gen_id(final.id)
    assert state(live, generation) == "succeeded"
    check_invariants(events_of(live, generation))


def test_stream_helper_and_plain_create(client: openai.OpenAI, live: Any) -> None:
    with client.responses.stream(model="echo", input=TEXT, instructions="Echo.") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == TEXT == final.output_text
    assert final.instructions == "Echo." and final.usage is not None
    plain = client.responses.with_raw_response.create(model="echo", input="say this back")
    response = plain.parse()
    assert response.output_text == "say this back" and response.status == "completed"
    assert plain.headers["x-generation-id"] == gen_id(response.id)


def test_max_output_tokens_ends_incomplete(client: openai.OpenAI) -> None:
    response = client.responses.create(model="limited", input=TEXT, max_output_tokens=3)
    assert response.status == "incomplete" and response.output_text == "the quick brown "
    assert response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None and response.usage.output_tokens == 3
    events = list(client.responses.create(model="limited", input=TEXT, max_output_tokens=3, stream=True))
    assert events[-1].type == "response.incomplete"
    # A replay says the same: the limit is kept with the response.
    again = client.responses.retrieve(events[-1].response.id)  # type: ignore[union-attr]
    assert again.status == "incomplete"
    assert list(client.responses.retrieve(again.id, stream=True))[-1].type == "response.incomplete"
    assert client.responses.create(model="limited", input=TEXT, max_output_tokens=30).status == "completed"


def test_client_tool_round_trip(client: openai.OpenAI, live: Any) -> None:
    options = script(
        [{"text": "Let me look. "}, {"tool_call": {"name": "get_weather", "args": {"city": "Paris"}}}],
        [{"echo_tool_results": True}],
    )
    with client.responses.stream(model="scripted", input="Weather in Paris?", tools=[WEATHER],
                                 extra_body=options) as stream:
        first = stream.get_final_response()
    calls = [item for item in first.output if item.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert first.output_text == "Let me look. " and first.status == "completed"
    # The client runs the tool and answers in its next request, continuing the conversation.
    answer = client.responses.create(
        model="scripted", previous_response_id=first.id, tools=[WEATHER], extra_body=options,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21 C"}],
    )
    assert answer.output_text == "[get_weather result: sunny, 21 C]"
    assert answer.previous_response_id == first.id
    first_log = events_of(live, gen_id(first.id))
    check_invariants(first_log)
    assert first_log[-1]["type"] == "generation.completed"  # it ended at its tool turn
    check_invariants(events_of(live, gen_id(answer.id)))
    # Without previous_response_id the call comes in the input itself.
    stateless = client.responses.create(
        model="scripted", tools=[WEATHER], extra_body=options,
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "rainy"},
        ],
    )
    assert stateless.output_text == "[get_weather result: rainy]"


def test_server_tool_runs_inside_the_response(client: openai.OpenAI, live: Any) -> None:
    options = script([{"tool_call": {"name": "clock", "args": {}}}], [{"echo_tool_results": True}])
    events = list(client.responses.create(model="scripted", input="time?", tools=[CLOCK], stream=True,
                                          extra_body=options))
    final = events[-1].response  # type: ignore[union-attr]
    assert events[-1].type == "response.completed"
    assert final.output_text == "[clock result: 12:00]"
    assert [item.type for item in final.output] == ["message"]  # the call is the server's business
    log = events_of(live, gen_id(final.id))
    check_invariants(log)
    assert [e["tool_name"] for e in log if e["type"] == "tool.result"] == ["clock"]


def test_failure_mid_stream(client: openai.OpenAI, live: Any) -> None:
    stream = client.responses.create(model="scripted", input="hi", stream=True,
                                     extra_body=script([{"text": "partial "}, {"sleep_ms": 20}, {"error": "boom"}]))
    seen: list[Any] = []
    with pytest.raises(openai.APIError) as raised:
        for event in stream:
            seen.append(event)
    assert "boom" in str(raised.value) and raised.value.code == "plugin_error"
    assert "".join(e.delta for e in seen if e.type == "response.output_text.delta") == "partial "
    response = client.responses.retrieve(seen[0].response.id)
    assert response.status == "failed" and response.error is not None and "boom" in response.error.message
    # The raw stream has the error both flat and nested, then response.failed.
    frames = httpx.get(f"{live.url}/v1/responses/{response.id}", params={"stream": "true"}, timeout=30).text
    datas = [json.loads(line[6:]) for line in frames.splitlines() if line.startswith("data: ")]
    assert [d["type"] for d in datas][-2:] == ["error", "response.failed"]
    assert datas[-2]["code"] == datas[-2]["error"]["code"] == "plugin_error"
    with pytest.raises(openai.InternalServerError):
        client.responses.create(model="scripted", input="hi", extra_body=script([{"error": "boom"}]))


def test_resume_after_a_dropped_connection(client: openai.OpenAI, live: Any) -> None:
    words = " ".join(f"w{n}" for n in range(40))
    stream = client.responses.create(model="echo", input=words, stream=True,
                                     extra_body={"options": {"delay_ms": 10}})
    before = []
    for event in stream:
        before.append(event)
        if event.type == "response.output_text.delta" and len(before) >= 6:
            break
    stream.close()  # the connection drops mid-stream
    last = before[-1].sequence_number
    after = list(client.responses.retrieve(before[0].response.id, stream=True, starting_after=last))
    numbers = [e.sequence_number for e in before + after]
    assert numbers == list(range(len(numbers)))  # every event exactly once
    text = "".join(e.delta for e in before + after if e.type == "response.output_text.delta")
    assert text == words and after[-1].type == "response.completed"
    # The stream helper replays from the start and skips what the client has.
    with client.responses.stream(response_id=before[0].response.id, starting_after=last) as replay:
        assert [e.sequence_number for e in replay] == [e.sequence_number for e in after]


def test_a_background_response_runs_on_after_a_drop(make_server: Callable[..., Any]) -> None:
    live = make_server(disconnect_grace_s=0.1)
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)
    words = " ".join(f"w{n}" for n in range(20))
    slow = {"options": {"delay_ms": 20}}
    background = client.responses.create(model="echo", input=words, stream=True, background=True, extra_body=slow)
    first = next(iter(background))
    background.close()
    longer = " ".join(f"w{n}" for n in range(300))  # 6 s at least: far longer than the grace
    foreground = client.responses.create(model="echo", input=longer, stream=True, extra_body=slow)
    second = next(iter(foreground))
    foreground.close()
    assert wait_for_state(live, gen_id(first.response.id), "succeeded", "failed", "cancelled") == "succeeded"
    assert wait_for_state(live, gen_id(second.response.id), "succeeded", "failed", "cancelled") == "cancelled"
    assert client.responses.retrieve(first.response.id).output_text == words
    assert client.responses.retrieve(second.response.id).status == "cancelled"
    # A background request without a stream answers at once.
    queued = client.responses.create(model="echo", input="later", background=True)
    assert queued.status == "in_progress"
    wait_for_state(live, gen_id(queued.id), "succeeded")
    assert client.responses.retrieve(queued.id).output_text == "later"


def test_cancel_stops_the_plugin(client: openai.OpenAI, live: Any) -> None:
    words = " ".join(f"w{n}" for n in range(400))
    stream = client.responses.create(model="echo", input=words, stream=True, extra_body={"options": {"delay_ms": 20}})
    seen = []
    with pytest.raises(openai.APIError) as raised:
        for event in stream:
            seen.append(event)
            if event.type == "response.output_text.delta":
                cancelled = client.responses.cancel(seen[0].response.id)
                assert cancelled.status == "cancelled"
    assert raised.value.code == "cancelled"
    assert not [e for e in seen if e.type == "response.completed"]
    generation = gen_id(seen[0].response.id)
    assert state(live, generation) == "cancelled"
    log = events_of(live, generation)
    check_invariants(log)
    text = "".join(e["text"] for e in log if e["type"] == "block.delta")
    assert len(text) < len(words)  # the plugin stopped
    assert client.responses.retrieve(seen[0].response.id).status == "cancelled"


def test_native_routes_and_the_dialect_read_the_same_generations(client: openai.OpenAI, live: Any) -> None:
    # Started natively, read and streamed as a response.
    created = httpx.post(f"{live.url}/generations", json={"generator": "echo", "prompt": TEXT}, timeout=30).json()
    generation = created["generation"]["id"]
    wait_for_state(live, generation, "succeeded")
    response = client.responses.retrieve(f"resp_{generation}")
    assert response.output_text == TEXT and response.status == "completed"
    streamed = list(client.responses.retrieve(response.id, stream=True))
    assert "".join(e.delta for e in streamed if e.type == "response.output_text.delta") == TEXT
    # Started as a response, resumed and cancelled natively.
    stream = client.responses.create(model="echo", input=" ".join(["word"] * 300), stream=True,
                                     extra_body={"options": {"delay_ms": 20}})
    first = next(iter(stream))
    generation = gen_id(first.response.id)
    with httpx.stream("GET", f"{live.url}/generations/{generation}/events", headers={"Last-Event-ID": "1"},
                      timeout=30) as native:
        for line in native.iter_lines():
            if line.startswith("id: "):
                assert int(line[4:]) == 2  # the events after the cursor
                break
    assert httpx.post(f"{live.url}/generations/{generation}/cancel", timeout=30).json()["generation"]["state"] == "cancelled"
    with pytest.raises(openai.APIError):
        list(stream)
    assert client.responses.retrieve(first.response.id).status == "cancelled"


def test_errors_in_openai_shape_and_the_server_carries_on(client: openai.OpenAI, live: Any) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        client.responses.create(model="no-such-model", input="hi", stream=True)
    assert not_found.value.code == "model_not_found"
    bad = httpx.post(f"{live.url}/v1/responses", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and set(bad.json()["error"]) == {"message", "type", "param", "code"}
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="echo", input=[{"type": "no_such_item"}])  # type: ignore[list-item]
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="echo", input=[{"type": "function_call_output", "call_id": "nope", "output": "x"}])
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_gen_nope")
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="echo", input="hi", previous_response_id="resp_gen_nope")
    assert client.responses.create(model="echo", input="still here").output_text == "still here"


def test_the_local_model_calls_the_named_tool(client: openai.OpenAI) -> None:
    """``tool_choice`` in the Responses form reaches the model: the call is forced (a 135M
    model's free choice flips with the CPU), then the model answers from the output."""
    first = client.responses.create(model="smollm2", input="What is the weather in Paris?", tools=[WEATHER],
                                    tool_choice={"type": "function", "name": "get_weather"},
                                    max_output_tokens=40, temperature=0)
    call: Any = next(item for item in first.output if item.type == "function_call")
    city = json.loads(call.arguments)["city"]
    assert call.name == "get_weather" and isinstance(city, str) and city
    answer = client.responses.create(
        model="smollm2", previous_response_id=first.id, tools=[WEATHER], max_output_tokens=40, temperature=0,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": f"Sunny, 21 C in {city}"}],
    )
    assert answer.status in ("completed", "incomplete") and answer.output_text.strip()
