"""The official ``anthropic`` package as a client of ``/v1/messages``, over a real uvicorn on
loopback: streaming and not, tool use and tool results, a server tool, a failure mid-stream,
resume after a dropped connection, cancel, pings, auth, errors, and the same generations
through the native routes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from streaming.server.app import ServerSettings, create_app

from tests.conftest import LiveServer
from tests.invariants import check_invariants
from tests.test_openai_api import events_of
from tests.test_responses_e2e import TEXT, dialect_server, script, state

WEATHER: Any = {
    "name": "get_weather",
    "description": "Current weather of a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CLOCK: Any = {"name": "clock", "description": "The time.", "input_schema": {"type": "object"}}

EventStream = anthropic.Stream[RawMessageStreamEvent]


@pytest.fixture
def live(make_server: Callable[..., Any]) -> Any:
    return dialect_server(make_server)


@pytest.fixture
def client(live: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=live.url, api_key="unused", max_retries=0)


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def gen_id(message_id: str) -> str:
    assert message_id.startswith("msg_gen_")
    return message_id.removeprefix("msg_")


def replay(client: anthropic.Anthropic, message_id: str, after: int | None = None) -> list[RawMessageStreamEvent]:
    """The message's events through ``GET /v1/messages/{id}?stream=true`` (after a cursor)."""
    headers = {"Last-Event-ID": str(after)} if after is not None else {}
    stream = client.get(f"/v1/messages/{message_id}", cast_to=RawMessageStreamEvent,  # type: ignore[type-var]
                        options={"params": {"stream": "true"}, "headers": headers}, stream=True, stream_cls=EventStream)
    return list(stream)


def test_streamed_text_is_exact(client: anthropic.Anthropic, live: Any) -> None:
    with client.messages.stream(model="echo", max_tokens=100, messages=user(TEXT), system="Echo.") as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
        generation = stream.response.headers["x-generation-id"]
    assert text == TEXT and message.content[0].text == TEXT  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.role == "assistant"
    assert gen_id(message.id) == generation and state(live, generation) == "succeeded"
    check_invariants(events_of(live, generation))


def test_non_streaming_and_max_tokens(client: anthropic.Anthropic) -> None:
    raw = client.messages.with_raw_response.create(model="echo", max_tokens=100, messages=user("say this back"))
    message = raw.parse()
    assert message.content[0].text == "say this back" and message.stop_reason == "end_turn"  # type: ignore[union-attr]
    assert raw.headers["x-generation-id"] == gen_id(message.id)
    cut = client.messages.create(model="limited", max_tokens=3, messages=user(TEXT))
    assert cut.stop_reason == "max_tokens" and cut.content[0].text == "the quick brown "  # type: ignore[union-attr]
    assert cut.usage.output_tokens == 3 and cut.usage.input_tokens == 9
    with client.messages.stream(model="limited", max_tokens=3, messages=user(TEXT)) as stream:
        streamed = stream.get_final_message()
    assert streamed.stop_reason == "max_tokens" and streamed.usage.output_tokens == 3


def test_tool_use_and_tool_results(client: anthropic.Anthropic, live: Any) -> None:
    options = script(
        [{"text": "Let me look. "}, {"tool_call": {"name": "get_weather", "args": {"city": "Paris"}}}],
        [{"echo_tool_results": True}],
    )
    messages: list[Any] = user("Weather in Paris?")
    with client.messages.stream(model="scripted", max_tokens=100, messages=messages, tools=[WEATHER],
                                extra_body=options) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use"
    assert [block.type for block in first.content] == ["text", "tool_use"]
    call: Any = first.content[1]
    assert (call.name, call.input) == ("get_weather", {"city": "Paris"})
    assert events_of(live, gen_id(first.id))[-1]["type"] == "generation.completed"  # ended at its tool turn
    # The client runs the tool and sends the whole conversation back with the result.
    messages += [
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21 C"}]},
    ]
    answer = client.messages.create(model="scripted", max_tokens=100, messages=messages, tools=[WEATHER],
                                    extra_body=options)
    assert answer.content[0].text == "[get_weather result: sunny, 21 C]"  # type: ignore[union-attr]
    assert answer.stop_reason == "end_turn"
    check_invariants(events_of(live, gen_id(answer.id)))
    # A tool_result that is an error, its content as text blocks.
    messages[-1] = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "is_error": True,
                                                  "content": [{"type": "text", "text": "no network"}]}]}
    failed_tool = client.messages.create(model="scripted", max_tokens=100, messages=messages, tools=[WEATHER],
                                         extra_body=options)
    assert failed_tool.content[0].text == "[get_weather error: no network]"  # type: ignore[union-attr]


