"""Property-based fuzzing of the WebSocket protocol: arbitrary frames get an error frame
(or a normal answer), the fuzzing connection stays open, and an innocent connection's
stream on the same server is untouched."""

from __future__ import annotations

import json
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from streaming.wire import GenerationFold
from tests.test_fuzz import hostile_text, hostile_values, json_values, render

frame_types = st.sampled_from(["generate", "tool.result", "cancel", "subscribe", "unsubscribe", "ping", "nope", 5, None])
frames = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"type": frame_types},
        optional={
            "generation_id": st.text(max_size=12) | json_values,
            "call_id": st.text(max_size=8) | json_values,
            "after": st.integers(-5, 10**12) | json_values,
            "result": json_values,
            "error": json_values,
            "generator": st.sampled_from(["echo", "scripted", "nope"]) | json_values,
            "prompt": st.text(max_size=20) | json_values,
            "options": st.fixed_dictionaries({}, optional={"repeat": st.integers(-1, 3), "delay_ms": st.integers(0, 2)})
            | json_values,
            "ref": st.text(max_size=8) | json_values,
        },
    ),
)


@pytest.fixture(scope="module")
def ws_server():
    from streaming.server.app import ServerSettings, create_app

    from streaming.runtime import RuntimeSettings
    from tests.conftest import LiveServer

    live = LiveServer(create_app(ServerSettings(runtime=RuntimeSettings(disconnect_grace_s=0.5)))).start()
    url = live.url.replace("http", "ws") + "/ws"
    text = "".join(f"calm{i} " for i in range(1500))
    result: dict[str, str] = {}

    def innocent() -> None:
        with connect(url) as ws:
            ws.send(json.dumps({"type": "generate", "generator": "echo", "prompt": text, "options": {"delay_ms": 2}}))
            fold = GenerationFold(strict=True)
            while not fold.finished:
                frame = json.loads(ws.recv(timeout=60))
                if "seq" in frame:
                    fold.apply(frame)
        result["state"] = fold.state
        result["text"] = fold.text()

    thread = threading.Thread(target=innocent)
    thread.start()
    live.ws_url = url
    yield live
    thread.join(timeout=60)
    live.stop()
    assert result.get("state") == "succeeded"
    assert result.get("text") == text


def _still_open(ws) -> None:
    """A ping frame is answered with a pong: the connection survived what came before."""
    ws.send(json.dumps({"type": "ping", "ref": "alive?"}))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        frame = json.loads(ws.recv(timeout=10))
        if frame.get("type") == "error":
            assert isinstance(frame["error"]["code"], str) and frame["error"]["message"]
            assert frame["error"]["code"] != "internal_error", frame  # the frame's fault, said so
        if frame.get("type") == "pong":
            return
    raise AssertionError("no pong")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(frames | st.text(max_size=40) | st.binary(max_size=40), min_size=1, max_size=4))
def test_arbitrary_frames(ws_server, batch) -> None:
    with connect(ws_server.ws_url) as ws:
        for frame in batch:
            if isinstance(frame, (str, bytes)):
                ws.send(frame)
            else:
                ws.send(json.dumps(frame))
        _still_open(ws)


hostile_frames = st.fixed_dictionaries(
    {"type": st.sampled_from(["generate", "tool.result", "cancel", "subscribe", "ping"]) | hostile_values},
    optional={
        "generation_id": hostile_text | hostile_values,
        "call_id": hostile_text,
        "after": hostile_values,
        "result": hostile_values,
        "generator": st.just("echo") | hostile_values,
        "prompt": hostile_text | hostile_values,
        "options": st.dictionaries(
            st.sampled_from(["x", "repeat", "delay_ms", "\udfff"]),
            hostile_values | st.sampled_from([10**9, 10**18, 2**63, 1e300, -1]),
            max_size=2,
        ),
        "ref": hostile_text | hostile_values,
        "\ud800": hostile_values,
    },
)


@settings(max_examples=120, deadline=60_000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(hostile_frames | hostile_values, min_size=1, max_size=4))
def test_hostile_frames(ws_server, batch) -> None:
    """Lone surrogates, deep nesting and huge numbers in frames: an error frame (or a normal
    answer) each, never a dropped socket (the innocent connection's stream is checked at
    the end of the module)."""
    with connect(ws_server.ws_url, max_size=None) as ws:
        for frame in batch:
            ws.send(render(frame))
        _still_open(ws)
