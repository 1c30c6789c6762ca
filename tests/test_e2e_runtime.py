"""The core runtime end to end: a real uvicorn on a free port and the real Python client."""

from __future__ import annotations

import asyncio
import random

import anyio
import httpx
import pytest
from streaming.client.client import StreamingClient

from streaming.errors import (
    GenerationFailedError,
    InvalidRequestError,
    NotFoundError,
    UnknownGeneratorError,
)
from tests.invariants import check_invariants
from tests.netproxy import CuttingProxy
from tests.plugins import Counter

pytestmark = pytest.mark.anyio

TEST_GENERATORS = {
    "counting": "tests.plugins:CountingGenerator",
    "sync_counting": "tests.plugins:SyncCountingGenerator",
    "block_api": "tests.plugins:BlockApiGenerator",
    "thread_block_api": "tests.plugins:ThreadBlockApiGenerator",
    "raising": "tests.plugins:RaisingGenerator",
}


@pytest.fixture
def srv(make_server):
    return make_server(generators=TEST_GENERATORS, disconnect_grace_s=1.0)


async def final_texts(client: StreamingClient, gen_id: str) -> dict[str, str]:
    data = await client.get_generation(gen_id)
    return {b["id"]: b["text"] for b in data["blocks"]}


async def test_three_blocks_streamed_and_reassembled(srv) -> None:
    script = [[
        {"text": "first block, streamed in small pieces. ", "block": 0, "chunk": 3},
        {"text": "## second\n* markdown ✓ 日本語", "block": 1, "chunk": 2},
        {"text": '{"third": [1, 2, 3]}', "block": 2, "chunk": 5},
        {"text": "and more of the first.", "block": 0, "chunk": 4},
    ]]
    async with StreamingClient(srv.url) as client:
        gen = await client.generate(
            "scripted",
            prompt="go",
            options={"blocks": ["text/plain", "text/markdown", "application/json"], "rounds": script},
        )
        got = {}
        async for block in gen.blocks():
            got[block.id] = "".join([t async for t in block])
        assert list(got.values()) == [
            "first block, streamed in small pieces. and more of the first.",
            "## second\n* markdown ✓ 日本語",
            '{"third": [1, 2, 3]}',
        ]
        final = await final_texts(client, gen.id)
        assert final == got
        check_invariants(gen.events, final_blocks=final)
        mimes = [b["mime_type"] for b in (await client.get_generation(gen.id))["blocks"]]
        assert mimes == ["text/plain", "text/markdown", "application/json"]
        # The conversation holds the prompt and the three answers, with roles.
        file = await client.get_file(gen.file_id)
        roles = [t["value"]["string-value"] for b in file["blocks"] for t in b["tags"] if t["name"] == "role"]
        assert roles == ["user", "assistant", "assistant", "assistant"]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_resume_after_cut_connections_sees_every_event_once(srv, seed: int) -> None:
    rng = random.Random(seed)
    text = "".join(f"w{i} " for i in range(400))

    def cut(n: int) -> int | None:
        # The first event streams are cut at random byte offsets, then one runs through.
        return None if n >= 8 else rng.randint(50, 6000)

    async with CuttingProxy(srv.port, cut) as proxy:
        async with StreamingClient(proxy.url, backoff_s=0.01) as client:
            gen = await client.generate("echo", prompt=text, options={"delay_ms": 1})
            received = [ev async for ev in gen]
        assert proxy.cuts == 8
    async with StreamingClient(srv.url) as direct:
        reference = [ev async for ev in await direct.attach(gen.id)]
    assert [e.seq for e in received] == list(range(1, len(reference) + 1))
    assert [e.to_dict() for e in received] == [e.to_dict() for e in reference]
    texts = check_invariants(received)
    assert list(texts.values()) == [text]


