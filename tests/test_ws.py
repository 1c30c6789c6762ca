"""``WS /ws`` end to end over a real uvicorn: the raw frame protocol with the real
``websockets`` client, then the Python :class:`~clients.ws.WebSocketClient`."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest
from streaming.client.client import StreamingClient
from streaming.client.ws import WebSocketClient, ws_url_of
from streaming.server.app import ServerSettings, create_app
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from streaming import errors as E
from streaming.runtime import RuntimeSettings
from tests.conftest import LiveServer
from tests.invariants import check_invariants
from tests.raw_ws import handshake, read_frames, send_json

pytestmark = pytest.mark.anyio

TERMINAL = {"generation.completed", "generation.failed", "generation.cancelled"}
GET_TIME = {
    "name": "get_time",
    "description": "the time",
    "parameters": {"type": "object", "properties": {}},
}
TOOL_SCRIPT = {
    "rounds": [[{"tool_call": {"name": "get_time", "args": {}}}], [{"echo_tool_results": True}]]
}
LONG = {"repeat": 2000, "delay_ms": 5}


_backlog: dict[int, list[dict[str, Any]]] = {}


async def recv(ws: ClientConnection) -> dict[str, Any]:
    """The next frame (frames skipped while waiting for an ack come first)."""
    pending = _backlog.get(id(ws))
    if pending:
        return pending.pop(0)
    with anyio.fail_after(10):
        frame: dict[str, Any] = json.loads(await ws.recv())
    return frame


async def until_terminal(ws: ClientConnection, gen_id: str, into: list[dict[str, Any]]) -> None:
    while True:
        frame = await recv(ws)
        if frame.get("generation_id") == gen_id and "seq" in frame:
            into.append(frame)
            if frame["type"] in TERMINAL:
                return


async def final_blocks(url: str, gen_id: str) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=url) as http:
        body = (await http.get(f"/generations/{gen_id}")).json()
    return {b["id"]: b["text"] for b in body["blocks"]}


async def full_log(url: str, gen_id: str) -> list[dict[str, Any]]:
    async with StreamingClient(url) as client:
        return [ev.to_dict() for ev in [e async for e in client.iter_events(gen_id)]]


def watch_finished(server: LiveServer) -> Callable[[str], Awaitable[dict[str, Any]]]:
    """Hook the runtime's finish listener; returns ``await wait(gen_id) -> generation``."""
    finished: dict[str, Any] = {}
    cond = threading.Condition()

    def listener(kind: str, generation: Any) -> None:
        with cond:
            finished[generation.id] = generation.model_dump(mode="json")
            cond.notify_all()

    server.runtime.listeners.append(listener)

    def wait_sync(gen_id: str) -> dict[str, Any]:
        with cond:
            assert cond.wait_for(lambda: gen_id in finished, timeout=15), (
                "generation did not finish"
            )
            return finished[gen_id]

    async def wait(gen_id: str) -> dict[str, Any]:
        # In a thread: this loop must keep running (an aborted socket closes on its next turn).
        return await anyio.to_thread.run_sync(wait_sync, gen_id)

    return wait


async def generate(ws: ClientConnection, ref: str, **body: Any) -> dict[str, Any]:
    """Send a generate frame; its ack (other generations' events wait in a backlog)."""
    await ws.send(json.dumps({"type": "generate", "ref": ref, **body}))
    while True:
        with anyio.fail_after(10):
            frame: dict[str, Any] = json.loads(await ws.recv())
        if frame["type"] in ("ack", "error") and frame.get("ref") == ref:
            break
        _backlog.setdefault(id(ws), []).append(frame)
    assert frame["type"] == "ack" and frame["op"] == "generate", frame
    return frame


# -- the raw protocol --


async def test_generate_acks_then_streams(server: LiveServer) -> None:
    async with connect(ws_url_of(server.url)) as ws:
        ack = await generate(
            ws, "r1", generator="echo", prompt="héllo wörld 🌍 ", options={"repeat": 3}
        )
        gen_id = ack["generation_id"]
        assert ack["generation"]["id"] == gen_id and ack["blocks"]
        events: list[dict[str, Any]] = []
        await until_terminal(ws, gen_id, events)
    assert events[0]["type"] == "generation.started"
    assert events[-1]["type"] == "generation.completed"
    texts = check_invariants(events, final_blocks=await final_blocks(server.url, gen_id))
    assert "".join(texts.values()) == "héllo wörld 🌍 " * 3


