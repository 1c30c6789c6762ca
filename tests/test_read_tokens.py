"""A read token reaches its one generation (its events, blocks, cancel, tool results, and
the socket to follow it) and nothing else: no listing, no model list, no conversation, no
other generation. And a signed block URL with a nonsensical ``expires`` is a 401, not a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from websockets.sync.client import connect

from streaming.runtime import RuntimeSettings
from tests.conftest import LiveServer

KEY = "sk-read-token-test"


@pytest.fixture
def keyed() -> Iterator[LiveServer]:
    from streaming.server.app import ServerSettings, create_app

    settings = ServerSettings(api_keys=[KEY], runtime=RuntimeSettings(disconnect_grace_s=5))
    server = LiveServer(create_app(settings)).start()
    yield server
    server.stop()


def _bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def test_a_read_token_reaches_its_generation_and_nothing_else(keyed: LiveServer) -> None:
    with httpx.Client(base_url=keyed.url, timeout=30, headers=_bearer(KEY)) as http:
        created = http.post("/generations", json={"generator": "echo", "prompt": "one two", "on_disconnect": "continue"})
        assert created.status_code == 201
        token = created.json()["read_token"]
        gen_id = created.json()["generation"]["id"]
        file_id = created.json()["generation"]["file_id"]
        other = http.post("/generations", json={"generator": "echo", "prompt": "other"}).json()["generation"]["id"]
        http.get(f"/generations/{gen_id}/events")  # to its end

    with httpx.Client(base_url=keyed.url, timeout=30, headers=_bearer(token)) as http:
        # Its own generation: read, stream, blocks, raw content, cancel.
        snapshot = http.get(f"/generations/{gen_id}")
        assert snapshot.status_code == 200
        block_id = snapshot.json()["blocks"][0]["id"]
        events = http.get(f"/generations/{gen_id}/events")
        assert events.status_code == 200 and b"generation.completed" in events.content
        assert http.get(f"/blocks/{block_id}").status_code == 200
        assert http.get(f"/blocks/{block_id}/raw").text == "one two"
        assert http.post(f"/generations/{gen_id}/cancel").status_code == 200
        # Another generation: as if it did not exist.
        assert http.get(f"/generations/{other}").status_code == 404
        # Nothing else, whatever the route.
        for method, path in [
            ("GET", "/generators"),
            ("GET", "/v1/models"),
            ("GET", "/v1/models/echo"),
            ("GET", "/metrics"),
            ("GET", "/plugins"),
            ("GET", f"/files/{file_id}"),
            ("POST", "/generations"),
            ("POST", "/v1/chat/completions"),
            ("POST", "/v1/responses"),
            ("POST", "/api/chat"),
            ("GET", "/no/such/route"),
        ]:
            r = http.request(method, path, json={"generator": "echo", "prompt": "x"})
            assert r.status_code == 403, (path, r.status_code, r.text)
            error = r.json()["error"]
            if path.startswith("/v1/"):
                assert error["type"] == "permission_error" and error["code"] == "forbidden"  # OpenAI's shape
            else:
                assert error["code"] == "forbidden" and error["message"]
        # Public paths stay public.
        assert http.get("/healthz").status_code == 200
        assert http.get("/static/streaming-client.js").status_code == 200

    # The socket, with the token in the query as a browser sends it: it follows its
    # generation; it cannot start one.
    ws_url = keyed.url.replace("http", "ws") + f"/ws?access_token={quote(token)}"
    with connect(ws_url) as ws:
        ws.send(json.dumps({"type": "subscribe", "generation_id": gen_id, "after": 0}))
        frames = [json.loads(ws.recv(timeout=30)) for _ in range(2)]
        assert frames[0]["type"] == "ack" and frames[1]["seq"] == 1
        ws.send(json.dumps({"type": "generate", "generator": "echo", "prompt": "no", "ref": "g"}))
        while True:
            frame = json.loads(ws.recv(timeout=30))
            if frame.get("ref") == "g":
                assert frame["type"] == "error" and frame["error"]["code"] == "forbidden"
                break
    with httpx.Client(base_url=keyed.url, timeout=30, headers=_bearer(KEY)) as http:
        assert http.get("/generators").status_code == 200  # the key itself still can


def test_signed_block_urls_refuse_nonsense_expiry(keyed: LiveServer) -> None:
    with httpx.Client(base_url=keyed.url, timeout=30) as http:
        created = http.post("/generations", json={"generator": "echo", "prompt": "signed text"}, headers=_bearer(KEY))
        gen_id = created.json()["generation"]["id"]
        http.get(f"/generations/{gen_id}/events", headers=_bearer(KEY))
        block_id = created.json()["blocks"][0]["id"]
        content_url = http.get(f"/blocks/{block_id}", headers=_bearer(KEY)).json()["content_url"]
        assert http.get(content_url).text == "signed text"  # no credential: the URL is one
        signature = content_url.rpartition("signature=")[2]
        for expires in ["9" * 5000, "1" * 13, "%B2", "%EF%BC%91", "-1", "", "1e9", "0x10"]:
            r = http.get(f"/blocks/{block_id}/raw?expires={expires}&signature={signature}")
            assert r.status_code == 401, (expires[:20], r.status_code, r.text)
            assert r.json()["error"]["code"] == "unauthorized"
