"""Text is valid Unicode at the door: every JSON body (native, /v1, the dialects, the
plugins) and every WebSocket frame holding a lone surrogate, nested too deep, or with a
number no JSON reader can hold is refused with a 400 and a code before anything is stored
or run, on every store; and what is already stored (a lone surrogate written by a plugin,
or by an older version) still reads back."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from streaming import InvocableResponse, StreamingGenerator
from streaming.errors import MalformedRequestError
from streaming.model import Block, File, StreamState, Tag
from streaming.plugin import BlockTypePluginOutput
from streaming.runtime import RuntimeSettings
from streaming.textcheck import loads
from streaming.wire import EventDecoder, GenerationFold
from tests.conftest import LiveServer

DEEP_ARRAY = "[" * 100_000 + "]" * 100_000
DEEP_OBJECT = '{"a":' * 100_000 + "1" + "}" * 100_000

#: a JSON value (as text) that the door refuses, and the code it answers with
HOSTILE = {
    "lone high surrogate": ('"a\\ud800b"', "invalid_text"),
    "lone low surrogate": ('"\\udc00"', "invalid_text"),
    "reversed pair": ('"\\udc00\\ud800"', "invalid_text"),
    "surrogate in a key": ('{"\\udbff": "x"}', "invalid_text"),
    "surrogate deep in a list": ('[1, {"k": ["ok", "\\ud812"]}]', "invalid_text"),
    "100,000 nested arrays": (DEEP_ARRAY, "too_deep"),
    "100,000 nested objects": (DEEP_OBJECT, "too_deep"),
    "65 nested arrays": ("[" * 65 + "]" * 65, "too_deep"),
    "NaN": ("NaN", "malformed_request"),
    "-Infinity": ("-Infinity", "malformed_request"),
    "1e309": ("1e309", "invalid_number"),
    "5,000-digit integer": ("9" * 5000, "invalid_number"),
}

#: every route that reads a JSON body: (path, body with @@ where a value goes)
ROUTES = {
    "generate: prompt": ("/generations", '{"generator": "echo", "prompt": @@}'),
    "generate: tool description": (
        "/generations",
        '{"generator": "echo", "prompt": "hi", "tools": [{"name": "t", "description": @@, "parameters": {}}]}',
    ),
    "generate: capability": (
        "/generations",
        '{"generator": "echo", "prompt": "hi", "capabilities": [{"name": @@, "request_level": "native"}]}',
    ),
    "generate: tag value": (
        "/generations",
        '{"generator": "echo", "blocks": [{"text": "hi", "tags": [{"kind": "k", "name": "n", "value": {"v": @@}}]}]}',
    ),
    "generate: options": ("/generations", '{"generator": "echo", "prompt": "hi", "options": {"x": @@}}'),
    "/v1/chat/completions": ("/v1/chat/completions", '{"model": "echo", "messages": [{"role": "user", "content": @@}]}'),
    "/v1/responses": ("/v1/responses", '{"model": "echo", "input": @@}'),
    "/v1/messages": ("/v1/messages", '{"model": "echo", "max_tokens": 20, "messages": [{"role": "user", "content": @@}]}'),
    "/api/chat": (
        "/api/chat",
        '{"id": "c1", "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": @@}]}]}',
    ),
    "plugin importer": ("/plugins/file-importer/import", '{"value": @@}'),
}


def _code(r: httpx.Response) -> str:
    """The error code, whatever the dialect's shape."""
    body = r.json()
    error = body.get("error") or {}
    return str(error.get("code") or error.get("type") or body.get("type"))


@pytest.fixture(params=["memory", "sqlite", "redis"])
def live(request: pytest.FixtureRequest, tmp_path) -> Iterator[LiveServer]:
    from streaming.server.app import ServerSettings, create_app

    url = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/door.db"}.get(request.param)
    if url is None:
        url = request.getfixturevalue("redis_server").url + f"?prefix=door{id(request)}:"
    settings = ServerSettings(
        store_url=url, generators={"lone": "tests.test_door:LoneSurrogate"}, runtime=RuntimeSettings(disconnect_grace_s=0.5)
    )
    server = LiveServer(create_app(settings)).start()
    yield server
    server.stop()


def _settle(live: LiveServer) -> None:
    """Until the generations that ran have ended (their stream may end a moment sooner)."""
    deadline = time.monotonic() + 30
    while live.runtime.stats().running and time.monotonic() < deadline:
        time.sleep(0.02)