def test_server_tool_runs_inside_the_message(client: anthropic.Anthropic, live: Any) -> None:
    options = script([{"tool_call": {"name": "clock", "args": {}}}], [{"echo_tool_results": True}])
    with client.messages.stream(model="scripted", max_tokens=100, messages=user("time?"), tools=[CLOCK],
                                extra_body=options) as stream:
        message = stream.get_final_message()
    assert [block.type for block in message.content] == ["text"]  # the call is the server's business
    assert message.content[0].text == "[clock result: 12:00]" and message.stop_reason == "end_turn"  # type: ignore[union-attr]
    log = events_of(live, gen_id(message.id))
    check_invariants(log)
    assert [e["tool_name"] for e in log if e["type"] == "tool.result"] == ["clock"]


def test_failure_mid_stream(client: anthropic.Anthropic, live: Any) -> None:
    seen: list[Any] = []
    with pytest.raises(anthropic.APIError) as raised:
        with client.messages.stream(model="scripted", max_tokens=100, messages=user("hi"),
                                    extra_body=script([{"text": "partial "}, {"sleep_ms": 20}, {"error": "boom"}])) as stream:
            for event in stream:
                seen.append(event)
    assert "boom" in str(raised.value)
    assert isinstance(raised.value.body, dict) and raised.value.body["type"] == "error"
    assert [e.type for e in seen][:3] == ["message_start", "content_block_start", "content_block_delta"]
    assert state(live, gen_id(seen[0].message.id)) == "failed"
    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(model="scripted", max_tokens=100, messages=user("hi"), extra_body=script([{"error": "boom"}]))


def test_resume_after_a_dropped_connection(client: anthropic.Anthropic, live: Any) -> None:
    words = " ".join(f"w{n}" for n in range(40))
    before: list[RawMessageStreamEvent] = []
    with client.messages.stream(model="echo", max_tokens=100, messages=user(words),
                                extra_body={"options": {"delay_ms": 10}}) as stream:
        for event in stream:
            if event.type in ("text", "input_json", "citation", "thinking", "signature", "compaction"):
                continue  # the helper's own events, not the wire's
            before.append(event)  # type: ignore[arg-type]
            if len(before) >= 5:
                break
    # The connection dropped after event number 4 (cursors count from 0): resume after it.
    message_id = before[0].message.id  # type: ignore[union-attr]
    after = replay(client, message_id, after=len(before) - 1)
    whole = replay(client, message_id)
    assert [e.to_dict() for e in before + after] == [e.to_dict() for e in whole]  # every event exactly once
    text = "".join(e.delta.text for e in before + after if e.type == "content_block_delta")  # type: ignore[union-attr]
    assert text == words and after[-1].type == "message_stop"


def test_cancel_stops_the_plugin(client: anthropic.Anthropic, live: Any) -> None:
    words = " ".join(f"w{n}" for n in range(400))
    with pytest.raises(anthropic.APIError) as raised:
        with client.messages.stream(model="echo", max_tokens=1000, messages=user(words),
                                    extra_body={"options": {"delay_ms": 20}}) as stream:
            generation = stream.response.headers["x-generation-id"]
            for event in stream:
                if event.type == "content_block_delta":
                    cancelled = httpx.post(f"{live.url}/generations/{generation}/cancel", timeout=30).json()
                    assert cancelled["generation"]["state"] == "cancelled"
    assert "cancelled" in str(raised.value)
    assert state(live, generation) == "cancelled"
    log = events_of(live, generation)
    check_invariants(log)
    assert len("".join(e["text"] for e in log if e["type"] == "block.delta")) < len(words)  # the plugin stopped
    # Read through the dialect, the message holds what was written before the cancel.
    message = client.get(f"/v1/messages/msg_{generation}", cast_to=Message)
    assert message.stop_reason is None and words.startswith(message.content[0].text)  # type: ignore[union-attr]


def test_pings_on_the_heartbeat(make_server: Callable[..., Any]) -> None:
    live = make_server(heartbeat_s=0.05)
    body = {"model": "scripted", "max_tokens": 10, "stream": True, "messages": user("hi"),
            **script([{"text": "a"}, {"sleep_ms": 300}, {"text": "b"}])}
    frames = httpx.post(f"{live.url}/v1/messages", json=body, timeout=30).text
    assert 'event: ping\ndata: {"type":"ping"}' in frames
    client = anthropic.Anthropic(base_url=live.url, api_key="unused", max_retries=0)
    with client.messages.stream(model="scripted", max_tokens=10, messages=user("hi"),
                                extra_body=script([{"text": "a"}, {"sleep_ms": 300}, {"text": "b"}])) as stream:
        assert "".join(stream.text_stream) == "ab"


