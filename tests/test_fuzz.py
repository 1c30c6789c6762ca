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


# -- hostile text: lone surrogates, deep nesting, numbers no JSON reader holds --

#: placeholders a rendered body replaces with a raw JSON literal (json.dumps cannot write them)
RAW_LITERALS = {
    "__nan__": "NaN",
    "__inf__": "-Infinity",
    "__1e309__": "1e309",
    "__neg_1e400__": "-1e400",
    "__neg_zero__": "-0",
    "__5000_digits__": "9" * 5000,
    "__deep_63__": "[" * 63 + "]" * 63,
    "__deep_65__": "[" * 65 + "]" * 65,
    "__deep_objects__": '{"a":' * 2000 + "1" + "}" * 2000,
    "__deep_100000__": "[" * 100_000 + "]" * 100_000,
}
#: text holding lone surrogates among ordinary characters (json.dumps writes them as \\udXXX)
hostile_text = st.text(st.characters(categories=["Cs"]) | st.characters(), min_size=1, max_size=12)
hostile_leaves = (
    hostile_text
    | st.sampled_from(sorted(RAW_LITERALS))
    | st.sampled_from([10**400, -(10**400), 2**63, -0.0, 1e308, 5e-324])
)
hostile_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=10) | hostile_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(hostile_text | st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def render(value: object) -> str:
    """``value`` as JSON text, its placeholders replaced by their raw literals."""
    text = json.dumps(value)
    for name, literal in RAW_LITERALS.items():
        text = text.replace(f'"{name}"', literal)
    return text


hostile_generate_bodies = st.fixed_dictionaries(
    {"generator": st.sampled_from(["echo", "scripted"])},
    optional={
        "prompt": hostile_text | hostile_values,
        "messages": st.lists(st.fixed_dictionaries({"role": st.just("user"), "content": hostile_text | hostile_values}), max_size=2),
        "blocks": st.lists(st.fixed_dictionaries({"text": hostile_text, "tags": st.lists(hostile_values, max_size=2)}), max_size=2),
        # ``repeat`` and ``delay_ms`` too: whatever their value, a 422 or a generation that
        # ends (the innocent stream beside it must not notice).
        "options": st.dictionaries(
            st.sampled_from(["x", "repeat", "delay_ms", "rounds", "\ud800"]),
            hostile_values | st.sampled_from([10**9, 10**18, 2**63, 1e300, -1, 0.5]),
            max_size=2,
        ),
        "capabilities": st.lists(st.fixed_dictionaries({"name": hostile_text, "request_level": hostile_values}), max_size=2),
        "tools": st.lists(st.fixed_dictionaries({"name": hostile_text, "description": hostile_text, "parameters": hostile_values}), max_size=2),
        "file_id": hostile_values,
        "on_disconnect": hostile_values,
    },
)

#: every JSON route, with where a hostile value goes
HOSTILE_ROUTES = {
    "/v1/chat/completions": lambda v: {"model": "echo", "messages": [{"role": "user", "content": v}]},
    "/v1/responses": lambda v: {"model": "echo", "input": v},
    "/v1/messages": lambda v: {"model": "echo", "max_tokens": 16, "messages": [{"role": "user", "content": v}]},
    "/api/chat": lambda v: {"id": "fuzz", "messages": [{"id": "m", "role": "user", "parts": [{"type": "text", "text": v}]}]},
    "/plugins/file-importer/import": lambda v: {"value": v},
    "/plugins/hash-embedder/tag": lambda v: {"data": {"blocks": [{"text": v}]}},
}


@settings(max_examples=150, deadline=60_000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=hostile_generate_bodies)
def test_hostile_generate_bodies(fuzz_server, body) -> None:
    with httpx.Client(base_url=fuzz_server.url, timeout=30) as http:
        r = http.post("/generations", content=render(body))
        _check(r)
        if r.status_code == 201:
            gen_id = r.json()["generation"]["id"]
            _check(http.get(f"/generations/{gen_id}"))
            _check(http.post(f"/generations/{gen_id}/cancel"))


@settings(max_examples=120, deadline=60_000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=hostile_values, route=st.sampled_from(sorted(HOSTILE_ROUTES)), whole=st.booleans())
def test_hostile_bodies_on_every_json_route(fuzz_server, value, route, whole) -> None:
    """Native and dialect routes alike: never a 500 (each in its own error shape)."""
    body = render(value) if whole else render(HOSTILE_ROUTES[route](value))
    with httpx.Client(base_url=fuzz_server.url, timeout=30) as http:
        r = http.post(route, content=body, headers={"content-type": "application/json"})
        assert r.status_code < 500, (route, r.status_code, r.text[:300])
        gen_id = r.headers.get("x-generation-id")
        if gen_id:
            http.post(f"/generations/{gen_id}/cancel")
        gen = http.post("/generations", json={"generator": "echo", "prompt": "x"}).json()["generation"]["id"]
        _check(http.post(f"/generations/{gen}/tool-results", content=render({"call_id": "c", "result": value})))