async def test_several_generations_multiplexed(server: LiveServer) -> None:
    async with connect(ws_url_of(server.url)) as ws:
        prompts = {"a": "alpha ", "b": "beta ", "c": "gamma "}
        ids = {}
        for ref, prompt in prompts.items():
            ack = await generate(
                ws, ref, generator="echo", prompt=prompt, options={"repeat": 40, "delay_ms": 1}
            )
            ids[ack["generation_id"]] = ref
        events: dict[str, list[dict[str, Any]]] = {gid: [] for gid in ids}
        done: set[str] = set()
        while done != set(ids):
            frame = await recv(ws)
            assert frame["generation_id"] in ids, frame
            events[frame["generation_id"]].append(frame)
            if frame["type"] in TERMINAL:
                done.add(frame["generation_id"])
    for gid, ref in ids.items():
        texts = check_invariants(events[gid], final_blocks=await final_blocks(server.url, gid))
        assert "".join(texts.values()) == prompts[ref] * 40


async def test_subscribe_resumes_after_seq_on_another_socket(server: LiveServer) -> None:
    async with connect(ws_url_of(server.url)) as first:
        ack = await generate(
            first,
            "g",
            generator="echo",
            prompt="tok ",
            options={"repeat": 200, "delay_ms": 1},
            on_disconnect="continue",
        )
        gen_id = ack["generation_id"]
        seen = [await recv(first) for _ in range(5)]
    after = seen[-1]["seq"]
    async with connect(ws_url_of(server.url)) as second:
        await second.send(
            json.dumps({"type": "subscribe", "generation_id": gen_id, "after": after, "ref": 7})
        )
        sub_ack = await recv(second)
        assert sub_ack == {
            "type": "ack",
            "op": "subscribe",
            "generation_id": gen_id,
            "ref": 7,
            "after": after,
        }
        rest: list[dict[str, Any]] = []
        await until_terminal(second, gen_id, rest)
    combined = seen + rest
    assert combined == await full_log(server.url, gen_id)
    texts = check_invariants(combined, final_blocks=await final_blocks(server.url, gen_id))
    assert "".join(texts.values()) == "tok " * 200


async def test_client_side_tool_answered_with_a_frame(server: LiveServer) -> None:
    async with connect(ws_url_of(server.url)) as ws:
        ack = await generate(
            ws,
            "t",
            generator="scripted",
            prompt="what time is it?",
            tools=[GET_TIME],
            options=TOOL_SCRIPT,
        )
        gen_id = ack["generation_id"]
        events: list[dict[str, Any]] = []
        call_id = None
        while True:
            frame = await recv(ws)
            if frame["type"] == "ack":
                assert frame == {
                    "type": "ack",
                    "op": "tool.result",
                    "generation_id": gen_id,
                    "ref": "answer",
                    "call_id": call_id,
                }
                continue
            events.append(frame)
            if frame["type"] == "tool.call":
                call_id = frame["call_id"]
                assert frame["tool_name"] == "get_time" and frame["args"] == {}
                await ws.send(
                    json.dumps(
                        {
                            "type": "tool.result",
                            "ref": "answer",
                            "generation_id": gen_id,
                            "call_id": call_id,
                            "result": "12:34",
                        }
                    )
                )
            if frame["type"] in TERMINAL:
                break
        # Answering the same call again is a conflict, and the socket carries on.
        await ws.send(
            json.dumps(
                {
                    "type": "tool.result",
                    "ref": "again",
                    "generation_id": gen_id,
                    "call_id": call_id,
                    "result": "x",
                }
            )
        )
        err = await recv(ws)
        assert err["type"] == "error" and err["ref"] == "again"
        assert err["error"]["code"] == "tool_call_conflict"
    assert events[-1]["type"] == "generation.completed"
    results = [e for e in events if e["type"] == "tool.result"]
    assert [(r["tool_name"], r["result"], r["is_error"]) for r in results] == [
        ("get_time", ["12:34"], False)
    ]
    texts = check_invariants(events, final_blocks=await final_blocks(server.url, gen_id))
    assert "[get_time result: 12:34]" in texts.values()


