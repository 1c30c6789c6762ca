"""The floor: a bare sse-starlette endpoint on uvicorn (uvloop + httptools).

``GET /stream?n=N`` yields ``"tok "`` N times, one SSE event each, as fast as the stack
lets it; ``idle_s`` sleeps that long before the first chunk (an idle open stream).
Run: ``python -m benchmarks.servers.floor --port P``.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import uvicorn
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
        log_level="warning", access_log=False,
    )


if __name__ == "__main__":
    main()
