"""Direct body writes (server/direct.py): under uvicorn's httptools protocol, as
``streaming serve`` runs it, an SSE event goes straight to the transport, framed exactly as
uvicorn frames a chunk; anything else goes through ASGI.

Raw HTTP over a real socket (no client library to hide the framing): the chunked body is
parsed by hand, so a wrong chunk size or a stray byte fails the test.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest
from streaming.server.direct import SERVER_SEND, DirectBody, ServerSend, direct_body

from streaming.wire import EventDecoder, GenerationFold
from tests.raw_ws import FakeTransport, record_writes

pytestmark = pytest.mark.anyio


def request(port: int, head: str, body: bytes = b"") -> bytes:
    """One HTTP/1.1 request with ``Connection: close``; the raw response."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def dechunk(raw: bytes) -> tuple[bytes, list[bytes]]:
    """The head and the chunks of a chunked response, checked strictly."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    chunks = []
    while True:
        size_line, sep, rest = rest.partition(b"\r\n")
        assert sep, "a chunk size line without its CRLF"
        size = int(size_line, 16)
        if size == 0:
            assert rest == b"\r\n", "bytes after the last chunk"
            return head, chunks
        chunk, crlf, rest = rest[:size], rest[size : size + 2], rest[size + 2 :]
        assert len(chunk) == size and crlf == b"\r\n", "a chunk whose size line lies"
        chunks.append(chunk)


def post_generation(port: int, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    return request(
        port,
        "POST /generations HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n",
        data,
    )


def test_paced_events_are_framed_as_uvicorn_frames_them(make_server, monkeypatch) -> None:
    wrote = record_writes(monkeypatch, DirectBody, "write")
    live = make_server()
    raw = post_generation(live.port, {"generator": "echo", "prompt": "tok ", "options": {"repeat": 30, "delay_ms": 5}})
    head, chunks = dechunk(raw)
    assert head.startswith(b"HTTP/1.1 201")
    decoder = EventDecoder()
    events = [ev for chunk in chunks for ev in decoder.decode(chunk)] + decoder.flush()
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    fold = GenerationFold(strict=True).apply_all(events)
    fold.check_complete()
    assert fold.text() == "tok " * 30
    # Paced: the deltas came one event per chunk (each written on its own).
    assert sum(1 for c in chunks if c.startswith(b"id: ") and b"block.delta" in c) >= 25
    # ... and went straight to the transport (the bytes on the wire are what it wrote).
    assert len(wrote) >= 25 and set(wrote) <= set(chunks)


def test_a_head_request_gets_no_body(make_server) -> None:
    live = make_server()
    raw = post_generation(live.port, {"generator": "echo", "prompt": "x ", "options": {"repeat": 2}})
    gen_id = next(json.loads(line[6:])["generation_id"] for line in raw.split(b"\n") if line.startswith(b"data: "))
    out = request(live.port, f"HEAD /generations/{gen_id}/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == b""


class FakeCycle(FakeTransport):
    """What :class:`DirectBody` reads of uvicorn's request cycle."""

    def __init__(self) -> None:
        super().__init__()
        self.disconnected = False
        self.response_started = True
        self.response_complete = False
        self.chunked_encoding: bool | None = True
        self.flow = type("Flow", (), {"write_paused": False})()


def test_a_direct_write_declines_whenever_uvicorn_would_not_write_now() -> None:
    cycle = FakeCycle()
    direct = DirectBody(cycle)
    assert direct.write(b"data: x\n\n") and cycle.written == [b"9\r\ndata: x\n\n\r\n"]
    for name, value in [
        ("disconnected", True), ("response_complete", True), ("response_started", False), ("chunked_encoding", None),
        ("chunked_encoding", False), ("closing", True),
    ]:
        other = FakeCycle()
        setattr(other, name, value)
        assert not DirectBody(other).write(b"x") and other.written == [], name
    paused = FakeCycle()
    paused.flow.write_paused = True
    assert not DirectBody(paused).write(b"x") and paused.written == []


async def test_only_uvicorns_httptools_cycle_gets_direct_writes() -> None:
    async def plain_send(message: dict[str, Any]) -> None:
        return None

    assert direct_body({}) is None
    assert direct_body({SERVER_SEND: plain_send}) is None
    assert direct_body({SERVER_SEND: FakeCycle().write}) is None  # a bound method, of something else

    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.update(scope)

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    await ServerSend(app)({"type": "http"}, receive, plain_send)
    assert seen[SERVER_SEND] is plain_send
    await asyncio.sleep(0)
