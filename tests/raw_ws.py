"""A WebSocket client on a raw socket, for tests that must see (or withhold) every byte:
no library to hide the framing, negotiate an extension or read on its own."""

from __future__ import annotations

import base64
import json
import os
import socket
from typing import Any

__all__ = ["handshake", "send_json"]


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