async def test_cancel_mid_stream_stops_the_plugin(srv) -> None:
    for generator in ("counting", "sync_counting", "thread_block_api"):
        key = f"cancel-{generator}"
        async with StreamingClient(srv.url) as client:
            gen = await client.generate(generator, prompt="x", options={"key": key, "delay_ms": 2})
            seen = 0
            async for ev in gen:
                if ev.type == "block.delta":
                    seen += 1
                    if seen == 5:
                        state = await gen.cancel()
                        assert state["state"] == "cancelled"
                        cancel_seq = state["last_seq"]
                        produced = Counter.get(key)
            assert gen.state == "cancelled"
            types = [e.type for e in gen.events]
            cancel_at = types.index("generation.cancelled")
            assert cancel_at == len(types) - 1
            assert "block.aborted" in types
            check_invariants(gen.events)
            # The plugin's task really stopped: it makes no more chunks.
            await anyio.sleep(0.2)
            assert Counter.get(key) == produced
            data = await client.get_generation(gen.id)
            assert data["generation"]["state"] == "cancelled"
            # The cancel's answer already told the log's real end.
            assert cancel_seq == data["generation"]["last_seq"] == gen.events[-1].seq
            assert all(b["stream_state"] == "aborted" for b in data["blocks"])
            # Cancel is idempotent.
            again = await client.cancel(gen.id)
            assert again["state"] == "cancelled"


async def test_plugin_raising_after_k_chunks_aborts_blocks(srv) -> None:
    async with StreamingClient(srv.url) as client:
        gen = await client.generate("raising", prompt="x", options={"k": 4, "blocks": 2})
        with pytest.raises(GenerationFailedError) as info:
            await gen.text()
        assert info.value.code == "plugin_error"
        assert "model exploded" in info.value.message
        types = [e.type for e in gen.events]
        assert types.count("block.aborted") == 2
        assert types[-1] == "generation.failed"
        final = await final_texts(client, gen.id)
        assert list(final.values()) == ["c0 c1 c2 c3 ", "c0 c1 c2 c3 "]
        check_invariants(gen.events, final_blocks=final)
        # The server carries on.
        ok = await client.generate("echo", prompt="still here")
        assert await ok.text() == "still here"


async def test_block_api_and_thread_plugins(srv) -> None:
    async with StreamingClient(srv.url) as client:
        gen = await client.generate("block_api", prompt="x", options={"blocks": 2})
        assert await gen.text() == "block 0 ünïcødé ✓block 1 ünïcødé ✓"
        check_invariants(gen.events, final_blocks=await final_texts(client, gen.id))
        assert gen.events[-1].data["usage"][0]["operation_amount"] == 30
        gen = await client.generate("thread_block_api", prompt="x", options={"key": "t", "limit": 20, "delay_ms": 0})
        assert await gen.text() == "".join(f"{i} " for i in range(20))


async def test_unsupported_native_capability_refused_before_any_block(srv) -> None:
    runtime = srv.runtime
    before = runtime.counters["started"]
    async with httpx.AsyncClient(base_url=srv.url) as http:
        r = await http.post(
            "/generations",
            json={
                "generator": "echo",
                "prompt": "x",
                "capabilities": [
                    {"name": "steamship.function_calling_support", "request_level": "native"},
                    {"name": "steamship.conversation_support", "request_level": "native"},
                    {"name": "acme.telepathy", "request_level": "optional"},
                ],
            },
        )
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "unsupported_capability"
    assert [c["name"] for c in err["unsupported_capabilities"]] == ["steamship.function_calling_support"]
    assert runtime.counters["started"] == before
    assert runtime.running_count == 0


async def test_capability_response_names_and_levels(srv) -> None:
    async with StreamingClient(srv.url) as client:
        gen = await client.generate(
            "echo",
            prompt="x",
            capabilities=[
                {"name": "steamship.conversation_support", "request_level": "best-effort"},
                {"name": "steamship.system_prompt_support", "request_level": "best-effort"},
            ],
        )
        await gen.text()
        caps = gen.events[0].data["capabilities"]["capability_responses"]
        assert caps == [
            {"name": "steamship.conversation_support", "fulfilled_at": 1},
            {"name": "steamship.system_prompt_support", "fulfilled_at": 2},
        ]


