"""A client that joins a generation midway holds its whole text: the block snapshot of
``GET /generations/{id}`` first, then of each later delta only what the snapshot lacks
(the wire fold applies text by offset)."""

from __future__ import annotations

import pytest
from streaming.client import StreamingClient, WebSocketClient

from tests.conftest import LiveServer

pytestmark = pytest.mark.anyio

WORDS = "".join(f"w{i} " for i in range(120))


@pytest.mark.parametrize("transport", [StreamingClient, WebSocketClient])
async def test_attach_after_a_cursor_gives_the_whole_text_once(
    server: LiveServer, transport: type[StreamingClient]
) -> None:
    async with StreamingClient(server.url) as first, transport(server.url) as second:
        gen = await first.generate("echo", prompt=WORDS, options={"delay_ms": 3}, on_disconnect="continue")
        async for event in gen:
            if event.type == "block.delta" and len(gen.events) >= 6:
                break
        cursor = gen.last_seq
        joined = await second.attach(gen.id, after=cursor)
        assert joined.last_seq == cursor
        pieces = [piece async for block in joined.blocks() async for piece in block]
        assert await joined.text() == "".join(pieces)
        assert all(e.seq > cursor for e in joined.events)
        assert joined.events[-1].type == "generation.completed"
        whole = await gen.text()
        assert whole.split() == WORDS.split()
        assert await joined.text() == whole
        await gen.aclose()