BAD_FRAMES: list[tuple[str, str | bytes, str]] = [
    ("not json", "hello?", "malformed_request"),
    ("truncated json", '{"type": "generate", ', "malformed_request"),
    ("not an object", "[1, 2, 3]", "malformed_request"),
    ("binary, not utf-8", b"\xff\xfe\x00", "malformed_request"),
    ("no type", '{"generator": "echo", "prompt": "x"}', "invalid_request"),
    ("type not a string", '{"type": 3}', "invalid_request"),
    ("unknown type", '{"type": "frobnicate"}', "invalid_request"),
    ("missing generation_id", '{"type": "cancel"}', "invalid_request"),
    (
        "generation_id of the wrong type",
        '{"type": "subscribe", "generation_id": 12}',
        "invalid_request",
    ),
    (
        "after of the wrong type",
        '{"type": "subscribe", "generation_id": "g", "after": "ten"}',
        "invalid_request",
    ),
    (
        "negative after",
        '{"type": "subscribe", "generation_id": "g", "after": -1}',
        "invalid_request",
    ),
    ("generate without input", '{"type": "generate", "generator": "echo"}', "invalid_request"),
    (
        "generate with a wrong field type",
        '{"type": "generate", "generator": "echo", "prompt": 5}',
        "invalid_request",
    ),
    (
        "generate with an unknown field",
        '{"type": "generate", "generator": "echo", "prompt": "x", "bogus": 1}',
        "invalid_request",
    ),
    (
        "unknown generator",
        '{"type": "generate", "generator": "nope", "prompt": "x"}',
        "unknown_generator",
    ),
    (
        "tool.result without result",
        '{"type": "tool.result", "generation_id": "g", "call_id": "c"}',
        "invalid_request",
    ),
    ("unknown generation", '{"type": "subscribe", "generation_id": "gen_missing"}', "not_found"),
    (
        "cancel an unknown generation",
        '{"type": "cancel", "generation_id": "gen_missing"}',
        "not_found",
    ),
    (
        "oversized",
        json.dumps({"type": "generate", "generator": "echo", "prompt": "x" * 5000}),
        "payload_too_large",
    ),
]


@pytest.fixture
def small_frames_server() -> Any:
    settings = ServerSettings(ws_max_frame_bytes=4096, runtime=RuntimeSettings())
    live = LiveServer(create_app(settings)).start()
    yield live
    live.stop()


async def test_every_bad_frame_gets_an_error_and_the_socket_stays_open(
    small_frames_server: LiveServer,
) -> None:
    async with connect(ws_url_of(small_frames_server.url)) as ws:
        for name, frame, code in BAD_FRAMES:
            await ws.send(frame)
            err = await recv(ws)
            assert err["type"] == "error", name
            assert err["error"]["code"] == code, (name, err)
            assert err["error"]["message"], name
            await ws.send(json.dumps({"type": "ping", "ref": name}))
            assert await recv(ws) == {"type": "pong", "ref": name}, name
        # A refused generate echoes its ref, and the socket still streams afterwards.
        await ws.send(
            json.dumps({"type": "generate", "ref": "bad", "generator": "nope", "prompt": "x"})
        )
        err = await recv(ws)
        assert err["ref"] == "bad" and err["error"]["code"] == "unknown_generator"
        ack = await generate(ws, "ok", generator="echo", prompt="still here")
        events: list[dict[str, Any]] = []
        await until_terminal(ws, ack["generation_id"], events)
        assert check_invariants(events) and events[-1]["type"] == "generation.completed"


