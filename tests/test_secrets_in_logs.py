"""No secret in the logs: a real ``streaming serve`` with an API key and a Redis store that
needs a password, used the way a browser does (``?access_token=`` on SSE and WebSocket, a
read token, a signed block URL), logs at ``info`` in text and in JSON; the whole log is
then searched for every secret."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from streaming.server.logs import redact
from websockets.exceptions import InvalidHandshake
from websockets.sync.client import connect

from tests.redis_server import RedisServer
from tests.server_process import ServerProcess

KEY = "sk-live-4f9a1c-never-in-logs"
PASSWORD = "redis-pw-7d3e-never-in-logs"


@pytest.fixture(scope="module")
def redis_with_password(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), password=PASSWORD).start()
    yield server
    server.stop()


def _drive(url: str) -> list[str]:
    """Every way a client sends a credential in a URL; the secrets it used."""
    secrets = [KEY, PASSWORD]
    auth = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=url, timeout=30) as http:
        created = http.post("/generations", json={"generator": "echo", "prompt": "secret ways", "on_disconnect": "continue"},
                            headers=auth).json()
        gen_id, token = created["generation"]["id"], created["read_token"]
        secrets.append(token.rpartition(".")[2])  # a read token's MAC
        for credential in (KEY, token):  # EventSource: the credential in the query
            r = http.get(f"/generations/{gen_id}/events", params={"access_token": credential})
            assert r.status_code == 200 and b"generation.completed" in r.content
        r = http.get(f"/generations/{gen_id}", params={"access_token": "sk-wrong-key-also-secret"})
        assert r.status_code == 401
        secrets.append("sk-wrong-key-also-secret")
        block_id = created["blocks"][0]["id"]
        content_url = http.get(f"/blocks/{block_id}", headers=auth).json()["content_url"]
        assert http.get(content_url).text == "secret ways"
        secrets.append(content_url.rpartition("signature=")[2])
    ws_base = url.replace("http", "ws") + "/ws?access_token="
    with connect(ws_base + quote(KEY)) as ws:  # WebSocket: the key in the query
        ws.send(json.dumps({"type": "generate", "generator": "echo", "prompt": "over the socket"}))
        while json.loads(ws.recv(timeout=30)).get("type") != "generation.completed":
            pass
    with connect(ws_base + quote(token)) as ws:
        ws.send(json.dumps({"type": "subscribe", "generation_id": gen_id}))
        while json.loads(ws.recv(timeout=30)).get("type") != "generation.completed":
            pass
    with pytest.raises(InvalidHandshake):  # refused (403 to the handshake), still logged by uvicorn
        with connect(ws_base + "sk-refused-socket-secret") as ws:
            ws.recv(timeout=10)
    secrets.append("sk-refused-socket-secret")
    return secrets


@pytest.mark.parametrize(("fmt", "level"), [("text", "info"), ("json", "info"), ("text", "debug"), ("json", "debug")])
def test_no_secret_reaches_the_log(tmp_path: Path, redis_with_password: RedisServer, fmt: str, level: str) -> None:
    store = f"redis://:{PASSWORD}@127.0.0.1:{redis_with_password.port}/0?prefix=logs-{fmt}-{level}:"
    log = tmp_path / "serve.log"
    server = ServerProcess(log, "--api-key", KEY, "--log-level", level, "--log-format", fmt, store=store).start()
    try:
        secrets = _drive(server.url)
    finally:
        server.stop()
    text = log.read_text()
    # The log did record the requests (access lines with their redacted query)...
    assert "/generations/" in text and "access_token=***" in text and "signature=***" in text, text[-3000:]
    assert "WebSocket /ws?access_token=***" in text, text[-3000:]
    if fmt == "json":
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert any(line["logger"] == "uvicorn.access" for line in lines)
    # ...and no secret, anywhere.
    for secret in secrets:
        assert secret not in text, f"{secret[:12]}... is in the log:\n{text[-3000:]}"


def test_what_redact_hides() -> None:
    assert redact('127.0.0.1:5 - "GET /x?after=3&access_token=sk-1 HTTP/1.1" 200') == (
        '127.0.0.1:5 - "GET /x?after=3&access_token=*** HTTP/1.1" 200'
    )
    assert redact("/b/raw?expires=1&signature=abc") == "/b/raw?expires=1&signature=***"
    assert redact("/p?api_key=a&token=b&X-Amz-Signature=c&client_secret=d&password=e") == (
        "/p?api_key=***&token=***&X-Amz-Signature=***&client_secret=***&password=***"
    )
    assert redact("redis://:pw@host:6379/0 and rediss://user:pw2@h/1") == "redis://:***@host:6379/0 and rediss://user:***@h/1"
    assert redact("headers: [(b'authorization', b'BEARER sk-1.2_3')]") == "headers: [(b'authorization', b'BEARER ***')]"
    # What is not a secret stays readable.
    assert redact("/generations/gen_1/events?after=12") == "/generations/gen_1/events?after=12"
    assert redact("http://127.0.0.1:8000/x@y") == "http://127.0.0.1:8000/x@y"


def test_a_store_url_password_is_never_printed(tmp_path: Path) -> None:
    """The startup line, and the one-line refusal of a store URL the store cannot take."""
    import subprocess
    import sys

    from tests.server_process import ROOT

    for store in (f"redis://:{PASSWORD}@127.0.0.1:1/0?ttl=not-a-number", f"redis://user:{PASSWORD}@127.0.0.1:1/0?retry=0.2"):
        out = subprocess.run(
            [sys.executable, "-m", "streaming.server.cli", "serve", "--port", "0", "--store", store],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 2
        said = out.stdout + out.stderr
        assert "redis" in said and PASSWORD not in said, said
