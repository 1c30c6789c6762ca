"""Write a streaming generator plugin, host it, and stream it.

The plugin says which blocks it will write (`determine_output_block_types`); the runtime
preallocates them and streams whatever `run` yields into them. If `run` raises, its open
blocks are aborted and the generation fails with a code: nothing is left "started".

Needs nothing beyond ``pip install -e .``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
from streaming.client import StreamingClient
from streaming.server.app import ServerSettings
from streaming.server.background import BackgroundServer

from streaming import (
    ConversationSupport,
    InvocableResponse,
    StreamingGenerator,
    SupportLevel,
    Usage,
)
from streaming.plugin import BlockTypePluginOutput


class Countdown(StreamingGenerator):
    """Counts down from the number in the prompt into a text block, then writes a
    JSON summary into a second block."""

    supported_capabilities = {ConversationSupport: SupportLevel.NATIVE}

    def determine_output_block_types(self, request: Any) -> InvocableResponse[BlockTypePluginOutput]:
        return InvocableResponse(data=BlockTypePluginOutput(block_types_to_create=["text/plain", "application/json"]))

    async def run(self, request: Any) -> AsyncIterator[Any]:
        start = int(request.data.blocks[-1].text)
        for n in range(start, 0, -1):
            yield f"{n}... "  # to the first open block
            await anyio.sleep(0.05)
        yield "liftoff!"
        yield (1, f'{{"counted": {start}}}')  # to output block 1
        yield Usage(operation_unit="numbers", operation_amount=start)


async def main(url: str) -> None:
    async with StreamingClient(url) as client:
        gen = await client.generate("countdown", prompt="5")
        async for block in gen.blocks():
            async for text in block:
                print(text, end="", flush=True)
            print()
        print("usage:", gen.events[-1].data["usage"])
        # Bad input to the plugin: the generation fails cleanly, with a code.
        bad = await client.generate("countdown", prompt="not a number")
        async for event in bad:
            if event.type in ("block.aborted", "generation.failed"):
                print(event.type, event.data.get("error", event.data.get("reason")))


if __name__ == "__main__":
    settings = ServerSettings(generators={"countdown": "__main__:Countdown"})
    with BackgroundServer(settings) as url:
        anyio.run(main, url)