async def test_cancel_frame(server: LiveServer) -> None:
    async with connect(ws_url_of(server.url)) as ws:
        ack = await generate(ws, "c", generator="echo", prompt="tok ", options=LONG)
        gen_id = ack["generation_id"]
        events: list[dict[str, Any]] = []
        cancel_ack = None
        while not events or events[-1]["type"] not in TERMINAL or cancel_ack is None:
            frame = await recv(ws)
            if frame["type"] == "ack":
                cancel_ack = frame
                continue
            events.append(frame)
            if len(events) == 3:
                await ws.send(
                    json.dumps({"type": "cancel", "generation_id": gen_id, "ref": "stop"})
                )
    assert cancel_ack["op"] == "cancel" and cancel_ack["ref"] == "stop"
    assert cancel_ack["generation"]["state"] == "cancelled"
    assert events[-1]["type"] == "generation.cancelled"
    assert any(e["type"] == "block.aborted" for e in events)
    check_invariants(events, final_blocks=await final_blocks(server.url, gen_id))


async def test_abrupt_close_is_a_disconnect_for_every_generation(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server(disconnect_grace_s=0.2)
    wait_finished = watch_finished(server)
    ws = await connect(ws_url_of(server.url))
    ids = []
    for ref in ("x", "y"):
        ids.append(
            (await generate(ws, ref, generator="echo", prompt="tok ", options=LONG))[
                "generation_id"
            ]
        )
    kept = (
        await generate(
            ws,
            "z",
            generator="echo",
            prompt="tok ",
            options={"repeat": 100, "delay_ms": 2},
            on_disconnect="continue",
        )
    )["generation_id"]
    seen: dict[str, int] = {}
    while len(seen) < 3:
        frame = await recv(ws)
        seen.setdefault(frame["generation_id"], frame["seq"])
    ws.transport.abort()  # no close frame: the peer just vanishes
    for gen_id in ids:
        generation = await wait_finished(gen_id)
        assert generation["state"] == "cancelled"
        events = await full_log(server.url, gen_id)
        assert events[-1] == {
            **events[-1],
            "type": "generation.cancelled",
            "reason": "client disconnected",
        }
        check_invariants(events, final_blocks=await final_blocks(server.url, gen_id))
    # on_disconnect=continue: it runs on without anyone watching.
    assert (await wait_finished(kept))["state"] == "succeeded"
    texts = check_invariants(
        await full_log(server.url, kept), final_blocks=await final_blocks(server.url, kept)
    )
    assert "".join(texts.values()) == "tok " * 100


async def test_keepalive_ping_frames_and_protocol_pings(server: LiveServer) -> None:
    async with connect(ws_url_of(server.url)) as ws:
        await ws.send('{"type": "ping"}')
        assert await recv(ws) == {"type": "pong"}
        pong = await ws.ping()
        with anyio.fail_after(5):
            await pong


# -- the Python WebSocket client --


async def test_client_has_the_same_generation_api(server: LiveServer) -> None:
    async with WebSocketClient(server.url) as client:
        gen = await client.generate("echo", prompt="hello streaming world ", options={"repeat": 3})
        chunks = []
        async for block in gen.blocks():
            async for text in block:
                chunks.append(text)
        assert "".join(chunks) == "hello streaming world " * 3
        assert gen.state == "succeeded"
        check_invariants(gen.events, final_blocks=await final_blocks(server.url, gen.id))
        again = await client.generate("echo", prompt="more", file_id=gen.file_id)
        assert await again.text() == "more"
        file = await client.get_file(gen.file_id)
        assert [b["text"] for b in file["blocks"]] == [
            "hello streaming world ",
            "hello streaming world " * 3,
            "more",
            "more",
        ]


async def test_client_multiplexes_concurrent_generations_on_one_socket(server: LiveServer) -> None:
    results: dict[str, str] = {}
    async with WebSocketClient(server.url) as client:
        socket = client.connection

        async def run(word: str) -> None:
            gen = await client.generate(
                "echo", prompt=f"{word} ", options={"repeat": 50, "delay_ms": 1}
            )
            results[word] = await gen.text()
            check_invariants(gen.events)

        async with anyio.create_task_group() as tg:
            for word in ("one", "two", "three", "four"):
                tg.start_soon(run, word)
        assert client.connection is socket and client.reconnects == 0
    assert results == {w: f"{w} " * 50 for w in ("one", "two", "three", "four")}


async def test_client_answers_tools_over_the_socket(server: LiveServer) -> None:
    asked: list[dict[str, Any]] = []

    async def get_time(args: dict[str, Any]) -> str:
        asked.append(args)
        return "noon"

    async with WebSocketClient(server.url) as client:
        gen = await client.generate(
            "scripted",
            prompt="time?",
            tools=[GET_TIME],
            options=TOOL_SCRIPT,
            tool_handlers={"get_time": get_time},
        )
        assert await gen.text() == "[get_time result: noon]"
        assert asked == [{}]
        check_invariants(gen.events, final_blocks=await final_blocks(server.url, gen.id))


async def test_client_reconnects_mid_stream_and_sees_every_event_once(server: LiveServer) -> None:
    async with WebSocketClient(server.url, backoff_s=0.05) as client:
        gen = await client.generate("echo", prompt="tok ", options={"repeat": 300, "delay_ms": 2})
        count = 0
        async for _event in gen:
            count += 1
            if count in (10, 60):
                assert client.connection is not None
                client.connection.transport.abort()
        assert client.reconnects == 2
        assert gen.state == "succeeded"
        assert await gen.text() == "tok " * 300
    assert [e.to_dict() for e in gen.events] == await full_log(server.url, gen.id)
    check_invariants(gen.events, final_blocks=await final_blocks(server.url, gen.id))


async def test_client_attach_cancel_and_errors(server: LiveServer) -> None:
    async with WebSocketClient(server.url) as client:
        with pytest.raises(E.UnknownGeneratorError):
            await client.generate("nope", prompt="x")
        with pytest.raises(E.NotFoundError):
            async for _ in client.iter_events("gen_missing"):
                pass
        gen = await client.generate("echo", prompt="tok ", options=LONG)
        async for _event in gen:
            if len(gen.events) == 4:
                break
        watcher = await client.attach(gen.id, after=2)
        state = await client.cancel(gen.id)
        assert state["state"] == "cancelled"
        await watcher.wait()
        assert watcher.state == "cancelled"
        assert [e.seq for e in watcher.events][0] == 3
        with pytest.raises(E.GenerationCancelledError):
            await watcher.text()


@pytest.fixture
def keyed_server() -> Any:
    live = LiveServer(create_app(ServerSettings(api_keys=["key-one", "key-two"]))).start()
    yield live
    live.stop()


async def test_auth_keys_and_read_tokens_over_the_socket(keyed_server: LiveServer) -> None:
    url = ws_url_of(keyed_server.url)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url):
            pass
    # Closed before the handshake completes: uvicorn answers the upgrade with 403.
    assert refused.value.response.status_code == 403
    async with connect(url, additional_headers={"Authorization": "Bearer key-one"}) as one:
        ack = await generate(
            one, "mine", generator="echo", prompt="secret", on_disconnect="continue"
        )
        gen_id, token = ack["generation_id"], ack["read_token"]
        assert "owner" not in ack["generation"]
        events: list[dict[str, Any]] = []
        await until_terminal(one, gen_id, events)
    # Another key cannot see it (the same answer as an unknown id).
    async with connect(f"{url}?access_token=key-two") as two:
        await two.send(json.dumps({"type": "subscribe", "generation_id": gen_id, "ref": 1}))
        err = await recv(two)
        assert err["ref"] == 1 and err["error"]["code"] == "not_found"
    # The read token reaches that one generation, and cannot start another.
    async with connect(f"{url}?access_token={token}") as reader:
        await reader.send(json.dumps({"type": "subscribe", "generation_id": gen_id, "ref": 2}))
        assert (await recv(reader))["type"] == "ack"
        replay: list[dict[str, Any]] = []
        await until_terminal(reader, gen_id, replay)
        assert replay == events
        await reader.send(
            json.dumps({"type": "generate", "ref": 3, "generator": "echo", "prompt": "x"})
        )
        err = await recv(reader)
        assert err["ref"] == 3 and err["error"]["code"] == "forbidden"


