"""Direct WebSocket frames (server/direct.py, ``DirectFrames``): under uvicorn's websockets
(sans-I/O) protocol, as ``streaming serve`` runs it, a caught-up subscription's event goes
straight to the transport as the text frame ``websockets`` itself would make; a socket that
negotiated compression, or cannot take a write now, goes through ASGI.

The clients are a raw socket (the frames parsed by hand: a wrong length or a stray byte
fails) and the ``websockets`` package offering ``permessage-deflate``, as browsers do.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from streaming.server.app import ServerSettings, create_app
from streaming.server.direct import SERVER_SEND, DirectFrames, direct_frames
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from tests.conftest import LiveServer
from tests.raw_ws import (
    FakeTransport,
    answer_offering_deflate,
    handshake,
    read_frames,
    record_writes,
    send_json,
)

pytestmark = pytest.mark.anyio

TERMINAL = ("generation.completed", "generation.failed", "generation.cancelled")


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The payloads :class:`DirectFrames` wrote."""
    return record_writes(monkeypatch, DirectFrames, "write_text")


def _generate_raw(port: int, options: dict[str, Any]) -> list[tuple[int, bytes]]:
    """Every frame of an echo generation, up to its terminal event (which ends the bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        assert b"sec-websocket-extensions" not in handshake(sock).lower()
        send_json(sock, {"type": "generate", "generator": "echo", "prompt": "tok ", "options": options})
        pending: list[bytes] = []
        frames = read_frames(sock, lambda f: f.get("type") in TERMINAL, pending)
    assert pending == [b""], "bytes after the terminal event's frame"
    return frames


def test_paced_events_go_straight_to_the_transport_as_websockets_frames_them(counted: list[bytes]) -> None:
    live = LiveServer(create_app(ServerSettings())).start()
    try:
        frames = _generate_raw(live.port, {"repeat": 30, "delay_ms": 5})
    finally:
        live.stop()
    assert all(first == 0x81 for first, _ in frames), "every frame: FIN, text"
    events = [json.loads(p) for _, p in frames if json.loads(p).get("seq") is not None]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert "".join(e["text"] for e in events if e["type"] == "block.delta") == "tok " * 30
    # Paced: each delta was written where it was appended, straight to the transport.
    assert len(counted) >= 25 and set(counted) <= {p for _, p in frames}


def test_a_compressed_socket_goes_through_asgi_and_gets_it_all(counted: list[bytes]) -> None:
    live = LiveServer(create_app(ServerSettings()), ws_per_message_deflate=True).start()
    try:
        accepted, text = answer_offering_deflate(live.url, "tok ", {"repeat": 30, "delay_ms": 5})
    finally:
        live.stop()
    assert (accepted or "").startswith("permessage-deflate")
    assert text == "tok " * 30
    assert counted == []  # (compressed frames are the extension's to make)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_a_direct_frame_is_the_one_websockets_makes(size: int) -> None:
    data = ("é" * (size // 2) + "x" * (size % 2)).encode()  # (UTF-8, ``size`` bytes)
    assert len(data) == size
    protocol = FakeProtocol()
    assert DirectFrames(protocol).write_text(data)
    assert protocol.written == [Frame(Opcode.TEXT, data).serialize(mask=False, extensions=[])]


class FakeConn:
    def __init__(self) -> None:
        self.state = State.OPEN
        self.extensions: list[Any] = []
        self.expect_continuation_frame = False


class FakeProtocol(FakeTransport):
    """What :class:`DirectFrames` reads of uvicorn's websockets protocol."""

    def __init__(self) -> None:
        super().__init__()
        self.conn = FakeConn()
        self.disconnected = False
        self.close_sent = False
        self.handshake_complete = True
        self.initial_response: Any = None
        self.writable = type("Writable", (), {"is_set": lambda self: True})()


def test_a_direct_frame_declines_whenever_it_cannot_be_written_now() -> None:
    cases: list[tuple[str, Any, Any]] = [
        ("disconnected", None, True), ("close_sent", None, True), ("handshake_complete", None, False),
        ("initial_response", None, (403, [], b"")), ("closing", None, True),
        ("state", "conn", State.CLOSING), ("extensions", "conn", ["permessage-deflate"]),
        ("expect_continuation_frame", "conn", True),
    ]
    for name, on, value in cases:
        protocol = FakeProtocol()
        setattr(protocol.conn if on else protocol, name, value)
        assert not DirectFrames(protocol).write_text(b"{}") and protocol.written == [], name
    paused = FakeProtocol()
    paused.writable = type("Writable", (), {"is_set": lambda self: False})()
    assert not DirectFrames(paused).write_text(b"{}") and paused.written == []


async def test_only_uvicorns_websockets_protocol_gets_direct_frames() -> None:
    async def plain_send(message: dict[str, Any]) -> None:
        return None

    assert direct_frames({}) is None
    assert direct_frames({SERVER_SEND: plain_send}) is None
    assert direct_frames({SERVER_SEND: FakeProtocol().write}) is None  # a bound method, of something else