def test_every_json_route_refuses_hostile_text_before_anything_runs(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url, timeout=30) as http:
        done = http.post("/generations", json={"generator": "echo", "prompt": "x"}, headers={"Accept": "text/event-stream"})
        gen_id = done.headers["location"].rsplit("/", 1)[1]
        routes = {**ROUTES, "tool results": (f"/generations/{gen_id}/tool-results", '{"call_id": "c", "result": @@}')}
        before = live.runtime.stats()
        for route, (path, template) in routes.items():
            for name, (value, code) in HOSTILE.items():
                r = http.post(path, content=template.replace("@@", value), headers={"content-type": "application/json"})
                assert r.status_code == 400, (route, name, r.status_code, r.text[:300])
                if route in ("/v1/messages",):
                    assert code in r.text or "invalid_request_error" in r.text, (route, name, r.text[:300])
                else:
                    assert _code(r) == code, (route, name, r.text[:300])
        after = live.runtime.stats()
        # Nothing was started: no generation runs, none more has finished.
        assert after.running == 0 and after.finished == before.finished
        # Valid text of every plane goes through, a surrogate pair included.
        text = "héllo 😀 \u4e16\u754c"
        r = http.post("/generations", content=json.dumps({"generator": "echo", "prompt": text}),
                      headers={"Accept": "text/event-stream"})
        fold = GenerationFold(strict=True)
        for ev in EventDecoder().decode(r.content):
            fold.apply(ev)
        assert (fold.state, fold.text()) == ("succeeded", text)
        assert json.loads('"\\ud83d\\ude00"') in fold.text()


def test_websocket_frames_go_through_the_same_door(live: LiveServer) -> None:
    url = live.url.replace("http", "ws") + "/ws"
    with connect(url, max_size=None) as ws:
        for name, (value, code) in HOSTILE.items():
            for frame in (
                '{"type": "generate", "generator": "echo", "ref": "r", "prompt": @@}',
                '{"type": "subscribe", "generation_id": @@}',
                "@@",
            ):
                ws.send(frame.replace("@@", value))
                answer = json.loads(ws.recv(timeout=30))
                assert answer["type"] == "error", (name, answer)
                assert answer["error"]["code"] == code, (name, frame[:30], answer)
        # The socket is still open and serves a generation.
        ws.send(json.dumps({"type": "generate", "generator": "echo", "prompt": "still here", "ref": 1}))
        fold = GenerationFold(strict=True)
        while not fold.finished:
            frame = json.loads(ws.recv(timeout=30))
            if "seq" in frame:
                fold.apply(frame)
        assert fold.text() == "still here"
    _settle(live)
    stats = live.runtime.stats()  # the refused frames started nothing: one generation ran
    assert stats.running == 0 and sum(stats.finished.values()) == 1


def test_the_depth_limit_is_a_setting() -> None:
    from streaming.server.app import ServerSettings, create_app

    server = LiveServer(create_app(ServerSettings(max_json_depth=3))).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            ok = {"generator": "echo", "prompt": "x", "options": {"a": [1]}}  # 3 levels
            assert http.post("/generations", json=ok).status_code == 201
            deep = {"generator": "echo", "prompt": "x", "options": {"a": [[1]]}}
            r = http.post("/generations", json=deep)
            assert (r.status_code, _code(r)) == (400, "too_deep")
            # Brackets inside strings are text, not nesting.
            r = http.post("/generations", json={"generator": "echo", "prompt": "[[[[[[{{{{ \\\" [[[["})
            assert r.status_code == 201
    finally:
        server.stop()


def test_loads_at_the_edges() -> None:
    assert loads(b'\xef\xbb\xbf{"a": "\\ud83d\\ude00"}') == {"a": "😀"}  # a BOM, a pair
    assert loads('"[[[[\\"]]"', max_depth=1) == '[[[["]]'
    assert loads("[" * 64 + "]" * 64) is not None
    assert loads("-0") == 0 and loads("-0.0") == 0.0 and loads("1e308") == 1e308
    assert loads(str(10**400)) == 10**400  # exact and in range: fields bound their own values
    for bad, code in [
        (b'"\xed\xa0\x80"', "malformed_request"),  # a surrogate encoded in UTF-8 is not UTF-8
        (b"\xff", "malformed_request"),
        ('"\\', "malformed_request"),
        ('"' + '\\"' * 50_000, "malformed_request"),  # unterminated, many escapes: still linear
        ("[" * 65, "too_deep"),
        ("Infinity", "malformed_request"),
    ]:
        with pytest.raises(MalformedRequestError) as info:
            loads(bad)
        assert info.value.code == code, bad[:20]


