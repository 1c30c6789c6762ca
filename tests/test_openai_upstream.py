"""The ``openai`` generator against real OpenAI-compatible upstreams on loopback.

- llama-cpp-python's own server (``python -m llama_cpp.server``) serving the SmolLM2 GGUF;
- a tiny Starlette upstream (a real uvicorn) that answers with scripted chunks, a 500, or
  a stream that stalls, for what a real model will not do on cue.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from streaming.capabilities import FunctionCallInvocation
from streaming.errors import InvalidRequestError
from streaming.events import Event
from streaming.generators.llama import default_model_path
from streaming.generators.openai import OpenAIGenerator
from streaming.model import RoleTag
from streaming.requests import GenerateRequest, Message
from streaming.runtime import GeneratorRegistry, Runtime
from streaming.tools import ToolRegistry
from tests.conftest import LiveServer
from tests.invariants import check_invariants
from tests.procs import free_port

pytestmark = pytest.mark.anyio


class LlamaServer:
    """``python -m llama_cpp.server`` with the SmolLM2 GGUF on a loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", default_model_path(),
             "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "2048"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("llama_cpp.server exited at start")
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("llama_cpp.server did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def llama_server() -> Iterator[LlamaServer]:
    server = LlamaServer()
    yield server
    server.stop()


# -- the tiny scripted upstream --


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    body = {
        "id": "chatcmpl-up",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


class Upstream:
    """Routes under ``/<mode>/v1/chat/completions``; records bodies and disconnects."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.disconnected = threading.Event()
        app = Starlette(routes=[Route("/err/v1/chat/completions", self.error, methods=["POST"])])
        app.router.routes.append(Route("/ok/v1/chat/completions", self.scripted, methods=["POST"]))
        self.app = app
        self.server = LiveServer(self).start()
        self.url = self.server.url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/slow/v1/chat/completions":
            await self.slow(receive, send)
            return
        await self.app(scope, receive, send)

    async def error(self, request: Request) -> JSONResponse:
        return JSONResponse({"error": {"message": "the model exploded", "type": "server_error"}}, status_code=500)

    async def scripted(self, request: Request) -> Any:
        body = await request.json()
        self.bodies.append(body)
        if any(m["role"] == "tool" for m in body["messages"]):
            frames = [chunk({"role": "assistant", "content": ""}), chunk({"content": "Sunny "}),
                      chunk({"content": "and 21 C."}), chunk({}, "stop")]
        else:
            # Two parallel calls, their ids, names and arguments spread over deltas.
            frames = [
                chunk({"role": "assistant", "content": "Checking. "}),
                chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                       "function": {"name": "get_weather", "arguments": ""}}]}),
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
                chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                                       "function": {"name": "get_time", "arguments": "{}"}}]}),
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]}),
                chunk({}, "tool_calls"),
            ]
        frames.append(chunk(None, usage={"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}))
        frames.append(b"data: [DONE]\n\n")

        async def stream(scope: Scope, receive: Receive, send: Send) -> None:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            for frame in frames:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        return stream

    async def slow(self, receive: Receive, send: Send) -> None:
        """One chunk, then nothing until the client goes away."""
        while (await receive())["type"] != "http.request":
            pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": chunk({"content": "Hel"}), "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass
        self.disconnected.set()


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    yield up
    up.server.stop()


def get_weather(city: str) -> str:
    """Current weather of a city."""
    return f"sunny in {city}"


def get_time() -> str:
    """The time."""
    return "noon"


@pytest.fixture
async def runtime(upstream: Upstream, llama_server: LlamaServer) -> AsyncIterator[Runtime]:
    registry = GeneratorRegistry()
    for mode in ("ok", "err", "slow"):
        registry.register(f"up_{mode}", OpenAIGenerator, {"base_url": f"{upstream.url}/{mode}/v1", "model": "m"})
    registry.register("llama", OpenAIGenerator, {"base_url": f"{llama_server.url}/v1", "model": "smollm2"})
    registry.register("nowhere", OpenAIGenerator, {"base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "m"})
    tools = ToolRegistry()
    tools.register(get_weather)
    tools.register(get_time)
    async with Runtime(generators=registry, tools=tools) as rt:
        yield rt


async def run(rt: Runtime, request: GenerateRequest) -> list[Event]:
    gen = await rt.start(request, subscribed=True)
    events = [ev async for ev in rt.events(gen.id)]
    check_invariants(events)
    return events


def error_code(events: list[Event]) -> str:
    last = events[-1].to_dict()
    assert last["type"] == "generation.failed", last
    code: str = last["error"]["code"]
    return code


def texts(events: list[Event]) -> str:
    return "".join(e.to_dict()["text"] for e in events if e.type == "block.delta")


async def test_streams_from_llama_cpp_server(runtime: Runtime) -> None:
    events = await run(runtime, GenerateRequest(
        generator="llama",
        messages=[Message(role=RoleTag.SYSTEM, content="You are terse."),
                  Message(role=RoleTag.USER, content="Name a color.")],
        options={"max_tokens": 16, "temperature": 0},
    ))
    assert events[-1].type == "generation.completed"
    deltas = [e for e in events if e.type == "block.delta"]
    assert len(deltas) >= 2 and texts(events).strip()


async def test_upstream_killed_mid_stream(runtime: Runtime) -> None:
    doomed = LlamaServer()
    try:
        runtime.generators.register("doomed", OpenAIGenerator, {"base_url": f"{doomed.url}/v1", "model": "m"})
        gen = await runtime.start(GenerateRequest(
            generator="doomed", prompt="Write a long story about a dragon.",
            options={"max_tokens": 1000, "temperature": 0},
        ), subscribed=True)
        events = []
        async for ev in runtime.events(gen.id):
            events.append(ev)
            if ev.type == "block.delta" and doomed.proc.poll() is None:
                doomed.proc.kill()
    finally:
        doomed.stop()
    check_invariants(events)
    assert error_code(events) == "upstream_disconnected"
    assert [e.type for e in events].count("block.aborted") == 1


async def test_tool_call_deltas_become_invocations(runtime: Runtime, upstream: Upstream) -> None:
    upstream.bodies.clear()
    events = await run(runtime, GenerateRequest(
        generator="up_ok", prompt="Weather and time?", tools=["get_weather", "get_time"],
    ))
    assert events[-1].type == "generation.completed"
    calls = [e.to_dict() for e in events if e.type == "tool.call"]
    assert [(c["call_id"], c["tool_name"], c["args"]) for c in calls] == [
        ("call_a", "get_weather", {"city": "Paris"}),
        ("call_b", "get_time", {}),
    ]
    created = [e.to_dict()["block"] for e in events if e.type == "block.created"]
    invocations = [b for b in created if b["mime_type"] == FunctionCallInvocation.MIME_TYPE]
    assert len(invocations) == 2
    assert texts(events).startswith("Checking. ") and texts(events).endswith("Sunny and 21 C.")
    # The second request carried the calls and their results in OpenAI's shape.
    first, second = upstream.bodies
    assert [t["function"]["name"] for t in first["tools"]] == ["get_weather", "get_time"]
    assert first["stream"] is True and first["stream_options"] == {"include_usage": True}
    roles = [m["role"] for m in second["messages"]]
    assert roles == ["user", "assistant", "tool", "tool"]
    assistant = second["messages"][1]
    assert assistant["content"] == "Checking. "
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_a", "call_b"]
    assert {m["tool_call_id"]: m["content"] for m in second["messages"][2:]} == {
        "call_a": "sunny in Paris", "call_b": "noon"}
    usage = events[-1].to_dict()["usage"]
    # One usage report per round.
    assert [(u["operation_unit"], u["operation_amount"]) for u in usage] == [
        ("prompt tokens", 11), ("sampled tokens", 7)] * 2


async def test_upstream_500_fails_with_its_message(runtime: Runtime) -> None:
    events = await run(runtime, GenerateRequest(generator="up_err", prompt="hi"))
    assert error_code(events) == "upstream_error"
    assert "the model exploded" in events[-1].to_dict()["error"]["message"]


async def test_upstream_timeout(runtime: Runtime) -> None:
    events = await run(runtime, GenerateRequest(generator="up_slow", prompt="hi", options={"timeout_s": 0.5}))
    assert error_code(events) == "upstream_timeout"
    assert texts(events) == "Hel"


async def test_unreachable_upstream(runtime: Runtime) -> None:
    events = await run(runtime, GenerateRequest(generator="nowhere", prompt="hi"))
    assert error_code(events) == "upstream_unavailable"


async def test_cancel_closes_the_upstream_request(runtime: Runtime, upstream: Upstream) -> None:
    upstream.disconnected.clear()
    gen = await runtime.start(GenerateRequest(generator="up_slow", prompt="hi"), subscribed=True)
    events = []
    async for ev in runtime.events(gen.id):
        events.append(ev)
        if ev.type == "block.delta":
            await runtime.cancel(gen.id, "stop")
    check_invariants(events)
    assert events[-1].type == "generation.cancelled"
    assert await anyio.to_thread.run_sync(upstream.disconnected.wait, 10)


async def test_no_key_for_openai_com_is_refused_at_start(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    runtime.generators.register("public", OpenAIGenerator, {"model": "gpt-4o-mini"})
    with pytest.raises(InvalidRequestError) as info:
        await runtime.start(GenerateRequest(generator="public", prompt="hi"))
    assert info.value.code == "upstream_not_configured"
