"""Tools mid-stream: a server-side tool and a client-side tool in one conversation.

`get_weather` is a Python function registered on the server; its JSON Schema comes from
its signature. `get_location` is declared by the client and answered by the client, while
the stream is open. The `scripted` generator plays the model's part so this runs anywhere;
swap in `smollm2` or `openai` for a real model.

Needs nothing beyond ``pip install -e .``.
"""

from __future__ import annotations

from typing import Literal

import anyio
from streaming.client import StreamingClient
from streaming.server.background import BackgroundServer

from streaming import ToolRegistry

tools = ToolRegistry()


@tools.register
def get_weather(city: str, unit: Literal["c", "f"] = "c") -> str:
    """The current weather in a city."""
    return f"Sunny, 21°{unit.upper()} in {city}"


GET_LOCATION = {
    "name": "get_location",
    "description": "Where the user is (answered by the user's device).",
    "parameters": {"type": "object", "properties": {}},
}

SCRIPT = [
    [{"text": "Let me find out where you are. "}, {"tool_call": {"name": "get_location", "args": {}}}],
    [{"tool_call": {"name": "get_weather", "args": {"city": "Lisbon", "unit": "c"}}}],
    [{"text": "Here is what I found: "}, {"echo_tool_results": True}],
]


async def main(url: str) -> None:
    async with StreamingClient(url) as client:
        gen = await client.generate(
            "scripted", prompt="What's the weather here?", tools=["get_weather", GET_LOCATION],
            options={"rounds": SCRIPT},
        )
        gen.on_tool_call("get_location", lambda args: "Lisbon")  # the client answers this one
        text_blocks: set[str] = set()
        async for event in gen:
            if event.type == "generation.started":
                text_blocks |= {b["id"] for b in event.data["blocks"] if b["mime_type"] == "text/plain"}
            elif event.type == "block.created" and event.data["block"]["mime_type"] == "text/plain":
                text_blocks.add(event.data["block"]["id"])
            elif event.type == "block.delta" and event.data["block_id"] in text_blocks:
                print(event.data["text"], end="", flush=True)
            elif event.type == "tool.call":
                side = "client" if event.data["client_side"] else "server"
                print(f"\n-> {event.data['tool_name']}({event.data['args']}) on the {side}")
            elif event.type == "tool.result":
                print(f"<- {event.data['tool_name']}: {event.data['result']}")
        print(f"\n{gen.state}")


if __name__ == "__main__":
    with BackgroundServer(tools=tools) as url:
        anyio.run(main, url)