async def test_a_peer_that_stops_reading_is_dropped() -> None:
    settings = ServerSettings(send_timeout_s=0.5, runtime=RuntimeSettings(disconnect_grace_s=0.2))
    server = LiveServer(create_app(settings)).start()
    finished: list[dict[str, Any]] = []
    ended = threading.Event()
    server.runtime.listeners.append(
        lambda kind, gen: (finished.append(gen.model_dump(mode="json")), ended.set())
    )
    try:
        # A raw socket with a tiny receive buffer that never reads after the handshake.
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        handshake(sock)
        send_json(sock, {"type": "generate", "generator": "echo", "prompt": "tok " * 2000, "options": {"repeat": 10000}})
        # The server drops the stuck peer; with on_disconnect=cancel its generation ends.
        assert await anyio.to_thread.run_sync(ended.wait, 30), "the stuck peer was never dropped"
        (generation,) = finished
        assert generation["state"] == "cancelled"
        sock.close()
    finally:
        server.stop()


async def test_a_peer_that_pings_without_reading_is_dropped_and_its_connection_reset() -> None:
    """The answers to a peer's own frames (pongs, acks, errors) are timed like events: a
    peer that keeps sending pings and never reads fills the socket, the pong that has to
    wait starts the watchdog, the peer is dropped after ``send_timeout_s``, and its
    connection is reset, not left to a close that would wait for it to read."""
    server = LiveServer(create_app(ServerSettings(send_timeout_s=0.5))).start()
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        handshake(sock)
        sock.settimeout(20)
        pings = 0

        def flood() -> BaseException:
            nonlocal pings
            frame = b"".join(_masked({"type": "ping", "ref": i}) for i in range(200))
            try:
                while True:  # until the server drops us (a send fails) or 20 s pass
                    sock.sendall(frame)
                    pings += 200
            except OSError as exc:
                return exc

        gone = await anyio.to_thread.run_sync(flood)
        assert isinstance(gone, (ConnectionResetError, BrokenPipeError)), f"{gone!r} after {pings} unread pings"
        assert not server.server.server_state.connections  # nothing of it is left in the server
        # The server carries on: a new connection is served.
        async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            await ws.send(json.dumps({"type": "ping", "ref": "after"}))
            assert json.loads(await ws.recv()) == {"type": "pong", "ref": "after"}
    finally:
        sock.close()
        server.stop()


