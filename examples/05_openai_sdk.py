"""The official ``openai`` package as a client of this server's ``/v1`` routes.

Any OpenAI SDK works the same way: point its base URL at ``<server>/v1`` and use a
registered generator's name as the model (``smollm2`` with the ``local`` extra, else
``echo``). Each completion is also a generation under ``/generations/{id}``.

Needs the ``openai`` package: ``pip install -e '.[examples]'``.

    python examples/05_openai_sdk.py                # starts its own server
    python examples/05_openai_sdk.py http://127.0.0.1:8000
"""

from __future__ import annotations

import json
import sys
from typing import Any

import httpx
import openai
from streaming.server.background import BackgroundServer

WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def main(url: str) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed")
    models = [m.id for m in client.models.list()]
    model = "smollm2" if "smollm2" in models else "echo"
    print("models:", models, "-> using", model)

    # Streaming, with the usage in a last chunk.
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Say hello to the OpenAI SDK."}],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=40,
        temperature=0,
    )
    completion_id = ""
    for chunk in stream:
        completion_id = chunk.id
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
        if chunk.usage:
            print(f"\nusage: {chunk.usage.prompt_tokens} prompt, {chunk.usage.completion_tokens} completion")

    # The same completion, as a generation of the runtime.
    gen_id = completion_id.removeprefix("chatcmpl-")
    state = httpx.get(f"{url}/generations/{gen_id}").json()["generation"]["state"]
    print(f"generation {gen_id}: {state}")

    # Not streaming.
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Name a fruit."}], max_tokens=20, temperature=0
    )
    print("non-streaming:", reply.choices[0].message.content)

    # A tool call, run by the client and answered in a second request. ``tool_choice``
    # names the tool: left at ``auto``, a model this small may just as well answer in words.
    if model != "smollm2":
        return
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(
        model=model, messages=messages, tools=[WEATHER], temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    calls = first.choices[0].message.tool_calls or []
    print("finish_reason:", first.choices[0].finish_reason)
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    for call in calls:
        fn: Any = call.function  # type: ignore[union-attr]
        args = json.loads(fn.arguments)
        print(f"tool call: {fn.name}({args})")
        messages.append({"role": "tool", "tool_call_id": call.id, "content": f"Sunny, 21 C in {args['city']}"})
    # The conversation now ends in the tool's result, which the model answers.
    answer = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER], temperature=0)
    print("answer:", answer.choices[0].message.content)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with BackgroundServer() as url:
            main(url)
