"""The official ``openai`` package as a client of our ``/v1`` routes, over a real uvicorn."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest
from streaming.client.sse import SSEDecoder

from tests.invariants import check_invariants

WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
def client(server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def generation_id(completion_id: str) -> str:
    assert completion_id.startswith("chatcmpl-gen_")
    return completion_id.removeprefix("chatcmpl-")


def events_of(server: Any, gen_id: str) -> list[dict[str, Any]]:
    """The generation's whole event log, read from ``/generations/{id}/events``."""
    response = httpx.get(f"{server.url}/generations/{gen_id}/events", timeout=30)
    decoder = SSEDecoder()
    frames = decoder.decode(response.content) + decoder.flush()
    return [json.loads(f.data) for f in frames if f.data]


def script(*rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return {"options": {"rounds": list(rounds)}}


def test_models_lists_the_generators(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert {"echo", "scripted", "openai"} <= set(ids)
    assert client.models.retrieve("echo").id == "echo"


def test_streaming_text_with_usage(client: openai.OpenAI, server: Any) -> None:
    text = "Streaming through the OpenAI SDK works."
    stream = client.chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body=script([{"text": text, "chunk": 4}, {"sleep_ms": 1}]),
    )
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    # The same generation, seen through the runtime's own routes.
    gen_id = generation_id(chunks[0].id)
    stored = httpx.get(f"{server.url}/generations/{gen_id}").json()
    assert stored["generation"]["state"] == "succeeded"
    final = {b["id"]: b["text"] for b in stored["blocks"]}
    assert list(final.values()) == [text]
    check_invariants(events_of(server, gen_id), final_blocks=final)


def test_non_streaming(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="echo", messages=[{"role": "system", "content": "Echo."}, {"role": "user", "content": "say this back"}]
    )
    choice = completion.choices[0]
    assert choice.message.content == "say this back"
    assert choice.message.role == "assistant" and choice.finish_reason == "stop"
    assert completion.object == "chat.completion" and completion.usage is not None


def test_tool_call_round_trip(client: openai.OpenAI, server: Any) -> None:
    options = script(
        [{"text": "Let me look. "}, {"tool_call": {"name": "get_weather", "args": {"city": "Paris"}}}],
        [{"echo_tool_results": True}],
    )
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    stream = client.chat.completions.create(
        model="scripted", messages=messages, tools=[WEATHER], stream=True, extra_body=options
    )
    chunks = list(stream)
    calls: list[Any] = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert [(tc.function.name, json.loads(tc.function.arguments)) for tc in calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    first_gen = generation_id(chunks[0].id)

    # The client runs the tool and sends the result back, as OpenAI's docs do.
    call = calls[0]
    messages += [
        {
            "role": "assistant",
            "content": "Let me look. ",
            "tool_calls": [{"id": call.id, "type": "function",
                            "function": {"name": "get_weather", "arguments": call.function.arguments}}],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
    ]
    answer = client.chat.completions.create(model="scripted", messages=messages, tools=[WEATHER], extra_body=options)
    assert answer.choices[0].message.content == "[get_weather result: sunny, 21 C]"
    assert answer.choices[0].finish_reason == "stop"

    # The first generation ended at its tool turn instead of waiting for a result.
    first = events_of(server, first_gen)
    check_invariants(first)
    assert first[-1]["type"] == "generation.completed"
    assert not [e for e in first if e["type"] == "tool.result"]
    assert [e["call_id"] for e in first if e["type"] == "tool.call"] == [call.id]
    second = events_of(server, generation_id(answer.id))
    check_invariants(second)
    assert second[-1]["type"] == "generation.completed"


def test_errors_in_openai_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert not_found.value.code == "model_not_found"
    assert not_found.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="echo", messages=[])
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "hi"}], extra_body=script([{"error": "boom"}])
        )
    assert "boom" in str(failed.value)
    # A failure after the stream started arrives as an error frame, which the SDK raises.
    stream = client.chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        extra_body=script([{"text": "partial "}, {"error": "boom"}]),
    )
    with pytest.raises(openai.APIError) as mid:
        list(stream)
    assert "boom" in str(mid.value)


def test_bad_json_is_an_openai_error(server: Any) -> None:
    response = httpx.post(f"{server.url}/v1/chat/completions", content=b"{not json",
                          headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_the_local_model_through_the_sdk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Name three colors."}],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=24,
        temperature=0,
    )
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content.strip()
    assert chunks[-1].usage is not None and 0 < chunks[-1].usage.completion_tokens <= 24
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert reasons == ["length" if chunks[-1].usage.completion_tokens == 24 else "stop"]
    # A tool call with the real model, answered by the client. The call is forced: a 135M
    # model's free choice flips with the CPU's floating-point path.
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(
        model="smollm2", messages=messages, tools=[WEATHER], temperature=0, max_tokens=40,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert first.choices[0].finish_reason == "tool_calls"
    call: Any = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    city = json.loads(call.function.arguments)["city"]
    assert call.function.name == "get_weather" and isinstance(city, str) and city
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": f"Sunny, 21 C in {city}"}]
    # A conversation that ends in tool results is answered, whatever tool_choice says.
    answer = client.chat.completions.create(
        model="smollm2", messages=messages, tools=[WEATHER], temperature=0, max_tokens=40
    )
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert (answer.choices[0].message.content or "").strip()
    # Left to the model, either a call or an answer; both are well formed.
    free = client.chat.completions.create(
        model="smollm2", messages=messages[:1], tools=[WEATHER], temperature=0, max_tokens=40
    )
    if free.choices[0].finish_reason == "tool_calls":
        assert [c.function.name for c in free.choices[0].message.tool_calls or []] == ["get_weather"]  # type: ignore[union-attr]
    else:
        assert free.choices[0].finish_reason in ("stop", "length") and free.choices[0].message.content


def test_cancelled_under_generations_ends_the_openai_stream(client: openai.OpenAI, server: Any) -> None:
    stream = client.chat.completions.create(
        model="scripted",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        extra_body=script([{"text": "first "}, {"sleep_ms": 30_000}, {"text": "never"}]),
    )
    chunks = iter(stream)
    first = next(chunks)
    gen_id = generation_id(first.id)
    content = ""
    with pytest.raises(openai.APIError) as cancelled:
        for chunk in chunks:
            content += chunk.choices[0].delta.content or ""
            if content == "first ":
                assert httpx.post(f"{server.url}/generations/{gen_id}/cancel").status_code == 200
    assert "cancelled" in str(cancelled.value)
    events = events_of(server, gen_id)
    check_invariants(events)
    assert events[-1]["type"] == "generation.cancelled"


def test_a_client_that_goes_away_cancels_the_generation(make_server: Any) -> None:
    server = make_server(disconnect_grace_s=0.05)
    body = {
        "model": "scripted",
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
        "options": {"rounds": [[{"text": "first "}, {"sleep_ms": 30_000}]]},
    }
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, timeout=30) as response:
        gen_id = response.headers["x-generation-id"]
        for line in response.iter_lines():
            if "first" in line:
                break
    # Subscribing to its events would keep it alive: watch its state instead.
    deadline = time.monotonic() + 10
    while httpx.get(f"{server.url}/generations/{gen_id}").json()["generation"]["state"] == "running":
        assert time.monotonic() < deadline, "the generation outlived its client"
        time.sleep(0.02)
    events = events_of(server, gen_id)
    check_invariants(events)
    assert events[-1]["type"] == "generation.cancelled"
    assert events[-1]["reason"] == "client disconnected"
