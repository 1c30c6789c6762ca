"""The ``smollm2`` generator with the real SmolLM2-135M model (the ``local`` extra)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from streaming.client.client import StreamingClient

from streaming.events import Event
from streaming.generators import BUILTIN
from streaming.generators.llama import LlamaGenerator, load_model
from streaming.model import MimeTypes
from streaming.requests import GenerateRequest
from streaming.runtime import GeneratorRegistry, Runtime
from streaming.tools import ToolRegistry
from tests.invariants import check_invariants

pytestmark = pytest.mark.anyio

GREEDY = {"temperature": 0, "seed": 1}


def get_weather(city: str) -> str:
    """Current weather of a city."""
    return f"Sunny, 21 C in {city}"


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    registry = GeneratorRegistry()
    registry.register("smollm2", LlamaGenerator)
    tools = ToolRegistry()
    tools.register(get_weather)
    async with Runtime(generators=registry, tools=tools) as rt:
        yield rt


async def collect(rt: Runtime, gen_id: str) -> list[Event]:
    return [ev async for ev in rt.events(gen_id)]


def usage(events: list[Event], unit: str) -> float:
    final = events[-1].to_dict()
    return float(sum(u["operation_amount"] for u in final.get("usage", []) if u["operation_unit"] == unit))


def test_registered_when_the_extra_is_installed() -> None:
    assert BUILTIN["smollm2"] == "streaming.generators.llama:LlamaGenerator"


async def test_streams_real_tokens_over_the_server(make_server: Any) -> None:
    server = make_server()
    async with StreamingClient(server.url) as client:
        gen = await client.generate(
            "smollm2", prompt="Tell me about the ocean.", options={**GREEDY, "max_tokens": 40}
        )
        chunks = [text async for block in gen.blocks() async for text in block]
        assert gen.state == "succeeded"
        stored = await client.get_generation(gen.id)
    final = {b["id"]: b["text"] for b in stored["blocks"]}
    check_invariants(gen.events, final_blocks=final)
    assert "".join(chunks) == next(iter(final.values()))
    assert len(chunks) >= 5 and "ocean" in "".join(chunks).lower()
    units = {u["operation_unit"]: u["operation_amount"] for u in stored["generation"]["usage"]}
    assert units["sampled tokens"] >= 20 and units["prompt tokens"] > 10


async def test_cancel_stops_token_generation(runtime: Runtime) -> None:
    pool = load_model()
    start = pool.tokens_sampled
    gen = await runtime.start(
        GenerateRequest(generator="smollm2", prompt="Write a long story about a dragon.",
                        options={**GREEDY, "max_tokens": 1000}),
        subscribed=True,
    )
    events: list[Event] = []
    at_cancel = -1
    async for ev in runtime.events(gen.id):
        events.append(ev)
        if at_cancel < 0 and pool.tokens_sampled - start >= 5:
            at_cancel = pool.tokens_sampled
            await runtime.cancel(gen.id, "enough")
    assert events[-1].type == "generation.cancelled"
    check_invariants(events)
    # At most the token being computed when the cancel came, and the context is free.
    stopped = pool.tokens_sampled
    assert stopped - at_cancel <= 1
    assert pool.busy == 0
    await anyio.sleep(0.3)
    assert pool.tokens_sampled == stopped
    assert [e.type for e in events].count("block.aborted") == 1


async def test_two_generations_make_progress_together(runtime: Runtime) -> None:
    # A long generation and a short one started after it: if they queued, the short one
    # would wait for the long one's end. No timing is assumed: the long one is cancelled
    # only once the short one has finished and the long one has written (on a loaded
    # machine its first token may come after the short one's last), so on any machine the
    # short one must finish while the long one still runs.
    long = await runtime.start(
        GenerateRequest(generator="smollm2", prompt="Write a long story about a dragon.",
                        options={**GREEDY, "max_tokens": 1500}),
        subscribed=True,
    )
    short = await runtime.start(
        GenerateRequest(generator="smollm2", prompt="Describe a forest.", options={**GREEDY, "max_tokens": 24}),
        subscribed=True,
    )
    logs: dict[str, list[Event]] = {long.id: [], short.id: []}
    busy_at_short_delta: list[int] = []
    pool = load_model()

    async def cancel_long_when_both_wrote() -> None:
        if logs[short.id][-1:] and logs[short.id][-1].type == "generation.completed" and any(
            ev.type == "block.delta" for ev in logs[long.id]
        ):
            await runtime.cancel(long.id)

    async def follow(gen_id: str) -> None:
        async for ev in runtime.events(gen_id):
            logs[gen_id].append(ev)
            if gen_id == short.id and ev.type == "block.delta":
                busy_at_short_delta.append(pool.busy)
            if ev.type in ("block.delta", "generation.completed"):
                await cancel_long_when_both_wrote()

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow, long.id)
        tg.start_soon(follow, short.id)
    assert logs[short.id][-1].type == "generation.completed"
    assert logs[long.id][-1].type == "generation.cancelled"
    assert any(ev.type == "block.delta" for ev in logs[long.id])
    # Both held a model context at once: they decode side by side.
    assert max(busy_at_short_delta) == 2
    for log in logs.values():
        check_invariants(log)


async def test_tool_round_trip_with_the_real_model(runtime: Runtime) -> None:
    # A 135M model's free choice between calling and answering flips with the CPU's
    # floating-point path, so the round trip is forced; ``auto`` is tested below.
    gen = await runtime.start(
        GenerateRequest(
            generator="smollm2",
            prompt="What is the weather in Paris?",
            tools=["get_weather"],
            options={**GREEDY, "max_tokens": 40, "tool_choice": "get_weather"},
        ),
        subscribed=True,
    )
    events = await collect(runtime, gen.id)
    check_invariants(events)
    assert events[-1].type == "generation.completed"
    calls = [e.to_dict() for e in events if e.type == "tool.call"]
    results = [e.to_dict() for e in events if e.type == "tool.result"]
    assert [c["tool_name"] for c in calls] == ["get_weather"]
    city = calls[0]["args"]["city"]
    assert isinstance(city, str) and city
    assert results[0]["result"] == [f"Sunny, 21 C in {city}"] and not results[0]["is_error"]
    # After the result the model answers in text (a round of its own, after the call's).
    created = [e.to_dict()["block"] for e in events if e.type == "block.created"]
    result_index = next(i for i, b in enumerate(created) if b["mime_type"] == MimeTypes.FUNCTION_CALL_RESULT)
    answers = [b["id"] for b in created[result_index:] if b["mime_type"] == "text/plain"]
    assert answers
    answer = "".join(e.to_dict()["text"] for e in events if e.type == "block.delta" and e.to_dict()["block_id"] == answers[-1])
    assert answer.strip()
    assert usage(events, "prompt tokens") > 0 and usage(events, "sampled tokens") > 0


async def test_tool_choice_auto_either_calls_or_answers(runtime: Runtime) -> None:
    gen = await runtime.start(
        GenerateRequest(
            generator="smollm2",
            prompt="What is the weather in Paris?",
            tools=["get_weather"],
            options={**GREEDY, "max_tokens": 40},
        ),
        subscribed=True,
    )
    events = await collect(runtime, gen.id)
    check_invariants(events)
    assert events[-1].type == "generation.completed"
    calls = [e.to_dict() for e in events if e.type == "tool.call"]
    results = [e.to_dict() for e in events if e.type == "tool.result"]
    # Whichever the model chose: every call was answered, and the generation ends in text.
    assert len(results) == len(calls) and all(c["tool_name"] == "get_weather" for c in calls)
    texts = [e.to_dict()["text"] for e in events if e.type == "block.delta"]
    assert "".join(texts).strip()


async def test_a_missing_model_file_fails_with_a_code(runtime: Runtime, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("STREAMING_MODEL_DIRS", str(tmp_path))
    gen = await runtime.start(
        GenerateRequest(generator="smollm2", prompt="hi", options={"model_path": str(tmp_path / "missing.gguf")}),
        subscribed=True,
    )
    events = await collect(runtime, gen.id)
    check_invariants(events)
    assert events[-1].type == "generation.failed"
    assert events[-1].to_dict()["error"]["code"] == "model_unavailable"


async def test_model_path_outside_the_allowed_directories_is_refused(runtime: Runtime) -> None:
    for path in ("/etc/passwd", "/tmp/../etc/model.gguf"):
        gen = await runtime.start(
            GenerateRequest(generator="smollm2", prompt="hi", options={"model_path": path}), subscribed=True
        )
        events = await collect(runtime, gen.id)
        check_invariants(events)
        assert events[-1].to_dict()["error"]["code"] == "invalid_request"
