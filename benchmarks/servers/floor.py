"""The floor: a bare sse-starlette endpoint on uvicorn (uvloop + httptools).

``GET /stream?n=N`` yields ``"tok "`` N times, one SSE event each, as fast as the stack
lets it; ``idle_s`` sleeps that long before the first chunk (an idle open stream).
Run: ``python -m benchmarks.servers.floor --port P``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from benchmarks.servers.serve import serve

CHUNK = "tok "


async def stream(request: Request) -> EventSourceResponse:
    n = int(request.query_params.get("n", "1"))
    idle_s = float(request.query_params.get("idle_s", "0"))

    async def chunks() -> AsyncIterator[str]:
        if idle_s:
            await asyncio.sleep(idle_s)
        for _ in range(n):
            yield CHUNK

    return EventSourceResponse(chunks(), sep="\n")


app = Starlette(routes=[Route("/stream", stream)])


if __name__ == "__main__":
    serve(app)