async def test_bad_requests_get_clear_json_errors(srv) -> None:
    async with httpx.AsyncClient(base_url=srv.url) as http:
        r = await http.post("/generations", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_request"
        r = await http.post("/generations", json=["a list"])
        assert r.status_code == 400
        r = await http.post("/generations", json={"generator": "nope", "prompt": "x"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_generator"
        r = await http.post("/generations", json={"generator": "echo"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
        r = await http.post("/generations", json={"generator": "echo", "prompt": 5})
        assert r.status_code == 422
        for path in ("/generations/gen_nope", "/generations/gen_nope/events", "/blocks/blk_nope",
                     "/blocks/blk_nope/raw", "/files/file_nope"):
            r = await http.get(path)
            assert r.status_code == 404, path
            assert r.json()["error"]["code"] == "not_found"
        r = await http.post("/generations/gen_nope/cancel")
        assert r.status_code == 404
        r = await http.get("/generations/gen_nope/events", params={"after": "abc"})
        assert r.status_code == 422
        r = await http.post("/generations", content=b"x" * (2 << 20))
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
        r = await http.get("/no/such/route")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert (await http.get("/healthz")).json()["status"] == "ok"
    async with StreamingClient(srv.url) as client:
        with pytest.raises(UnknownGeneratorError):
            await client.generate("nope", prompt="x")
        with pytest.raises(NotFoundError):
            await client.get_generation("gen_nope")
        with pytest.raises(InvalidRequestError):
            await client.generate("echo", prompt="x", messages=[{"role": "user", "content": "y"}])
        assert await (await client.generate("echo", prompt="fine")).text() == "fine"


async def test_fifty_generations_three_subscribers_each(srv) -> None:
    async with StreamingClient(srv.url) as client:
        gens = []
        for i in range(50):
            words = "".join(f"g{i}w{j} " for j in range(30))
            gens.append(
                (await client.generate("echo", prompt=words, options={"delay_ms": 1}), words)
            )
        results: dict[tuple[int, int], str] = {}

        async def follow(i: int, k: int, gen_id: str) -> None:
            stream = await client.attach(gen_id)
            results[(i, k)] = await stream.text()

        async with anyio.create_task_group() as tg:
            for i, (gen, _) in enumerate(gens):
                for k in range(3):
                    tg.start_soon(follow, i, k, gen.id)
        for i, (_, words) in enumerate(gens):
            for k in range(3):
                assert results[(i, k)] == words


async def test_sse_wire_format_and_resume_headers(srv) -> None:
    async with httpx.AsyncClient(base_url=srv.url) as http:
        async with http.stream(
            "POST", "/generations", json={"generator": "echo", "prompt": "a b c"},
            headers={"Accept": "text/event-stream"},
        ) as r:
            assert r.status_code == 201
            assert r.headers["cache-control"] == "no-store"
            assert r.headers["x-accel-buffering"] == "no"
            assert r.headers["content-type"].startswith("text/event-stream")
            body = (await r.aread()).decode()
            gen_path = r.headers["location"]
        frames = [f for f in body.split("\n\n") if f]
        assert frames[0].startswith("id: 1\nevent: generation.started\ndata: {")
        n = len(frames)
        # Resume by Last-Event-ID and by ?after=: exactly the events after it.
        r = await http.get(f"{gen_path}/events", headers={"Last-Event-ID": "2"})
        assert [f for f in r.text.split("\n\n") if f] == frames[2:]
        r = await http.get(f"{gen_path}/events", params={"after": n - 1})
        assert [f for f in r.text.split("\n\n") if f] == frames[n - 1 :]
        raw = await http.get(f"/blocks/{(await http.get(gen_path)).json()['blocks'][0]['id']}/raw")
        assert raw.text == "a b c"


async def test_heartbeat_comments(make_server) -> None:
    srv = make_server(heartbeat_s=0.1)
    async with httpx.AsyncClient(base_url=srv.url) as http:
        r = await http.post(
            "/generations",
            json={"generator": "scripted", "prompt": "x", "options": {"rounds": [[{"sleep_ms": 450}, {"text": "done"}]]}},
        )
        r = await http.get(r.json()["events_url"])
        assert ": ping\n\n" in r.text
        assert "event: generation.completed" in r.text


async def test_on_disconnect_cancel_and_continue(make_server) -> None:
    srv = make_server(generators=TEST_GENERATORS, disconnect_grace_s=0.3)
    async with StreamingClient(srv.url) as client:
        gone = await client.generate("counting", prompt="x", options={"key": "dc1", "delay_ms": 5})
        kept = await client.generate(
            "counting", prompt="x", options={"key": "dc2", "delay_ms": 5, "limit": 150}, on_disconnect="continue"
        )
        # Nobody subscribes: after the grace period the first is cancelled, the second runs on.
        with anyio.fail_after(10):
            while (await client.get_generation(gone.id))["generation"]["state"] != "cancelled":
                await anyio.sleep(0.05)
        assert (await client.get_generation(kept.id))["generation"]["state"] == "running"
        assert await (await client.attach(kept.id)).text() == "".join(f"{i} " for i in range(150))
        # A subscriber that drops off mid-stream: cancelled once the grace period passes.
        gen = await client.generate("counting", prompt="x", options={"key": "dc3", "delay_ms": 5})
        async for ev in gen:
            if ev.type == "block.delta":
                break
        await gen.aclose()
        with anyio.fail_after(10):
            while (await client.get_generation(gen.id))["generation"]["state"] != "cancelled":
                await anyio.sleep(0.05)


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_one_generation_at_a_time_per_conversation(make_server, tmp_path, store: str) -> None:
    # Requests that race to continue one conversation: exactly one wins, the others get
    # 409 at once, and the conversation can be continued once the winner has ended.
    # (sqlite reads the conversation in a worker thread: the race has room there.)
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path / 'conv.db'}"
    server = make_server(store_url=url)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        first = (await http.post("/generations", json={"generator": "echo", "prompt": "a "})).json()
        file_id = first["generation"]["file_id"]
        await ended(http, first["generation"]["id"])
        slow = {"generator": "echo", "prompt": "b ", "file_id": file_id, "options": {"repeat": 40, "delay_ms": 25}}
        answers = await asyncio.gather(*[http.post("/generations", json=slow) for _ in range(8)])
        codes = sorted(r.status_code for r in answers)
        assert codes == [201] + [409] * 7, codes
        for r in answers:
            if r.status_code == 409:
                assert r.json()["error"]["code"] == "conflict"
        winners = [r.json()["generation"]["id"] for r in answers if r.status_code == 201]
        busy = await http.post("/generations", json={"generator": "echo", "prompt": "c ", "file_id": file_id})
        assert busy.status_code == 409 and winners[0] in busy.json()["error"]["message"]
        async with StreamingClient(server.url) as client:
            assert await (await client.attach(winners[0])).text() == "b " * 40
        again = await http.post("/generations", json={"generator": "echo", "prompt": "c ", "file_id": file_id})
        assert again.status_code == 201, again.text
        await ended(http, again.json()["generation"]["id"])
        texts = [b["text"] for b in (await http.get(f"/files/{file_id}")).json()["blocks"]]
        assert texts == ["a ", "a ", "b ", "b " * 40, "c ", "c "]


async def ended(http: httpx.AsyncClient, gen_id: str) -> None:
    with anyio.fail_after(5):
        while (await http.get(f"/generations/{gen_id}")).json()["generation"]["state"] == "running":
            await anyio.sleep(0.02)
