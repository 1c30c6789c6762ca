"""Double texting (``multitask``) in one process, over the wire, on every store: a request
that continues a conversation while a generation runs or waits on it is refused
(``reject``), interrupts it (``interrupt``), takes its whole turn back (``rollback``) or
waits its turn (``enqueue``). The scenarios take two clients, so that
``tests/test_multitask_redis.py`` runs the same ones through two ``streaming serve``
processes (start on one, double-text through the other)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import httpx
import pytest
from streaming.client.ws import ws_url_of
from websockets.asyncio.client import connect

from streaming.plugin import BlockTypePluginOutput, InvocableResponse, StreamingGenerator
from tests.invariants import check_invariants
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

#: the generators these tests register (``--generator`` of a serve process)
GENERATORS = {"history": "tests.test_multitask:History"}


class History(StreamingGenerator):
    """Writes the conversation it was given (``role:text`` of each block, ``|`` between),
    then ``x `` ``repeat`` times, ``delay_ms`` apart: what a turn saw, and as slow as asked."""

    def determine_output_block_types(self, request: Any) -> InvocableResponse[BlockTypePluginOutput]:
        return InvocableResponse(data=BlockTypePluginOutput(block_types_to_create=["text/plain"]))

    async def run(self, request: Any) -> AsyncIterator[str]:
        opts = request.data.options
        seen = [f"{b.chat_role}:{b.text}" for b in request.data.blocks if b.chat_role in ("user", "assistant")]
        yield "[" + "|".join(seen) + "] "
        for _ in range(int(opts.get("repeat", 0))):
            await anyio.sleep(int(opts.get("delay_ms", 0)) / 1000)
            yield "x "


SLOW = {"repeat": 2000, "delay_ms": 20}  # 40 s: only ever ended by the strategy under test


def turn(prompt: str, file_id: str | None = None, **body: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"generator": "history", "prompt": prompt, "on_disconnect": "continue", **body}
    if file_id is not None:
        out["file_id"] = file_id
    return out


async def started(http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    r = await http.post("/generations", json=body)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()["generation"]
    return out


async def ended(http: httpx.AsyncClient, gen_id: str) -> dict[str, Any]:
    with anyio.fail_after(30):
        while True:
            body: dict[str, Any] = (await http.get(f"/generations/{gen_id}")).json()
            if body["generation"]["state"] in ("succeeded", "failed", "cancelled"):
                return body
            await anyio.sleep(0.02)


async def writing(http: httpx.AsyncClient, gen_id: str) -> None:
    """Until the generation has written some of its answer (and is still running)."""
    with anyio.fail_after(30):
        while True:
            body = (await http.get(f"/generations/{gen_id}")).json()
            assert body["generation"]["state"] in ("waiting", "running"), body
            if any("x " in b["text"] for b in body["blocks"]):
                return
            await anyio.sleep(0.02)


async def writing_on(url: str, gen_id: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        await writing(http, gen_id)


async def events(http: httpx.AsyncClient, gen_id: str) -> list[dict[str, Any]]:
    """The whole event stream of a generation (its terminal event last), checked."""
    out: list[dict[str, Any]] = []
    with anyio.fail_after(30):
        async with http.stream("GET", f"/generations/{gen_id}/events") as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    out.append(json.loads(line[6:]))
    check_invariants(out)
    return out


def final_text(evs: list[dict[str, Any]]) -> str:
    return "".join(e["text"] for e in evs if e["type"] == "block.delta")


async def conversation(http: httpx.AsyncClient, file_id: str) -> list[tuple[str, str, str | None]]:
    r = await http.get(f"/files/{file_id}")
    assert r.status_code == 200, r.text
    return [(_role(b), b["text"], b["stream_state"]) for b in r.json()["blocks"]]


def _role(block: dict[str, Any]) -> str:
    for tag in block["tags"]:
        if tag.get("kind") == "chat" and tag.get("name") == "role":
            return str(next(iter(tag["value"].values())))
    return "?"


# -- the scenarios: ``a`` starts, ``b`` double-texts (the same client in one process) --


async def first_turns(a: httpx.AsyncClient) -> tuple[str, dict[str, Any]]:
    """A finished turn, then a slow one that is writing: (conversation, the slow one)."""
    done = await started(a, turn("hi"))
    file_id = done["file_id"]
    await ended(a, done["id"])
    slow = await started(a, turn("tell me", file_id, options=SLOW))
    await writing(a, slow["id"])
    return file_id, slow


async def scenario_reject(a: httpx.AsyncClient, b: httpx.AsyncClient) -> None:
    # Continuing a conversation whose first generation still runs: it exists already.
    first = await started(a, turn("hi", options=SLOW))
    await writing(a, first["id"])
    for body in (turn("again", first["file_id"]), turn("again", first["file_id"], multitask="reject")):
        r = await b.post("/generations", json=body)
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "conflict"
        assert r.json()["error"]["generation_id"] == first["id"]
    assert (await a.get(f"/generations/{first['id']}")).json()["generation"]["state"] == "running"
    await b.post(f"/generations/{first['id']}/cancel")
    assert (await ended(a, first["id"]))["generation"]["state"] == "cancelled"


async def scenario_interrupt(a: httpx.AsyncClient, b: httpx.AsyncClient) -> None:
    file_id, slow = await first_turns(a)
    new = await started(b, turn("stop, this instead", file_id, multitask="interrupt"))
    assert new["state"] == "running"
    old = await ended(a, slow["id"])
    assert old["generation"]["state"] == "cancelled"
    partial = old["blocks"][0]["text"]
    assert old["blocks"][0]["stream_state"] == "aborted" and partial.startswith("[") and "x " in partial
    new_evs = await events(b, new["id"])
    assert new_evs[-1]["type"] == "generation.completed"
    # The new turn saw the interrupted one's partial answer.
    assert f"user:tell me|assistant:{partial}|user:stop, this instead" in final_text(new_evs)
    blocks = await conversation(b, file_id)
    assert [(r, s) for r, _, s in blocks] == [
        ("user", None), ("assistant", "complete"),
        ("user", None), ("assistant", "aborted"),
        ("user", None), ("assistant", "complete"),
    ]
    assert blocks[3][1] == partial
    check_invariants(await events(a, slow["id"]))


async def scenario_rollback(a: httpx.AsyncClient, b: httpx.AsyncClient) -> None:
    file_id, slow = await first_turns(a)
    before = (await a.get(f"/generations/{slow['id']}")).json()
    dropped_output = before["blocks"][0]["id"]
    dropped_input = next(
        blk["id"] for blk in (await a.get(f"/files/{file_id}")).json()["blocks"]
        if blk["request_id"] == slow["id"] and blk["id"] != dropped_output
    )
    new = await started(b, turn("no, this", file_id, multitask="rollback"))
    assert (await ended(a, slow["id"]))["generation"]["state"] == "cancelled"
    new_evs = await events(b, new["id"])
    assert new_evs[-1]["type"] == "generation.completed"
    # The new turn never saw the rolled-back one.
    assert final_text(new_evs).startswith("[user:hi|assistant:[user:hi] |user:no, this] ")
    blocks = await conversation(b, file_id)
    assert [(r, t) for r, t, _ in blocks] == [
        ("user", "hi"), ("assistant", "[user:hi] "), ("user", "no, this"), ("assistant", final_text(new_evs)),
    ]
    for http in (a, b):
        for block_id in (dropped_input, dropped_output):
            assert (await http.get(f"/blocks/{block_id}")).status_code == 404
        ids = {blk["id"] for blk in (await http.get(f"/files/{file_id}")).json()["blocks"]}
        assert not ids & {dropped_input, dropped_output}


async def scenario_enqueue(a: httpx.AsyncClient, b: httpx.AsyncClient) -> None:
    file_id, slow = await first_turns(a)
    second = await started(b, turn("second", file_id, multitask="enqueue"))
    third = await started(b, turn("third", file_id, multitask="enqueue"))
    fourth = await started(b, turn("fourth", file_id, multitask="enqueue"))
    assert second["state"] == third["state"] == fourth["state"] == "waiting"
    for gen in (second, third):
        assert (await a.get(f"/generations/{gen['id']}")).json()["generation"]["state"] == "waiting"
    # A waiting one can be cancelled (through the other process): its stream starts and
    # ends at once; the rest move up.
    cancelled = (await a.post(f"/generations/{third['id']}/cancel")).json()["generation"]
    assert cancelled["state"] == "cancelled"
    third_evs = await events(a, third["id"])
    assert [e["type"] for e in third_evs] == ["generation.started", "generation.cancelled"]
    assert (await a.get(f"/generations/{second['id']}")).json()["generation"]["state"] == "waiting"
    # Reject still refuses while they wait.
    assert (await b.post("/generations", json=turn("later", file_id))).status_code == 409
    await a.post(f"/generations/{slow['id']}/cancel")
    second_evs = await events(b, second["id"])
    fourth_evs = await events(a, fourth["id"])
    assert second_evs[-1]["type"] == fourth_evs[-1]["type"] == "generation.completed"
    slow_text = (await ended(a, slow["id"]))["blocks"][0]["text"]
    assert final_text(second_evs) == f"[user:hi|assistant:[user:hi] |user:tell me|assistant:{slow_text}|user:second] "
    assert final_text(fourth_evs).endswith(f"|user:second|assistant:{final_text(second_evs)}|user:fourth] ")
    s2 = (await a.get(f"/generations/{second['id']}")).json()["generation"]
    s4 = (await a.get(f"/generations/{fourth['id']}")).json()["generation"]
    assert s2["finished_at"] <= s4["finished_at"]
    assert [t for _, t, _ in await conversation(a, file_id)][-4:] == [
        "second", final_text(second_evs), "fourth", final_text(fourth_evs),
    ]


SCENARIOS = {
    "reject": scenario_reject,
    "interrupt": scenario_interrupt,
    "rollback": scenario_rollback,
    "enqueue": scenario_enqueue,
}


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'multitask.db'}"
    redis: RedisServer = request.getfixturevalue("redis_server")
    return redis.url


@pytest.mark.parametrize("strategy", list(SCENARIOS))
async def test_strategy_in_one_process(make_server: Any, store_url: str, strategy: str) -> None:
    live = make_server(store_url=store_url, generators=GENERATORS)
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
        await SCENARIOS[strategy](http, http)


async def test_the_generate_frame_takes_multitask(make_server: Any) -> None:
    """On one socket: a slow turn, then an enqueued one (acked ``waiting``, its events only
    once the slow one has ended), then one that interrupts both."""
    live = make_server(generators=GENERATORS)
    async with connect(ws_url_of(live.url)) as ws, httpx.AsyncClient(base_url=live.url, timeout=30) as http:
        await ws.send(json.dumps({"type": "generate", "ref": "slow", **turn("hi", options=SLOW)}))
        seen: dict[str, list[dict[str, Any]]] = {}
        acks: dict[str, dict[str, Any]] = {}

        async def until(done: Any) -> None:
            with anyio.fail_after(30):
                while not done():
                    frame = json.loads(await ws.recv())
                    if frame["type"] == "ack":
                        acks[frame["ref"]] = frame
                    elif frame["type"] == "error":
                        raise AssertionError(frame)
                    else:
                        seen.setdefault(frame["generation_id"], []).append(frame)

        await until(lambda: "slow" in acks)
        slow = acks["slow"]["generation"]
        await writing(http, slow["id"])
        await ws.send(json.dumps({"type": "generate", "ref": "queued",
                                  **turn("after you", slow["file_id"], multitask="enqueue")}))
        await until(lambda: "queued" in acks)
        queued = acks["queued"]["generation"]
        assert queued["state"] == "waiting" and acks["queued"]["blocks"] == []
        await ws.send(json.dumps({"type": "generate", "ref": "now",
                                  **turn("now", slow["file_id"], multitask="interrupt")}))
        await until(lambda: "now" in acks)
        now = acks["now"]["generation"]
        terminal = ("generation.completed", "generation.cancelled", "generation.failed")
        await until(lambda: all(seen.get(g["id"]) and seen[g["id"]][-1]["type"] in terminal for g in (slow, queued, now)))
        assert seen[slow["id"]][-1]["type"] == "generation.cancelled"
        assert [e["type"] for e in seen[queued["id"]]] == ["generation.started", "generation.cancelled"]
        assert seen[now["id"]][-1]["type"] == "generation.completed"
        for g in (slow, queued, now):
            check_invariants(seen[g["id"]])
        assert final_text(seen[now["id"]]).endswith("|user:now] ")


# -- the dialect routes take ``multitask`` in their bodies --


def chat_body(chat_id: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"id": chat_id, "model": "history", "on_disconnect": "continue",
            "messages": [{"id": f"m-{text}", "role": "user", "parts": [{"type": "text", "text": text}]}], **extra}


def ui_chunks(lines: Iterator[str]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            out.append(json.loads(line[6:]))
    return out


def test_ai_sdk_chat_interrupts_and_enqueues(make_server: Any) -> None:
    live = make_server(generators=GENERATORS)
    url = f"{live.url}/api/chat"
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", url, json=chat_body("c1", "hi", options=SLOW)) as first:
            assert first.status_code == 200
            lines = first.iter_lines()
            for line in lines:
                if '"text-delta"' in line and "x " in line:
                    break  # the answer is streaming
            busy = http.post(url, json=chat_body("c1", "again"))
            assert busy.status_code == 409 and busy.json()["error"]["code"] == "conflict"
            second = http.post(url, json=chat_body("c1", "instead", multitask="interrupt"))
            assert second.status_code == 200
            rest = ui_chunks(lines)
        assert [c["type"] for c in rest][-2:] == ["abort", "finish"]
        texts = "".join(c["delta"] for c in ui_chunks(second.iter_lines()) if c["type"] == "text-delta")
        assert texts.startswith("[user:hi|assistant:[user:hi] x ") and texts.endswith("|user:instead] ")
        with http.stream("POST", url, json=chat_body("c2", "hi", options=SLOW)) as slow:
            for line in slow.iter_lines():
                if '"text-delta"' in line:
                    break
            slow_id = slow.headers["x-generation-id"]
            with http.stream("POST", url, json=chat_body("c2", "next", multitask="enqueue")) as queued:
                queued_id = queued.headers["x-generation-id"]
                assert http.get(f"{live.url}/generations/{queued_id}").json()["generation"]["state"] == "waiting"
                http.post(f"{live.url}/generations/{slow_id}/cancel")
                chunks = ui_chunks(queued.iter_lines())
        assert chunks[0]["type"] == "start" and chunks[-1]["type"] == "finish"
        assert "".join(c["delta"] for c in chunks if c["type"] == "text-delta").endswith("|user:next] ")


def test_responses_continue_with_multitask(make_server: Any) -> None:
    import openai

    live = make_server(generators=GENERATORS)
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)
    first = client.responses.create(model="history", input="hi")
    slow = client.responses.create(model="history", input="tell me", previous_response_id=first.id,
                                   background=True, extra_body={"options": SLOW})
    with httpx.Client(base_url=live.url, timeout=30) as http:
        with anyio.from_thread.start_blocking_portal() as portal:
            portal.call(writing_on, live.url, slow.id.removeprefix("resp_"))
        with pytest.raises(openai.ConflictError):
            client.responses.create(model="history", input="again", previous_response_id=slow.id)
        rolled = client.responses.create(model="history", input="this", previous_response_id=slow.id,
                                         extra_body={"multitask": "rollback"})
        assert rolled.status == "completed"
        assert rolled.output_text == "[user:hi|assistant:[user:hi] |user:this] "
        gone = http.get(f"/generations/{slow.id.removeprefix('resp_')}").json()["generation"]
        assert gone["state"] == "cancelled"
        bad = http.post("/v1/responses", json={"model": "history", "input": "x", "multitask": "sometimes"})
        assert bad.status_code == 400 and "multitask" in bad.text


def test_messages_take_multitask(make_server: Any) -> None:
    live = make_server(generators=GENERATORS)
    with httpx.Client(base_url=live.url, timeout=30) as http:
        body = {"model": "history", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
        # A message is a conversation of its own: nothing is in its way, whatever the strategy.
        for strategy in ("reject", "interrupt", "rollback", "enqueue"):
            r = http.post("/v1/messages", json={**body, "multitask": strategy})
            assert r.status_code == 200, r.text
            assert r.json()["content"][0]["text"] == "[user:hi] "
        bad = http.post("/v1/messages", json={**body, "multitask": "later"})
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


async def test_a_waiting_stream_beats_until_it_starts(make_server: Any) -> None:
    """The stream of an enqueued generation, opened at once (the POST itself streaming):
    heartbeats while it waits, then ``generation.started`` (seq 1) and the rest."""
    live = make_server(generators=GENERATORS, heartbeat_s=0.05)
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
        file_id, slow = await first_turns(http)
        lines: list[str] = []
        body = turn("after", file_id, multitask="enqueue")
        with anyio.fail_after(30):
            async with http.stream("POST", "/generations", json=body, headers={"Accept": "text/event-stream"}) as r:
                assert r.status_code == 201
                async for line in r.aiter_lines():
                    lines.append(line)
                    if line == ": ping" and lines.count(": ping") == 3:
                        await http.post(f"/generations/{slow['id']}/cancel")
    first_event = next(i for i, line in enumerate(lines) if line.startswith("event: "))
    assert lines[first_event] == "event: generation.started" and lines[first_event - 1] == "id: 1"
    assert lines[:first_event].count(": ping") >= 3
    assert "event: generation.completed" in lines


# -- the Python client --


async def test_the_python_client_takes_multitask(server: Any) -> None:
    from streaming.client import StreamingClient

    from streaming.wire import ConflictError

    async with StreamingClient(server.url) as client:
        first = await client.generate("echo", prompt="a b c d e f g h", options={"repeat": 50, "delay_ms": 50})
        with pytest.raises(ConflictError):
            await client.generate("echo", prompt="again", file_id=first.file_id)
        second = await client.generate("echo", prompt="instead", file_id=first.file_id, multitask="interrupt")
        assert await second.text() == "instead"
        assert (await client.get_generation(first.id))["generation"]["state"] == "cancelled"
