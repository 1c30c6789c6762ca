"""Routes through the ASGI app itself (Starlette's TestClient runs the lifespan)."""

from __future__ import annotations

from starlette.testclient import TestClient
from streaming.server.app import ServerSettings, create_app

from streaming.events import Event
from tests.invariants import check_invariants


def test_create_read_stream_and_errors() -> None:
    with TestClient(create_app(ServerSettings())) as http:
        r = http.post("/generations", json={"generator": "echo", "prompt": "one two three"})
        assert r.status_code == 201
        body = r.json()
        gen_id = body["generation"]["id"]
        assert r.headers["location"] == f"/generations/{gen_id}"
        assert body["events_url"] == f"/generations/{gen_id}/events"
        assert body["generation"]["state"] == "running"
        assert [b["stream_state"] for b in body["blocks"]] == ["started"]
        with http.stream("GET", body["events_url"]) as stream:
            text = "".join(stream.iter_text())
        events = [
            Event.from_json(line[len("data: "):])
            for line in text.splitlines()
            if line.startswith("data: ")
        ]
        texts = check_invariants(events)
        assert list(texts.values()) == ["one two three"]
        done = http.get(f"/generations/{gen_id}").json()
        assert done["generation"]["state"] == "succeeded"
        assert done["blocks"][0]["text"] == "one two three"
        assert done["blocks"][0]["stream_state"] == "complete"
        block_id = done["blocks"][0]["id"]
        assert http.get(f"/blocks/{block_id}").json()["request_id"] == gen_id
        assert http.get(f"/blocks/{block_id}/raw").text == "one two three"
        file = http.get(f"/files/{done['generation']['file_id']}").json()
        assert [b["text"] for b in file["blocks"]] == ["one two three", "one two three"]
        r = http.post(f"/generations/{gen_id}/cancel")
        assert r.status_code == 200 and r.json()["generation"]["state"] == "succeeded"
        r = http.post("/generations", content=b"nope")
        assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_request"
        r = http.get("/generations")
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
