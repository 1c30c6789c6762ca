"""The floor: a bare sse-starlette endpoint on uvicorn (uvloop + httptools).

``GET /stream?n=N`` yields ``"tok "`` N times, one SSE event each, as fast as the stack
lets it; ``idle_s`` sleeps that long before the first chunk (an idle open stream);
``delay_ms`` sleeps that long before each chunk (a model's pace, like echo's ``delay_ms``).

``WS /ws``: the same over a WebSocket, for the paced scenario's WebSocket row. The client
sends one text frame ``{"n": N, "delay_ms": D}``; the server sends N frames
``{"type":"block.delta","text":"tok "}`` (a sleep of D ms before each), then
``{"type":"generation.completed"}``, and waits for the client to close.

Run: ``python -m benchmarks.servers.floor --port P``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from benchmarks.servers.serve import serve

CHUNK = "tok "
WS_DELTA = json.dumps({"type": "block.delta", "text": CHUNK}, separators=(",", ":"))
WS_END = json.dumps({"type": "generation.completed"}, separators=(",", ":"))


async def stream(request: Request) -> EventSourceResponse:
    n = int(request.query_params.get("n", "1"))
    idle_s = float(request.query_params.get("idle_s", "0"))
    delay_s = float(request.query_params.get("delay_ms", "0")) / 1000.0

    async def chunks() -> AsyncIterator[str]:
        if idle_s:
            await asyncio.sleep(idle_s)
        for _ in range(n):
            if delay_s:
                await asyncio.sleep(delay_s)
            yield CHUNK

    return EventSourceResponse(chunks(), sep="\n")


async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        frame = json.loads(await websocket.receive_text())
        n = int(frame.get("n", 1))
        delay_s = float(frame.get("delay_ms", 0)) / 1000.0
        for _ in range(n):
            if delay_s:
                await asyncio.sleep(delay_s)
            await websocket.send_text(WS_DELTA)
        await websocket.send_text(WS_END)
        await websocket.receive_text()  # until the client closes
    except WebSocketDisconnect:
        pass


app = Starlette(routes=[Route("/stream", stream), WebSocketRoute("/ws", ws)])


if __name__ == "__main__":
    serve(app)
