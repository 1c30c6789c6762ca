"""The peer: LangServe's ``/stream`` over a ``RunnableGenerator`` yielding the same chunks.

Runs only in the benchmark's own virtualenv (``benchmarks/.venv``), never with the
project's dependencies. Input ``{"n": N, "idle_s": S}``: sleep S seconds, then yield
``"tok "`` N times. Run from the repository root:
``benchmarks/.venv/bin/python -m benchmarks.servers.langserve_app --port P``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from langchain_core.runnables import RunnableGenerator
from langserve import add_routes

from benchmarks.servers.serve import serve

CHUNK = "tok "


async def chunks(inputs: AsyncIterator[Any]) -> AsyncIterator[str]:
    async for item in inputs:
        n = int(item.get("n", 1))
        idle_s = float(item.get("idle_s", 0))
        if idle_s:
            await asyncio.sleep(idle_s)
        for _ in range(n):
            yield CHUNK


app = FastAPI()
add_routes(app, RunnableGenerator(chunks), path="")


if __name__ == "__main__":
    serve(app)