def _masked(frame: dict[str, Any]) -> bytes:
    """``frame`` as one masked text frame (a zero mask: the payload as it is)."""
    payload = json.dumps(frame).encode()
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


def _read_ws_frames(
    sock: socket.socket, until: Callable[[dict[str, Any]], bool], pending: list[bytes]
) -> list[dict[str, Any]]:
    """The JSON of the server's frames, as :func:`tests.raw_ws.read_frames` reads them."""
    return [json.loads(payload) for _, payload in read_frames(sock, until, pending)]


async def test_a_peer_that_pauses_reading_gets_every_event_once_in_order(server: LiveServer) -> None:
    # Events are written through where they are appended while the socket takes them at
    # once; a peer that stops reading fills the buffers, a write has to wait, and the
    # subscription's task finishes it and sends what came after, in order.
    # (The receive buffer is set before connecting: shrunk after, below loopback's MSS, the
    # window stops opening and the stream crawls on zero-window probes.)
    sock = socket.socket()
    word = "w" * 2000 + " "  # 16 MB in all: more than the kernel's buffers hold
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
        sock.settimeout(30)
        sock.connect(("127.0.0.1", server.port))
        handshake(sock)
        send_json(sock, {"type": "generate", "ref": 1, "generator": "echo", "prompt": word * 40,
                         "options": {"repeat": 200, "delay_ms": 0.2}})
        pending: list[bytes] = []
        ack = (await anyio.to_thread.run_sync(_read_ws_frames, sock, lambda f: f.get("type") == "ack", pending))[-1]
        gen_id = ack["generation_id"]
        await anyio.sleep(1.5)  # not reading: the server's writes pile up, then have to wait
        frames = await anyio.to_thread.run_sync(
            _read_ws_frames, sock, lambda f: f.get("type") in TERMINAL and f.get("generation_id") == gen_id, pending
        )
    finally:
        sock.close()
    events = [f for f in frames if f.get("generation_id") == gen_id and "seq" in f]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "events lost, repeated or out of order"
    assert events[-1]["type"] == "generation.completed"
    text = "".join(e["text"] for e in events if e["type"] == "block.delta")
    assert text == word * 40 * 200
    assert list((await final_blocks(server.url, gen_id)).values())[-1] == text