# -- what is already stored reads back --


class LoneSurrogate(StreamingGenerator):
    """Writes text holding a lone surrogate, as a careless plugin might."""

    def determine_output_block_types(self, request: Any) -> InvocableResponse[BlockTypePluginOutput]:
        return InvocableResponse(data=BlockTypePluginOutput(block_types_to_create=["text/plain"]))

    async def run(self, request: Any) -> AsyncIterator[str]:
        yield "before \ud800 "
        yield "after"


def _on_loop(live: LiveServer, coro: Any) -> Any:
    return asyncio.run_coroutine_threadsafe(coro, live.app.state.loop).result(timeout=30)


def _utf8_json(r: httpx.Response) -> Any:
    """The answer's JSON, which must be valid UTF-8 (a strict client reads it)."""
    assert r.status_code == 200, (r.request.url, r.status_code, r.text[:300])
    return json.loads(r.content.decode("utf-8", "strict"))


def test_stored_lone_surrogates_still_read_back(make_server) -> None:
    """A generation, its block, its conversation (a tag value) and its log holding lone
    surrogates, written straight through the store API as an older version could have:
    every read answers, the surrogate as its JSON escape (raw bytes: U+FFFD). The memory
    store: sqlite and redis refuse to store one (their JSON encoder does)."""
    from streaming.events import Event
    from streaming.model import Generation, GenerationState

    live = make_server()
    store = live.runtime.store
    tag = Tag(kind="k", name="n\udfff", value={"v": "\ud800", "\udc00": 1})
    block = Block(file_id="file_lone", index=0, text="t\ud800", tags=[tag], stream_state=StreamState.COMPLETE,
                  request_id="gen_lone")
    generation = Generation(id="gen_lone", state=GenerationState.SUCCEEDED, file_id="file_lone", generator="echo",
                            output_block_ids=[block.id], last_seq=4, finished_at=1.0)
    _on_loop(live, store.put_blocks([block]))
    _on_loop(live, store.put_file(File(id="file_lone", blocks=[block], tags=[tag])))
    _on_loop(live, store.put_generation(generation))
    log = [
        Event("generation.started", 1, "gen_lone", {"generation": generation.public()}),
        Event("block.created", 2, "gen_lone", {"block": block.model_dump(mode="python")}),
        Event.delta(3, "gen_lone", block.id, 0, "t\ud800"),
        Event("generation.completed", 4, "gen_lone", {"usage": []}),
    ]
    _on_loop(live, store.append_events("gen_lone", log))
    with httpx.Client(base_url=live.url, timeout=30) as http:
        conversation = _utf8_json(http.get("/files/file_lone"))
        assert conversation["tags"][0]["value"]["v"] == "\ud800"  # (a key pydantic's JSON mode mangles)
        assert conversation["blocks"][0]["text"] == "t\ud800"
        assert _utf8_json(http.get(f"/blocks/{block.id}"))["tags"][0]["name"] == "n\udfff"
        assert http.get(f"/blocks/{block.id}/raw").content == "t\ufffd".encode()
        assert _utf8_json(http.get("/generations/gen_lone"))["blocks"][0]["text"] == "t\ud800"
        replay = http.get("/generations/gen_lone/events")
        assert replay.status_code == 200
        events = list(EventDecoder().decode(replay.content))
        assert [e.seq for e in events] == [1, 2, 3, 4] and events[2].data["text"] == "t\ud800"
    # Over the socket: every frame goes out, and the socket stays.
    with connect(live.url.replace("http", "ws") + "/ws") as ws:
        ws.send(json.dumps({"type": "subscribe", "generation_id": "gen_lone"}))
        frames = [json.loads(ws.recv(timeout=30)) for _ in range(5)]
        assert frames[0]["type"] == "ack" and frames[3]["text"] == "t\ud800"
        assert frames[4]["type"] == "generation.completed"
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.recv(timeout=30))["type"] == "pong"