def test_native_generation_read_through_the_dialect(client: anthropic.Anthropic, live: Any) -> None:
    created = httpx.post(f"{live.url}/generations", json={"generator": "echo", "prompt": TEXT}, timeout=30).json()
    generation = created["generation"]["id"]
    deadline = time.monotonic() + 60
    while state(live, generation) != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    message = client.get(f"/v1/messages/msg_{generation}", cast_to=Message)
    assert message.content[0].text == TEXT and message.stop_reason == "end_turn"  # type: ignore[union-attr]
    events = replay(client, message.id)
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == TEXT  # type: ignore[union-attr]
    # Started as a message, resumed natively after a cursor.
    raw = client.messages.with_raw_response.create(model="echo", max_tokens=100, messages=user(TEXT))
    generation = raw.headers["x-generation-id"]
    native = events_of(live, generation)
    with httpx.stream("GET", f"{live.url}/generations/{generation}/events", headers={"Last-Event-ID": "1"},
                      timeout=30) as resumed:
        seqs = [int(line[4:]) for line in resumed.iter_lines() if line.startswith("id: ")]
    assert seqs == [e["seq"] for e in native][1:]


def test_auth_with_keys_on() -> None:
    live = LiveServer(create_app(ServerSettings(store_url="memory://", api_keys=["k1"]))).start()
    try:
        bearer = anthropic.Anthropic(base_url=live.url, auth_token="k1", max_retries=0)
        assert bearer.messages.create(model="echo", max_tokens=10, messages=user("ok")).content[0].text == "ok"  # type: ignore[union-attr]
        # The SDK's own way: api_key= sends x-api-key.
        keyed = anthropic.Anthropic(base_url=live.url, api_key="k1", max_retries=0)
        assert keyed.messages.create(model="echo", max_tokens=10, messages=user("ok")).content[0].text == "ok"  # type: ignore[union-attr]
        for wrong in (anthropic.Anthropic(base_url=live.url, auth_token="nope", max_retries=0),
                      anthropic.Anthropic(base_url=live.url, api_key="nope", max_retries=0)):
            with pytest.raises(anthropic.AuthenticationError) as refused:
                wrong.messages.create(model="echo", max_tokens=10, messages=user("ok"))
            assert refused.value.body["type"] == "error"  # type: ignore[index]
            assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    finally:
        live.stop()


def test_errors_in_anthropic_shape_and_the_server_carries_on(client: anthropic.Anthropic, live: Any) -> None:
    with pytest.raises(anthropic.NotFoundError) as not_found:
        client.messages.create(model="no-such-model", max_tokens=10, messages=user("hi"), stream=True)
    assert not_found.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    bad = httpx.post(f"{live.url}/v1/messages", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400
    assert bad.json()["type"] == "error" and bad.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="echo", max_tokens=10, messages=[])
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="echo", max_tokens=10,
                               messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "nope"}]}])
    with pytest.raises(anthropic.NotFoundError):
        client.get("/v1/messages/msg_gen_nope", cast_to=Message)
    with client.messages.stream(model="echo", max_tokens=10, messages=user("still here"),
                                extra_headers={"anthropic-version": "2099-01-01"}) as stream:
        assert stream.get_final_text() == "still here"


def test_the_local_model_calls_the_named_tool(client: anthropic.Anthropic) -> None:
    """``tool_choice`` in Anthropic's form reaches the model: the call is forced, then the
    model answers from the tool_result."""
    messages: list[Any] = user("What is the weather in Paris?")
    first = client.messages.create(model="smollm2", max_tokens=40, messages=messages, tools=[WEATHER],
                                   tool_choice={"type": "tool", "name": "get_weather"}, extra_body={"temperature": 0})
    assert first.stop_reason == "tool_use"
    use: Any = next(block for block in first.content if block.type == "tool_use")
    assert use.name == "get_weather" and isinstance(use.input["city"], str)
    messages += [
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                      "content": f"Sunny, 21 C in {use.input['city']}"}]},
    ]
    answer = client.messages.create(model="smollm2", max_tokens=40, messages=messages, tools=[WEATHER],
                                    extra_body={"temperature": 0})
    assert answer.stop_reason in ("end_turn", "max_tokens")
    assert answer.content and answer.content[0].text.strip()  # type: ignore[union-attr]
