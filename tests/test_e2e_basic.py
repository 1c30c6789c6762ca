"""End to end over a real uvicorn with the real Python client: the core paths."""

from __future__ import annotations

import pytest
from streaming.client.client import StreamingClient

from tests.invariants import check_invariants

pytestmark = pytest.mark.anyio


async def test_echo_streams_and_reassembles(server) -> None:
    async with StreamingClient(server.url) as client:
        gen = await client.generate("echo", prompt="hello streaming world ", options={"repeat": 3})
        chunks = []
        async for block in gen.blocks():
            async for text in block:
                chunks.append(text)
        assert "".join(chunks) == "hello streaming world " * 3
        assert gen.state == "succeeded"
        stored = await client.get_generation(gen.id)
        final = {b["id"]: b["text"] for b in stored["blocks"]}
        check_invariants(gen.events, final_blocks=final)
