"""Bounded generations, through the wire on every store: a block or a generation past its
byte limit fails ``max_output`` whatever the coalescing; a plugin running out of memory
ends its generation with one terminal event and frees its slot; text with lone surrogates
is made valid, so its stream and every read of it work; GET never answers 500."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from streaming.client import StreamingClient

from tests.conftest import LiveServer
from tests.invariants import check_invariants
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

HOSTILE = {
    "flood": "tests.hostile_plugins:Flood",
    "writer": "tests.hostile_plugins:Writer",
    "exhausted": "tests.hostile_plugins:Exhausted",
    "surrogate": "tests.hostile_plugins:Surrogate",
}
MIB = 1024 * 1024


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bounded.db'}"
    redis: RedisServer = request.getfixturevalue("redis_server")
    return f"{redis.url}?prefix=bounded{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def bounded(make_server: Callable[..., LiveServer], store_url: str) -> LiveServer:
    """A server with small output limits (1 MiB a block, 3 MiB a generation), and one slot."""
    return make_server(
        store_url=store_url, generators=HOSTILE, max_block_bytes=MIB, max_generation_bytes=3 * MIB, max_running=1
    )


async def ended(srv: LiveServer, gen_id: str) -> dict[str, Any]:
    """GET the generation (never a 500) until it has ended."""
    async with httpx.AsyncClient(base_url=srv.url, timeout=30) as http:
        with anyio.fail_after(30):
            while True:
                r = await http.get(f"/generations/{gen_id}")
                assert r.status_code == 200, r.text
                body: dict[str, Any] = r.json()
                if body["generation"]["state"] not in ("waiting", "running"):
                    return body
                await anyio.sleep(0.05)


async def slot_is_free(srv: LiveServer) -> None:
    """max_running=1: another generation is admitted and completes."""
    async with StreamingClient(srv.url) as client:
        gen = await client.generate("echo", prompt="still serving")
        with anyio.fail_after(30):
            assert await gen.text() == "still serving"


async def test_a_400_kb_word_repeated_fails_max_output_on_its_block(bounded: LiveServer) -> None:
    """The attack of the issue: merged deltas keep max_events far away; the byte limit holds."""
    async with StreamingClient(bounded.url) as client:
        gen = await client.generate("flood", prompt="x", options={"size": 400_000}, on_disconnect="continue")
        with anyio.fail_after(60):
            events = [e async for e in gen]
    final = check_invariants(events)
    assert events[-1].type == "generation.failed"
    assert events[-1].data["error"]["code"] == "max_output"
    assert "1048576 bytes" in events[-1].data["error"]["message"]
    assert [e.type for e in events].count("generation.failed") == 1
    # Nothing past the limit was written: two whole words fit in 1 MiB, a third does not.
    [text] = final.values()
    assert text == ("w" * 399_999 + " ") * 2
    body = await ended(bounded, gen.id)
    assert body["generation"]["error"]["code"] == "max_output"
    assert [b["stream_state"] for b in body["blocks"]] == ["aborted"]
    assert body["blocks"][0]["text"] == text
    await slot_is_free(bounded)


async def test_the_generation_limit_counts_every_block(bounded: LiveServer) -> None:
    async with StreamingClient(bounded.url) as client:
        # Four blocks written in turn: none reaches 1 MiB, all of them reach 3 MiB.
        gen = await client.generate(
            "flood", prompt="x", options={"size": 100_000, "blocks": 4}, on_disconnect="continue"
        )
        with anyio.fail_after(60):
            events = [e async for e in gen]
    final = check_invariants(events)
    assert events[-1].data["error"]["code"] == "max_output"
    assert "the generation" in events[-1].data["error"]["message"]
    assert sum(len(t) for t in final.values()) == 31 * 100_000  # 3 MiB holds 31 words, not 32
    assert all(len(t) < MIB for t in final.values())
    await ended(bounded, gen.id)
    await slot_is_free(bounded)


async def test_a_plugin_writing_without_ever_awaiting_is_stopped_by_the_limit(bounded: LiveServer) -> None:
    async with StreamingClient(bounded.url) as client:
        gen = await client.generate("writer", prompt="x", options={"size": 4096}, on_disconnect="continue")
        with anyio.fail_after(60):
            events = [e async for e in gen]
    check_invariants(events)
    assert events[-1].data["error"]["code"] == "max_output"
    body = await ended(bounded, gen.id)
    assert len(body["blocks"][0]["text"]) == MIB  # 256 chunks of 4 KiB
    await slot_is_free(bounded)


async def test_a_memory_error_in_a_plugin_ends_its_generation_once(bounded: LiveServer) -> None:
    async with StreamingClient(bounded.url) as client:
        gen = await client.generate("exhausted", prompt="x", on_disconnect="continue")
        with anyio.fail_after(30):
            events = [e async for e in gen]
        check_invariants(events)
        assert [e.type for e in events if e.type.startswith("generation.")] == [
            "generation.started", "generation.failed"
        ]
        assert events[-1].data["error"]["code"] == "plugin_error"
        assert "MemoryError" in events[-1].data["error"]["message"]
        body = await ended(bounded, gen.id)
        assert body["blocks"][0]["text"] == "before "
        # Resuming it ends at once with the same terminal event: no stream hangs.
        with anyio.fail_after(30):
            again = [e async for e in client.iter_events(gen.id, after=1)]
        assert again[-1].to_json() == events[-1].to_json()
    await slot_is_free(bounded)


async def test_lone_surrogates_from_a_plugin_become_replacement_characters(bounded: LiveServer) -> None:
    async with StreamingClient(bounded.url) as client:
        gen = await client.generate("surrogate", prompt="x", on_disconnect="continue")
        with anyio.fail_after(30):
            events = [e async for e in gen]
        final = check_invariants(events)
        assert events[-1].type == "generation.completed"
        assert list(final.values()) == ["a\ufffdb \ufffd end"]
        body = await ended(bounded, gen.id)
        assert body["blocks"][0]["text"] == "a\ufffdb \ufffd end"
        async with httpx.AsyncClient(base_url=bounded.url, timeout=30) as http:
            r = await http.get(f"/files/{gen.file_id}")
            assert r.status_code == 200 and r.json()["blocks"][-1]["text"] == "a\ufffdb \ufffd end"
            raw = await http.get(f"/blocks/{body['blocks'][0]['id']}/raw")
            assert raw.status_code == 200 and raw.content == "a\ufffdb \ufffd end".encode()
        with anyio.fail_after(30):
            again = [e async for e in client.iter_events(gen.id)]
        assert [e.to_json() for e in again] == [e.to_json() for e in events]
