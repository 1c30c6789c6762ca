"""A generation leaves no reference cycle behind.

What a finished generation held (its run and whole log once ``live_retention_s`` is over,
its SSE response and the ASGI callables under it once the client is gone) is freed when
its last reference goes. An object of ours caught in a cycle waits for the cyclic
collector instead, and drags all it holds through its generations: under a few hundred
streams that collector's work was a fifth of a generation's CPU. A real uvicorn serves
the app in this process, so the collector sees both sides.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator

import anyio
import httpx
import pytest
from streaming.client.ws import WebSocketClient

pytestmark = pytest.mark.anyio


@pytest.fixture
def saved_garbage() -> Iterator[list[object]]:
    """Unreachable objects are kept (``gc.DEBUG_SAVEALL``) rather than freed; the list
    fills at each ``gc.collect()``."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


#: the modules whose objects a generation makes (an app's own objects, its plugins and
#: stores, are made once; an app torn down by another test may leave those behind)
PER_GENERATION = (
    "streaming.runtime.", "streaming.server.", "streaming.dialects.", "streaming.events", "streaming.log",
    "streaming.lifecycle", "streaming.model", "streaming.client.",
)


#: made once per WebSocket connection, which uvicorn's protocol object (a cycle of its
#: own: the parser's callbacks are its bound methods) holds until the collector runs
PER_CONNECTION = ("streaming.server.ws.WebSocketSession",)


def by_type(garbage: list[object], modules: tuple[str, ...]) -> Counter[str]:
    """The objects of ``modules`` (module name prefixes) among ``garbage``, by type."""
    return Counter(
        f"{type(o).__module__}.{type(o).__qualname__}" for o in garbage if type(o).__module__.startswith(modules)
    )


def ours(garbage: list[object]) -> Counter[str]:
    """The objects a generation makes among ``garbage``, by type."""
    found = by_type(garbage, PER_GENERATION)
    for name in PER_CONNECTION:
        del found[name]
    return found


async def test_streams_that_end_or_are_dropped_leave_no_cycle(make_server, saved_garbage) -> None:
    live = make_server(live_retention_s=0.05)
    paced = {"generator": "echo", "prompt": "tok ", "options": {"repeat": 200, "delay_ms": 5}}
    async with httpx.AsyncClient(base_url=live.url, timeout=20) as http:
        for _ in range(3):  # the native route and a dialect, to their ends
            r = await http.post(
                "/generations", json={"generator": "echo", "prompt": "a b c "}, headers={"Accept": "text/event-stream"}
            )
            assert r.status_code == 201 and "generation.completed" in r.text
            r = await http.post(
                "/v1/chat/completions",
                json={"model": "echo", "stream": True, "messages": [{"role": "user", "content": "a b"}]},
            )
            assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
        for i in range(3):  # the other dialects
            for path, body in (
                ("/v1/responses", {"model": "echo", "stream": True, "input": "a b"}),
                ("/v1/messages", {"model": "echo", "stream": True, "max_tokens": 20, "messages": [{"role": "user", "content": "a b"}]}),
                ("/api/chat", {"id": f"chat{i}", "model": "echo", "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "a b"}]}]}),
            ):
                r = await http.post(path, json=body)
                assert r.status_code == 200 and r.text.count("data:") > 2, (path, r.text)
    async with WebSocketClient(live.url) as client:  # the WebSocket route, two turns
        gen = await client.generate("echo", prompt="a b ", options={"repeat": 3})
        assert await gen.text() == "a b " * 3
        again = await client.generate("echo", prompt="c", file_id=gen.file_id)
        assert await again.text() == "c"
    async with httpx.AsyncClient(base_url=live.url, timeout=20) as http:
        for _ in range(3):  # a client that leaves mid-stream (its generation is cancelled)
            async with http.stream("POST", "/generations", json=paced, headers={"Accept": "text/event-stream"}) as r:
                async for chunk in r.aiter_bytes():
                    if b"block.delta" in chunk:
                        break
        with anyio.fail_after(10):
            while any(not run.done.is_set() for run in list(live.runtime._runner.live.values())):
                await anyio.sleep(0.02)
        await anyio.sleep(0.3)  # past live_retention_s: the runs are dropped
        assert not live.runtime._runner.live
    witness: list[object] = []
    witness.append(witness)  # a cycle of its own: the collector must save it
    witness_id = id(witness)
    del witness
    gc.collect()
    assert any(id(o) == witness_id for o in saved_garbage)
    assert ours(saved_garbage) == Counter()
    # Nor is a request's connection (uvicorn's request cycle, its transport) left to the
    # collector: the scope no longer holds the server's send once the app has returned.
    # What is left is the one connection upgraded to a WebSocket: uvicorn's HTTP protocol
    # object, which hands it over, keeps its parser (whose callbacks are its bound methods).
    upgraded = Counter([
        "uvicorn.protocols.http.httptools_impl.HttpToolsProtocol", "uvicorn.protocols.http.flow_control.FlowControl",
        "uvloop.loop.TCPTransport", "uvloop.loop.PseudoSocket",
    ])
    assert by_type(saved_garbage, ("uvicorn.protocols.http.", "uvloop.")) == upgraded