def test_a_plugin_that_writes_a_lone_surrogate_is_read_everywhere(live: LiveServer) -> None:
    """Whatever the runtime makes of it, the generation ends with its terminal event, every
    read of it answers valid UTF-8 JSON saying the same text, on every store and route."""
    with httpx.Client(base_url=live.url, timeout=30) as http:
        r = http.post("/generations", json={"generator": "lone", "prompt": "x"}, headers={"Accept": "text/event-stream"})
        assert r.status_code == 201
        r.content.decode("utf-8", "strict")
        fold = GenerationFold(strict=True)
        for ev in EventDecoder().decode(r.content):
            fold.apply(ev)
        assert fold.state == "succeeded" and fold.text().startswith("before ") and fold.text().endswith(" after")
        text, gen_id = fold.text(), fold.generation_id
        _settle(live)
        snapshot = _utf8_json(http.get(f"/generations/{gen_id}"))
        assert snapshot["blocks"][0]["text"] == text
        assert _utf8_json(http.get(f"/blocks/{snapshot['blocks'][0]['id']}"))["text"] == text
        replay = http.get(f"/generations/{gen_id}/events")
        assert "".join(e.data["text"] for e in EventDecoder().decode(replay.content) if e.type == "block.delta") == text
        completion = _utf8_json(http.post("/v1/chat/completions", json={"model": "lone", "messages": [{"role": "user", "content": "x"}]}))
        assert completion["choices"][0]["message"]["content"] == text
        streamed = http.post("/v1/chat/completions", json={"model": "lone", "stream": True, "messages": [{"role": "user", "content": "x"}]})
        assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
    with connect(live.url.replace("http", "ws") + "/ws") as ws:
        ws.send(json.dumps({"type": "generate", "generator": "lone", "prompt": "x"}))
        fold = GenerationFold(strict=True)
        while not fold.finished:
            frame = json.loads(ws.recv(timeout=30))
            if "seq" in frame:
                fold.apply(frame)
        assert fold.text() == text
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.recv(timeout=30))["type"] == "pong"


# -- other edges over the wire --


def test_huge_cursors_are_past_the_end_on_every_store(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url, timeout=30) as http:
        done = http.post("/generations", json={"generator": "echo", "prompt": "a b"}, headers={"Accept": "text/event-stream"})
        gen_id = done.headers["location"].rsplit("/", 1)[1]
        for after in (str(2**63), str(10**30), "9" * 40):
            r = http.get(f"/generations/{gen_id}/events", params={"after": after})
            assert (r.status_code, r.content) == (200, b""), after
            r = http.get(f"/generations/{gen_id}/events", headers={"Last-Event-ID": after})
            assert (r.status_code, r.content) == (200, b""), after
        r = http.get(f"/generations/{gen_id}/events", params={"after": "9" * 5000})
        assert (r.status_code, _code(r)) == (422, "invalid_request")
    with connect(live.url.replace("http", "ws") + "/ws") as ws:
        ws.send(f'{{"type": "subscribe", "generation_id": "{gen_id}", "after": {10**400}}}')
        assert json.loads(ws.recv(timeout=30))["type"] == "ack"
        ws.send('{"type": "ping"}')
        assert json.loads(ws.recv(timeout=30))["type"] == "pong"  # nothing after the end


@pytest.mark.parametrize(
    ("accept", "streams"),
    [
        ("text/event-stream", True),
        ("text/event-stream, application/json", True),
        ("application/json;q=0.5, text/event-stream", True),
        ("text/event-stream;q=0.2, */*;q=0.1", True),
        ("text/event-stream;q=0, application/json", False),
        ("text/event-stream; q=0", False),
        ("text/event-stream;q=0.5, application/json", False),
        ("text/event-stream;q=0.5, application/*;q=0.9", False),
        ("text/event-stream;q=nonsense", False),
        ("*/*", False),
        ("", False),
    ],
)
def test_accept_is_read_by_q_value(server: LiveServer, accept: str, streams: bool) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        r = http.post("/generations", json={"generator": "echo", "prompt": "q"}, headers={"Accept": accept})
        assert r.status_code == 201
        kind = r.headers["content-type"]
        assert kind.startswith("text/event-stream" if streams else "application/json"), (accept, kind)


def test_static_names_the_file_system_cannot_take_are_404(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for name in ("a" * 5000, "b" * 300 + ".js", "%00x.js", "x%00.js", "..%2fsecret"):
            r = http.get(f"/static/{name}")
            assert r.status_code == 404, (name[:20], r.status_code)
            assert _code(r) == "not_found"
        assert http.get("/static/streaming-client.js").status_code == 200
