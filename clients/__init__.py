"""Clients of the streaming runtime, installed as ``streaming.client``.

``from streaming.client import StreamingClient`` (SSE over HTTP) or ``WebSocketClient``
(several generations on one socket). Importing this package loads neither the runtime nor
Starlette, pydantic or a store: a client needs only the wire module
(:mod:`streaming.wire`: events, errors, SSE decoding, the fold of a generation's events),
httpx, anyio and (for the socket) websockets.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "StreamingClient": "streaming.client.client",
    "GenerationStream": "streaming.client.client",
    "BlockStream": "streaming.client.client",
    "WebSocketClient": "streaming.client.ws",
    "SSEDecoder": "streaming.wire",
}

__all__ = ["BlockStream", "GenerationStream", "SSEDecoder", "StreamingClient", "WebSocketClient"]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'streaming.client' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from streaming.client.client import BlockStream, GenerationStream, StreamingClient
    from streaming.client.ws import WebSocketClient

    from streaming.wire import SSEDecoder
