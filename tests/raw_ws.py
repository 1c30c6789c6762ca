"""WebSocket clients for tests that must see (or withhold) every byte: a raw socket, with
no library to hide the framing, negotiate an extension or read on its own; a ``websockets``
client that offers ``permessage-deflate`` as browsers do (:func:`answer_offering_deflate`);
and the one place tests record the writes a direct path made (:func:`record_writes`)."""

from __future__ import annotations

import base64
import json
import os
import socket
from collections.abc import Callable
from typing import Any

import pytest

__all__ = ["answer_offering_deflate", "handshake", "read_frames", "record_writes", "send_json"]


def handshake(sock: socket.socket) -> bytes:
    """Upgrade ``sock`` (connected to a server) to a WebSocket on ``/ws``, offering no
    extension; the response's head (asserted ``101``)."""
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        byte = sock.recv(1)
        assert byte, "the server closed the socket during the handshake"
        head += byte
    assert head.startswith(b"HTTP/1.1 101"), head
    return head


def send_json(sock: socket.socket, frame: dict[str, Any]) -> None:
    """``frame`` as one masked text frame (as a client must send it)."""
    payload = json.dumps(frame).encode()
    mask = os.urandom(4)
    header = bytes([0x81, 0x80 | 127]) + len(payload).to_bytes(8, "big") + mask
    sock.sendall(header + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def read_frames(
    sock: socket.socket, until: Callable[[dict[str, Any]], bool], pending: list[bytes]
) -> list[tuple[int, bytes]]:
    """The server's data frames as ``(first byte, payload)``, up to the first whose JSON
    satisfies ``until``; pings and pongs are skipped. Checked strictly: unmasked, each a
    text frame, each length in its shortest form. ``pending``: the bytes read past the last
    frame, kept for the next call (a list holding them, or empty)."""
    buf = pending.pop() if pending else b""
    frames: list[tuple[int, bytes]] = []
    while True:
        while len(buf) >= 2:
            assert buf[1] & 0x80 == 0, "a server frame must not be masked"
            n, at = buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    break
                n, at = int.from_bytes(buf[2:4], "big"), 4
                assert n >= 126, "a 16-bit length for a short payload"
            elif n == 127:
                if len(buf) < 10:
                    break
                n, at = int.from_bytes(buf[2:10], "big"), 10
                assert n >= 65536, "a 64-bit length for a short payload"
            if len(buf) < at + n:
                break
            first, payload, buf = buf[0], buf[at : at + n], buf[at + n :]
            if first & 0x0F in (0x9, 0xA):
                continue  # a ping or pong (unanswered here)
            assert first & 0x0F == 0x1, f"unexpected frame opcode {first & 0x0F}"
            frames.append((first, payload))
            if until(json.loads(payload)):
                pending.append(buf)
                return frames
        chunk = sock.recv(65536)
        assert chunk, "the server closed the socket"
        buf += chunk


class FakeTransport:
    """An asyncio transport standing in for uvicorn's (and, as ``transport``, the object
    that holds it): what the direct writes wrote, and whether it is closing."""

    def __init__(self) -> None:
        self.transport = self
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing


def record_writes(monkeypatch: pytest.MonkeyPatch, cls: type, name: str) -> list[bytes]:
    """What ``cls.name`` (a direct write: ``(self, data) -> bool``) wrote from now on: the
    data of every call that returned True."""
    wrote: list[bytes] = []
    write = getattr(cls, name)

    def recording(self: Any, data: bytes) -> bool:
        done: bool = write(self, data)
        if done:
            wrote.append(data)
        return done

    monkeypatch.setattr(cls, name, recording)
    return wrote


def answer_offering_deflate(url: str, prompt: str, options: dict[str, Any]) -> tuple[str | None, str]:
    """An echo generation over ``/ws`` of the server at ``url`` (``http://...``) from a
    client that offers permessage-deflate: the extension the server accepted, and the
    streamed text (the generation must complete)."""
    from websockets.sync.client import connect

    with connect(url.replace("http://", "ws://") + "/ws", compression="deflate") as ws:
        accepted = ws.response.headers.get("Sec-WebSocket-Extensions")
        ws.send(json.dumps({"type": "generate", "generator": "echo", "prompt": prompt, "options": options}))
        text = []
        while True:
            frame = json.loads(ws.recv(timeout=30))
            if frame.get("type") == "block.delta":
                text.append(frame["text"])
            elif frame.get("type") in ("generation.completed", "generation.failed", "error"):
                assert frame["type"] == "generation.completed", frame
                return accepted, "".join(text)
