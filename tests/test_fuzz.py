"""Property-based fuzzing: arbitrary bodies never get a 500, and never disturb an
innocent client's stream on the same server."""

from __future__ import annotations

import json
import threading
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streaming.wire import EventDecoder, GenerationFold

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=25,
)
small = st.integers(-3, 50) | st.text(max_size=5) | st.none() | st.floats(-1, 5, allow_nan=False)
steps = st.lists(
    st.dictionaries(st.sampled_from(["text", "sleep_ms", "tool_call", "error", "chunk", "block", "echo_tool_results"]),
                    small | json_values, max_size=3),
    max_size=3,
)
generate_bodies = st.fixed_dictionaries(
    {},
    optional={
        "generator": st.sampled_from(["echo", "scripted", "nope", "", 5]),
        "prompt": st.text(max_size=40) | small,
        "messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "bogus"]),
                                                    "content": st.text(max_size=20) | small}), max_size=3) | json_values,
        "blocks": st.lists(st.dictionaries(st.sampled_from(["text", "mime_type", "tags"]), json_values, max_size=3), max_size=3),
        "options": st.fixed_dictionaries({}, optional={"repeat": st.integers(-2, 3) | small, "delay_ms": small,
                                                        "rounds": st.lists(steps, max_size=2) | json_values,
                                                        "blocks": st.lists(st.text(max_size=15), max_size=3) | json_values}),
        "capabilities": st.lists(st.dictionaries(st.sampled_from(["name", "request_level", "functions"]),
                                                 json_values | st.sampled_from(["native", "steamship.function_calling_support"]),
                                                 max_size=3), max_size=3) | json_values,
        "tools": st.lists(json_values | st.fixed_dictionaries({"name": st.text(max_size=10), "parameters": json_values}), max_size=3),
        "file_id": st.text(max_size=10) | small,
        "on_disconnect": st.sampled_from(["cancel", "continue", "explode"]) | small,
    },
)


@pytest.fixture(scope="module")
def fuzz_server():
    from streaming.server.app import ServerSettings, create_app

    from streaming.runtime import RuntimeSettings
    from tests.conftest import LiveServer

    live = LiveServer(create_app(ServerSettings(runtime=RuntimeSettings(disconnect_grace_s=0.5, max_events_per_generation=5000)))).start()
    # An innocent client streams a long generation the whole time.
    text = "".join(f"innocent{i} " for i in range(1500))
    result: dict[str, str] = {}

    def innocent() -> None:
        with httpx.Client(base_url=live.url, timeout=60) as http:
            with http.stream("POST", "/generations", headers={"Accept": "text/event-stream"},
                             json={"generator": "echo", "prompt": text, "options": {"delay_ms": 2}}) as r:
                decoder = EventDecoder()
                fold = GenerationFold(strict=True)
                for chunk in r.iter_bytes():
                    for ev in decoder.decode(chunk):
                        fold.apply(ev)
        fold.check_complete()
        result["state"] = fold.state
        result["text"] = fold.text()

    thread = threading.Thread(target=innocent)
    thread.start()
    yield live
    thread.join(timeout=60)
    live.stop()
    assert result.get("state") == "succeeded"
    assert result.get("text") == text


def _check(r: httpx.Response) -> None:
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        err = r.json()["error"]
        assert isinstance(err["code"], str) and isinstance(err["message"], str)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=generate_bodies | json_values)
def test_generate_bodies(fuzz_server, body) -> None:
    with httpx.Client(base_url=fuzz_server.url, timeout=30) as http:
        r = http.post("/generations", content=json.dumps(body))
        _check(r)
        if r.status_code == 201:
            gen_id = r.json()["generation"]["id"]
            _check(http.post(f"/generations/{gen_id}/cancel"))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=json_values, raw=st.binary(max_size=60), cursor=st.text(max_size=12))
def test_other_routes(fuzz_server, body, raw, cursor) -> None:
    with httpx.Client(base_url=fuzz_server.url, timeout=30) as http:
        gen_id = http.post("/generations", json={"generator": "echo", "prompt": "x"}).json()["generation"]["id"]
        _check(http.post(f"/generations/{gen_id}/tool-results", content=json.dumps(body)))
        _check(http.post(f"/generations/{gen_id}/tool-results", content=raw))
        _check(http.post("/generations", content=raw))
        _check(http.get(f"/generations/{gen_id}/events", params={"after": cursor}))
        header = "".join(c for c in cursor if 32 < ord(c) < 127)
        _check(http.get(f"/generations/{gen_id}/events", headers={"Last-Event-ID": header}))
        _check(http.get(f"/blocks/{quote(cursor, safe='') or 'x'}"))
