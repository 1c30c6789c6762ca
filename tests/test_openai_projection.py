"""The projection of a generation's events to OpenAI chat-completion chunks, on event lists
(no loop, no server): what an OpenAI client is told for each shape of generation."""

from __future__ import annotations

import json
from typing import Any

from streaming.dialects import Failure
from streaming.dialects.openai_chat import ChatChunkProjection
from streaming.events import Event

GEN = "gen_1"


class Log:
    """Events of one generation with gapless seqs, shaped as the runtime writes them."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(self, type: str, **data: Any) -> Event:
        event = Event(type, len(self.events) + 1, GEN, data)
        self.events.append(event)
        return event

    def started(self, *blocks: tuple[str, str]) -> None:
        self.add("generation.started", generation={"id": GEN}, capabilities=None,
                 blocks=[block(bid, mime) for bid, mime in blocks])

    def delta(self, block_id: str, offset: int, text: str) -> Event:
        event = Event.delta(len(self.events) + 1, GEN, block_id, offset, text)
        self.events.append(event)
        return event


def block(block_id: str, mime: str = "text/plain") -> dict[str, Any]:
    return {"id": block_id, "mime_type": mime, "stream_state": "started", "text": ""}


def projection(**options: Any) -> ChatChunkProjection:
    return ChatChunkProjection(completion_id="chatcmpl-gen_1", created=7, model="m", **options)


def play(log: Log, **options: Any) -> tuple[ChatChunkProjection, list[dict[str, Any]]]:
    proj = projection(**options)
    chunks = proj.open()
    for event in log.events:
        chunks += proj.feed(event)
    chunks += proj.close()
    return proj, chunks


def deltas(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks if c["choices"]]


def test_text_then_stop_with_usage() -> None:
    log = Log()
    log.started(("b1", "text/plain"))
    log.delta("b1", 0, "Hello ")
    log.delta("b1", 6, "world")
    log.add("block.completed", block_id="b1", length=11)
    log.add("generation.completed", usage=[
        {"operation_unit": "prompt tokens", "operation_amount": 5},
        {"operation_unit": "sampled tokens", "operation_amount": 2},
    ])
    proj, chunks = play(log, include_usage=True)
    assert deltas(chunks) == [{"role": "assistant", "content": ""}, {"content": "Hello "}, {"content": "world"}, {}]
    assert {c["id"] for c in chunks} == {"chatcmpl-gen_1"}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]] == [None, None, None, "stop"]
    # With include_usage every chunk has usage: null, and a last one without choices has it.
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    assert proj.failure is None
    completion = proj.completion()
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["content"] == "Hello world"
    assert completion["choices"][0]["finish_reason"] == "stop"


def test_a_coalesced_delta_is_one_content_delta() -> None:
    log = Log()
    log.started(("b1", "text/plain"))
    first = log.delta("b1", 0, "one ")
    assert first.try_extend("b1", "two ") and first.try_extend("b1", "three")
    log.add("generation.completed", usage=[])
    proj, chunks = play(log)
    assert deltas(chunks)[1:] == [{"content": "one two three"}, {}]
    assert "usage" not in chunks[0]
    assert proj.completion()["choices"][0]["message"]["content"] == "one two three"


def test_several_blocks_only_text_is_content() -> None:
    log = Log()
    log.started(("b1", "text/plain"), ("b2", "text/markdown"), ("img", "image/png"))
    log.delta("b1", 0, "first. ")
    log.delta("img", 0, "iVBORw0")
    log.delta("b2", 0, "*second*")
    log.add("block.completed", block_id="b1", length=7)
    # A block created mid-run (a later tool round) is read too.
    log.add("block.created", block=block("b3"))
    log.delta("b3", 0, " third")
    log.add("generation.completed", usage=[{"operation_unit": "sampled tokens", "operation_amount": 4}])
    proj, chunks = play(log, max_tokens=4)
    assert [d.get("content") for d in deltas(chunks)[1:-1]] == ["first. ", "*second*", " third"]
    # The last round sampled as many tokens as allowed: the answer was cut.
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert proj.completion()["choices"][0]["message"]["content"] == "first. *second* third"


def test_parallel_client_tool_calls_end_with_tool_calls() -> None:
    log = Log()
    log.started(("b1", "text/plain"))
    log.delta("b1", 0, "Let me look. ")
    log.add("block.completed", block_id="b1", length=13)
    for n, (name, city) in enumerate([("get_weather", "Paris"), ("get_weather", "Oslo")]):
        log.add("block.created", block={**block(f"inv{n}", "application/vnd.steamship-block.function-calling-invocation+json")})
        log.add("block.completed", block_id=f"inv{n}", length=10)
        log.add("tool.call", call_id=f"call_{n}", block_id=f"inv{n}", tool_name=name, args={"city": city},
                client_side=False)
    # A tool the server runs is not the client's business.
    log.add("tool.call", call_id="call_s", block_id="inv0", tool_name="server_clock", args={}, client_side=False)
    log.add("tool.result", call_id="call_s", block_id="inv0", tool_name="server_clock", result=["12:00"],
            is_error=False)
    log.add("generation.completed", usage=[])
    proj, chunks = play(log, server_tools={"server_clock"})
    calls = [d["tool_calls"][0] for d in deltas(chunks) if "tool_calls" in d]
    assert [(c["index"], c["id"], c["function"]["name"]) for c in calls] == [
        (0, "call_0", "get_weather"), (1, "call_1", "get_weather")
    ]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"city": "Paris"}, {"city": "Oslo"}]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    message = proj.completion()["choices"][0]["message"]
    assert message["content"] == "Let me look. "
    assert [c["id"] for c in message["tool_calls"]] == ["call_0", "call_1"]
    assert "index" not in message["tool_calls"][0]


def test_a_failure_mid_block_ends_without_a_finish() -> None:
    log = Log()
    log.started(("b1", "text/plain"))
    log.delta("b1", 0, "partial ")
    log.add("block.aborted", block_id="b1", reason="generation failed: invalid_request")
    log.add("generation.failed", error={"code": "invalid_request", "message": "nothing to answer",
                                        "suggestion": "add a user message"})
    proj, chunks = play(log, include_usage=True)
    assert deltas(chunks) == [{"role": "assistant", "content": ""}, {"content": "partial "}]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks)
    assert proj.failure == Failure("failed", "invalid_request", "nothing to answer", "add a user message")


def test_a_cancel_is_a_failure_with_its_reason() -> None:
    log = Log()
    log.started(("b1", "text/plain"))
    log.delta("b1", 0, "first ")
    log.add("block.aborted", block_id="b1", reason="cancelled: client disconnected")
    log.add("generation.cancelled", reason="client disconnected")
    proj, chunks = play(log)
    assert deltas(chunks)[1:] == [{"content": "first "}]
    assert proj.close() == []
    assert proj.failure == Failure("cancelled", "cancelled", "the generation was cancelled: client disconnected")


def test_events_of_a_finished_log_read_back_from_json() -> None:
    """Events a store hands back (parsed from their JSON) project the same."""
    log = Log()
    log.started(("b1", "text/plain"))
    log.delta("b1", 0, "stored")
    log.add("generation.completed", usage=[])
    reread = Log()
    reread.events = [Event.from_json(e.to_json()) for e in log.events]
    assert play(reread)[1] == play(log)[1]
