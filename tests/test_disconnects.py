"""Routes that answer once but wait for a generation first notice a client that leaves
(a real uvicorn, a raw socket that sends its request and closes): the generation is
cancelled per its ``on_disconnect``, not run to the end for nobody."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import httpx
import pytest
from streaming.server.app import create_app
from streaming.server.settings import ServerSettings

from streaming.runtime import RuntimeSettings
from tests.conftest import LiveServer

WAIT_S = 20.0  # a bound on polling for something that should happen soon (never a timing check)
#: a script that writes, then sleeps far longer than any wait here
SLOW = [[{"text": "first "}, {"sleep_ms": 60_000}, {"text": "never"}]]


def running(server: Any) -> int:
    count: int = httpx.get(f"{server.url}/healthz").json()["running"]
    return count


def finished(server: Any, outcome: str) -> int:
    """Generations of the server's runtime that ended with ``outcome``."""
    count: int = server.runtime.metrics.generations.get(outcome, 0)
    return count


def wait_until(check: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {WAIT_S} s for {what}")
        time.sleep(0.02)


def post_and_leave(server: Any, path: str, body: dict[str, Any]) -> None:
    """Send the request, wait for its generation to run, close the socket; then wait for
    the generation to end (it sleeps for a minute unless cancelled)."""
    data = json.dumps(body).encode()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode() + data
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S) as sock:
        sock.sendall(request)
        wait_until(lambda: running(server) == 1, "the generation to start")
    wait_until(lambda: running(server) == 0, "the generation to end")
    assert finished(server, "cancelled") == 1
    assert finished(server, "succeeded") == 0


@pytest.fixture
def server() -> Any:
    settings = ServerSettings(
        plugins={"slow": "streaming.generators.scripted:ScriptedGenerator"},
        runtime=RuntimeSettings(disconnect_grace_s=0.05),
    )
    live = LiveServer(create_app(settings)).start()
    yield live
    live.stop()


def test_non_streaming_chat_completions(server: Any) -> None:
    post_and_leave(server, "/v1/chat/completions", {
        "model": "scripted", "messages": [{"role": "user", "content": "hi"}], "options": {"rounds": SLOW},
    })


def test_a_plugin_generate_call(server: Any) -> None:
    post_and_leave(server, "/plugins/slow/generate", {"data": {"blocks": [{"text": "hi"}], "options": {"rounds": SLOW}}})
