"""The official ``openai`` (Responses API) and ``anthropic`` (Messages API) packages as
clients of this server.

Point either SDK at the server (``<server>/v1`` for OpenAI, ``<server>`` for Anthropic) and
name a registered generator as the model. Each response or message is one generation of the
runtime: resumable from any event, cancellable, and readable under ``/generations/{id}``.
The tool round trip uses the ``scripted`` generator (a test double that plays a script given
in ``options``: the SDKs' ``extra_body``).

Needs the ``openai`` and ``anthropic`` packages: ``pip install -e '.[examples]'``.

    python examples/09_responses_and_messages.py                # starts its own server
    python examples/09_responses_and_messages.py http://127.0.0.1:8000
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anthropic
import httpx
import openai
from streaming.server.background import BackgroundServer

#: the scripted generator: say something, call get_weather; next time, answer from the result
SCRIPT = {"options": {"rounds": [
    [{"text": "Let me look. "}, {"tool_call": {"name": "get_weather", "args": {"city": "Paris"}}}],
    [{"echo_tool_results": True}],
]}}
SCHEMA: Any = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def responses(url: str) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed")

    # Stream a response; every event has a sequence_number from 0.
    response_id = ""
    for event in client.responses.create(model="echo", input="Hello from the Responses API.", stream=True):
        if event.type == "response.created":
            response_id = event.response.id
        if event.type == "response.output_text.delta":
            print(event.delta, end="", flush=True)
    print()

    # Any response can be replayed after any event, not only background ones (a client
    # whose connection dropped after event 2 picks up at event 3).
    replayed = list(client.responses.retrieve(response_id, stream=True, starting_after=2))
    print(f"replayed: events {replayed[0].sequence_number} to {replayed[-1].sequence_number}, {replayed[-1].type}")

    # A client tool: the response ends with a function_call item; the output goes back in
    # the next request, which continues the conversation.
    weather: Any = {"type": "function", "name": "get_weather", "description": "Weather of a city.",
                    "parameters": SCHEMA}
    with client.responses.stream(model="scripted", input="Weather in Paris?", tools=[weather],
                                 extra_body=SCRIPT) as stream:
        first = stream.get_final_response()
    call: Any = next(item for item in first.output if item.type == "function_call")
    print(f"responses tool call: {call.name}({json.loads(call.arguments)})")
    answer = client.responses.create(
        model="scripted", previous_response_id=first.id, tools=[weather], extra_body=SCRIPT,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}],
    )
    print("responses answer:", answer.output_text)

    # Cancel a running response: its stream ends without response.completed.
    stream = client.responses.create(model="echo", input="word " * 200, stream=True,
                                     extra_body={"options": {"delay_ms": 20}})
    created = next(iter(stream))
    client.responses.cancel(created.response.id)  # type: ignore[union-attr]
    try:
        for _ in stream:
            pass
    except openai.APIError as exc:
        print("stream ended:", exc.code)
    print("responses status:", client.responses.retrieve(created.response.id).status)  # type: ignore[union-attr]


def messages(url: str) -> None:
    client = anthropic.Anthropic(base_url=url, api_key="not-needed")

    with client.messages.stream(model="echo", max_tokens=100,
                                messages=[{"role": "user", "content": "Hello from the Messages API."}]) as stream:
        for text in stream.text_stream:
            print(text, end="", flush=True)
        message = stream.get_final_message()
        generation = stream.response.headers["x-generation-id"]
    print(f"\nmessages stop_reason: {message.stop_reason}")
    state = httpx.get(f"{url}/generations/{generation}").json()["generation"]["state"]
    print(f"generation {generation}: {state}")

    # Tool use: the message stops with tool_use; the result goes back as a tool_result.
    tools: Any = [{"name": "get_weather", "description": "Weather of a city.", "input_schema": SCHEMA}]
    history: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.messages.create(model="scripted", max_tokens=100, messages=history, tools=tools,
                                   extra_body=SCRIPT)
    use: Any = next(block for block in first.content if block.type == "tool_use")
    print(f"messages tool call: {use.name}({use.input}), stop_reason: {first.stop_reason}")
    history += [
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21 C"}]},
    ]
    answer = client.messages.create(model="scripted", max_tokens=100, messages=history, tools=tools,
                                    extra_body=SCRIPT)
    print("messages answer:", answer.content[0].text)  # type: ignore[union-attr]


def main(url: str) -> None:
    responses(url)
    messages(url)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with BackgroundServer() as url:
            main(url)
