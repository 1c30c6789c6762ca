"""Stream a generation with the Python client, block by block, token by token.

    python examples/01_echo_client.py                # starts its own server
    python examples/01_echo_client.py http://127.0.0.1:8000   # or talks to yours

Needs nothing beyond ``pip install -e .``.
"""

from __future__ import annotations

import sys

import anyio
from streaming.client import StreamingClient
from streaming.server.background import BackgroundServer


async def main(url: str) -> None:
    async with StreamingClient(url) as client:
        gen = await client.generate(
            "echo", prompt="Streaming, one word at a time. ", options={"repeat": 2, "delay_ms": 20}
        )
        print(f"generation {gen.id}")
        async for block in gen.blocks():
            print(f"[{block.mime_type}] ", end="", flush=True)
            async for text in block:
                print(text, end="", flush=True)
            print(f"\n(block {block.state})")
        print(f"state: {gen.state}, events: {len(gen.events)}")

        # The same text, read whole; and the conversation kept in a file.
        again = await client.generate("echo", prompt="And again.", file_id=gen.file_id)
        print("second answer:", await again.text())
        file = await client.get_file(gen.file_id)
        for b in file["blocks"]:
            role = b["tags"][0]["value"]["string-value"]
            print(f"  {role:>9}: {b['text']!r}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        anyio.run(main, sys.argv[1])
    else:
        with BackgroundServer() as url:
            anyio.run(main, url)
