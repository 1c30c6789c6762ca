"""The projection of a generation's events to the Vercel AI SDK's UI message chunks, on
event lists (no loop, no server): what ``useChat`` / ``Chat`` is told for each shape of
generation, that no part is left open, and that a stream picked up after any event's seq
is exactly the tail of the whole stream."""

from __future__ import annotations

import json
from typing import Any

import pytest
from streaming.server.routes.ai_sdk import UIFrames

from streaming.dialects.ui_message import REASONING_MIME, UIMessageProjection, earlier_parts
from streaming.events import Event
from streaming.model import MimeTypes
from tests.test_openai_projection import GEN, Log, block

#: the chunk types both ``ai`` 6 and ``ai`` 7 accept that the projection may send
KNOWN_TYPES = {
    "start", "start-step", "text-start", "text-delta", "text-end", "reasoning-start", "reasoning-delta",
    "reasoning-end", "tool-input-start", "tool-input-delta", "tool-input-available", "tool-output-available",
    "tool-output-error", "finish-step", "finish", "error", "abort",
}
FINISH_REASONS = {"stop", "length", "content-filter", "tool-calls", "error", "other"}  # ai 6's (7 adds one)

INVOCATION = MimeTypes.FUNCTION_CALL_INVOCATION
RESULT = MimeTypes.FUNCTION_CALL_RESULT


def play(events: list[Event], **options: Any) -> tuple[UIMessageProjection, list[dict[str, Any]]]:
    proj = UIMessageProjection(message_id="msg_1", **options)
    chunks = proj.open()
    for event in events:
        chunks += proj.feed(event)
    chunks += proj.close()
    for chunk in chunks:
        assert chunk["type"] in KNOWN_TYPES
        if chunk["type"] == "finish":
            assert chunk["finishReason"] in FINISH_REASONS
    return proj, chunks


def types(chunks: list[dict[str, Any]]) -> list[str]:
    return [c["type"] for c in chunks]


def assert_closed(chunks: list[dict[str, Any]]) -> None:
    """Every part started is ended; steps are balanced; ``finish`` comes last."""
    open_parts: set[tuple[str, str]] = set()
    calls: set[str] = set()
    in_step = False
    for c in chunks:
        kind = c["type"]
        if kind == "start-step":
            assert not in_step
            in_step = True
        elif kind == "finish-step":
            assert in_step and not open_parts
            in_step = False
        elif kind.endswith("-start") and kind != "tool-input-start":
            open_parts.add((kind[: -len("-start")], c["id"]))
            assert in_step
        elif kind.endswith("-end"):
            open_parts.remove((kind[: -len("-end")], c["id"]))
        elif kind == "tool-input-available":
            calls.add(c["toolCallId"])
        elif kind in ("tool-output-available", "tool-output-error"):
            calls.remove(c["toolCallId"])
    assert not in_step and not open_parts
    assert chunks[-1]["type"] == "finish"


def usage(prompt: int, sampled: int) -> list[dict[str, Any]]:
    return [
        {"operation_unit": "prompt tokens", "operation_amount": prompt},
        {"operation_unit": "sampled tokens", "operation_amount": sampled},
    ]


def call(log: Log, n: int, name: str, args: dict[str, Any], *, client_side: bool = True) -> None:
    log.add("block.created", block=block(f"inv{n}", INVOCATION))
    log.delta(f"inv{n}", 0, json.dumps({"tool_name": name, "args": args, "call_id": f"call_{n}"}))
    log.add("block.completed", block_id=f"inv{n}", length=10)
    log.add("tool.call", call_id=f"call_{n}", block_id=f"inv{n}", tool_name=name, args=args, client_side=client_side)


def result(log: Log, n: int, name: str, items: list[str], *, is_error: bool = False) -> None:
    log.add("block.created", block=block(f"res{n}", RESULT))
    log.add("block.completed", block_id=f"res{n}", length=10)
    log.add("tool.result", call_id=f"call_{n}", block_id=f"res{n}", tool_name=name, result=items, is_error=is_error)


def test_text_then_stop_with_usage() -> None:
    log = Log()
    log.started(("b1", "text/plain"))
    log.delta("b1", 0, "Hello ")
    log.delta("b1", 6, "world")
    log.add("block.completed", block_id="b1", length=11)
    log.add("generation.completed", usage=usage(5, 2))
    proj, chunks = play(log.events)
    assert chunks == [
        {"type": "start", "messageId": "msg_1", "messageMetadata": {"generationId": GEN}},
        {"type": "start-step"},
        {"type": "text-start", "id": "b1"},
        {"type": "text-delta", "id": "b1", "delta": "Hello "},
        {"type": "text-delta", "id": "b1", "delta": "world"},
        {"type": "text-end", "id": "b1"},
        {"type": "finish-step"},
        {
            "type": "finish",
            "finishReason": "stop",
            "messageMetadata": {"generationId": GEN, "usage": {"inputTokens": 5, "outputTokens": 2, "totalTokens": 7}},
        },
    ]
    assert proj.failure is None and proj.ended


def test_a_coalesced_delta_is_one_text_delta() -> None:
    log = Log()
    log.started(("b1", "text/plain"))
    first = log.delta("b1", 0, "one ")
    assert first.try_extend("b1", "two ") and first.try_extend("b1", "three")
    log.add("block.completed", block_id="b1", length=13)
    log.add("generation.completed", usage=[])
    _, chunks = play(log.events)
    assert [c["delta"] for c in chunks if c["type"] == "text-delta"] == ["one two three"]


def test_reasoning_and_text_blocks_interleaved_and_an_empty_block_shows_nothing() -> None:
    log = Log()
    log.started(("r1", REASONING_MIME), ("b1", "text/plain"), ("b2", "text/markdown"))
    log.delta("r1", 0, "hmm, ")
    log.delta("b1", 0, "The answer")
    log.delta("r1", 5, "42")
    log.delta("b1", 10, " is 42.")
    log.add("block.completed", block_id="r1", length=7)
    log.add("block.completed", block_id="b1", length=17)
    log.add("block.completed", block_id="b2", length=0)  # never written: no part
    log.add("generation.completed", usage=[])
    _, chunks = play(log.events)
    assert types(chunks) == [
        "start", "start-step",
        "reasoning-start", "reasoning-delta", "text-start", "text-delta", "reasoning-delta", "text-delta",
        "reasoning-end", "text-end", "finish-step", "finish",
    ]
    reasoning = "".join(c["delta"] for c in chunks if c["type"] == "reasoning-delta")
    text = "".join(c["delta"] for c in chunks if c["type"] == "text-delta")
    assert (reasoning, text) == ("hmm, 42", "The answer is 42.")
    assert {c["id"] for c in chunks if c["type"].startswith("text-")} == {"b1"}
    assert_closed(chunks)


def test_parallel_client_tool_calls_end_with_tool_calls() -> None:
    log = Log()
    log.started(("b1", "text/plain"))
    log.delta("b1", 0, "Checking both. ")
    call(log, 0, "get_weather", {"city": "Paris"})
    call(log, 1, "get_weather", {"city": "Oslo"})
    log.add("block.completed", block_id="b1", length=15)
    log.add("generation.completed", usage=[])
    proj, chunks = play(log.events)
    assert types(chunks) == [
        "start", "start-step", "text-start", "text-delta",
        "tool-input-start", "tool-input-delta", "tool-input-available",
        "tool-input-start", "tool-input-delta", "tool-input-available",
        "text-end", "finish-step", "finish",
    ]
    available = [c for c in chunks if c["type"] == "tool-input-available"]
    assert available == [
        {"type": "tool-input-available", "toolCallId": "call_0", "toolName": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool-input-available", "toolCallId": "call_1", "toolName": "get_weather", "input": {"city": "Oslo"}},
    ]
    inputs = [json.loads(c["inputTextDelta"]) for c in chunks if c["type"] == "tool-input-delta"]
    assert inputs == [{"city": "Paris"}, {"city": "Oslo"}]
    assert chunks[-1]["finishReason"] == "tool-calls"
    assert proj.client_calls == ["call_0", "call_1"]


def test_server_tools_show_their_outputs_and_the_next_round_is_a_step() -> None:
    log = Log()
    log.started(("b1", "text/plain"))
    call(log, 0, "get_time", {}, client_side=False)
    call(log, 1, "lookup", {"q": "x"}, client_side=False)
    log.add("block.completed", block_id="b1", length=0)
    result(log, 0, "get_time", ["12:00"])
    result(log, 1, "lookup", ["no such thing"], is_error=True)
    log.add("block.created", block=block("b2"))  # the next round's text block
    log.delta("b2", 0, "It is 12:00.")
    log.add("block.completed", block_id="b2", length=12)
    log.add("generation.completed", usage=[])
    _, chunks = play(log.events)
    assert types(chunks) == [
        "start", "start-step",
        "tool-input-start", "tool-input-delta", "tool-input-available",
        "tool-input-start", "tool-input-delta", "tool-input-available",
        "tool-output-available", "tool-output-error",
        "finish-step", "start-step", "text-start", "text-delta", "text-end", "finish-step", "finish",
    ]
    assert all(c.get("providerExecuted") is True for c in chunks if c["type"].startswith("tool-") and "Name" in str(c))
    outputs = [c for c in chunks if c["type"].startswith("tool-output")]
    assert outputs == [
        {"type": "tool-output-available", "toolCallId": "call_0", "output": "12:00", "providerExecuted": True},
        {"type": "tool-output-error", "toolCallId": "call_1", "errorText": "no such thing", "providerExecuted": True},
    ]
    assert chunks[-1]["finishReason"] == "stop"
    assert_closed(chunks)


def test_a_round_that_starts_with_a_call_is_a_step_of_its_own() -> None:
    log = Log()
    log.started(("b1", "text/plain"))
    call(log, 0, "get_time", {}, client_side=False)
    log.add("block.completed", block_id="b1", length=0)
    result(log, 0, "get_time", ["12:00", "UTC"])
    call(log, 1, "get_weather", {"city": "Paris"})  # next round: a client tool at once
    log.add("generation.completed", usage=[])
    _, chunks = play(log.events)
    assert types(chunks) == [
        "start", "start-step", "tool-input-start", "tool-input-delta", "tool-input-available",
        "tool-output-available", "finish-step", "start-step",
        "tool-input-start", "tool-input-delta", "tool-input-available", "finish-step", "finish",
    ]
    assert chunks[5]["output"] == ["12:00", "UTC"]  # several result items stay a list
    assert chunks[-1]["finishReason"] == "tool-calls"


def test_a_failure_mid_block_ends_every_part_then_error_and_finish() -> None:
    log = Log()
    log.started(("r1", REASONING_MIME), ("b1", "text/plain"))
    log.delta("r1", 0, "let me see")
    log.delta("b1", 0, "Half an ans")
    call(log, 0, "slow_tool", {}, client_side=False)
    log.add("block.aborted", block_id="r1", reason="generation failed: plugin_error")
    log.add("block.aborted", block_id="b1", reason="generation failed: plugin_error")
    log.add("generation.failed", error={"code": "plugin_error", "message": "RuntimeError: boom", "suggestion": None})
    proj, chunks = play(log.events)
    assert types(chunks)[-6:] == ["reasoning-end", "text-end", "tool-output-error", "finish-step", "error", "finish"]
    assert chunks[-2] == {"type": "error", "errorText": "plugin_error: RuntimeError: boom"}
    assert chunks[-1] == {"type": "finish", "finishReason": "error", "messageMetadata": {"generationId": GEN}}
    assert next(c for c in chunks if c["type"] == "tool-output-error")["errorText"] == "RuntimeError: boom"
    assert proj.failure is not None and proj.failure.code == "plugin_error"
    assert_closed(chunks)


def test_a_failure_whose_blocks_were_not_aborted_still_closes_its_parts() -> None:
    # (The runtime aborts open blocks first; the projection does not depend on it.)
    log = Log()
    log.started(("b1", "text/plain"))
    log.delta("b1", 0, "cut")
    log.add("generation.failed", error={"code": "max_duration", "message": "too long", "suggestion": "shorter"})
    _, chunks = play(log.events)
    assert types(chunks)[2:] == ["text-start", "text-delta", "text-end", "finish-step", "error", "finish"]
    assert chunks[-2]["errorText"] == "max_duration: too long (shorter)"
    assert_closed(chunks)


def test_a_cancel_ends_with_abort_and_finish() -> None:
    log = Log()
    log.started(("b1", "text/plain"))
    log.delta("b1", 0, "Once upon")
    log.add("block.aborted", block_id="b1", reason="cancelled: stopped by the client")
    log.add("generation.cancelled", reason="stopped by the client")
    proj, chunks = play(log.events)
    assert types(chunks)[2:] == ["text-start", "text-delta", "text-end", "finish-step", "abort", "finish"]
    assert chunks[-2] == {"type": "abort", "reason": "stopped by the client"}
    assert chunks[-1]["finishReason"] == "other"
    assert proj.failure is not None and proj.failure.outcome == "cancelled"
    assert_closed(chunks)


def test_a_generation_that_is_not_running_any_more_feeds_nothing_after_its_end() -> None:
    log = Log()
    log.started(("b1", "text/plain"))
    log.add("generation.completed", usage=[])
    proj, chunks = play(log.events)
    assert types(chunks) == ["start", "start-step", "finish-step", "finish"]
    assert proj.feed(Event("generation.completed", 9, GEN, {"usage": []})) == []


def test_length_when_the_sampled_tokens_reach_max_tokens() -> None:
    log = Log()
    log.started(("b1", "text/plain"))
    log.delta("b1", 0, "cut short")
    log.add("block.completed", block_id="b1", length=9)
    log.add("generation.completed", usage=usage(3, 16))
    _, chunks = play(log.events, max_tokens=16)
    assert chunks[-1]["finishReason"] == "length"
    _, chunks = play(log.events, max_tokens=17)
    assert chunks[-1]["finishReason"] == "stop"


def rich_log() -> Log:
    """Reasoning, text, a server tool, a next round, a client tool, and a failure."""
    log = Log()
    log.started(("r1", REASONING_MIME), ("b1", "text/plain"))
    log.delta("r1", 0, "think")
    first = log.delta("b1", 0, "Hel")
    first.try_extend("b1", "lo ")
    call(log, 0, "get_time", {}, client_side=False)
    log.add("block.completed", block_id="r1", length=5)
    log.add("block.completed", block_id="b1", length=6)
    result(log, 0, "get_time", ["12:00"])
    log.add("block.created", block=block("b2"))
    log.delta("b2", 0, "It is ")
    call(log, 1, "get_weather", {"city": "Paris"})
    log.delta("b2", 6, "noon")
    log.add("block.aborted", block_id="b2", reason="generation failed: plugin_error")
    log.add("generation.failed", error={"code": "plugin_error", "message": "boom", "suggestion": None})
    return log


@pytest.mark.parametrize("ending", ["completed", "failed", "cancelled"])
def test_a_stream_picked_up_after_any_seq_is_the_tail_of_the_whole(ending: str) -> None:
    events = rich_log().events[:-1]
    last = len(events) + 1
    if ending == "completed":
        events.append(Event("generation.completed", last, GEN, {"usage": usage(1, 2)}))
    elif ending == "failed":
        events.append(Event("generation.failed", last, GEN, {"error": {"code": "x", "message": "y"}}))
    else:
        events.append(Event("generation.cancelled", last, GEN, {"reason": "client disconnected"}))
    whole = UIMessageProjection(message_id="msg_1")
    by_event = [whole.feed(event) for event in events]
    assert_closed([c for chunks in by_event for c in chunks])
    for cursor in range(len(events) + 1):
        resumed = UIMessageProjection(message_id="msg_1")
        for event in events[:cursor]:
            resumed.feed(event)  # read, not sent
        tail = [c for event in events[cursor:] for c in resumed.feed(event)]
        assert tail == [c for chunks in by_event[cursor:] for c in chunks], cursor


def frames_of(body: bytes) -> list[tuple[int | None, Any]]:
    """(id, data) of each SSE frame."""
    out: list[tuple[int | None, Any]] = []
    for frame in body.decode().split("\n\n"):
        if not frame:
            continue
        fields = dict(line.split(": ", 1) for line in frame.split("\n"))
        data = fields["data"]
        out.append((int(fields["id"]) if "id" in fields else None, data if data == "[DONE]" else json.loads(data)))
    return out


def test_the_frames_after_a_cursor_are_the_tail_of_the_frames() -> None:
    events = rich_log().events
    whole = UIFrames(UIMessageProjection(message_id="msg_1"))
    full = frames_of(whole.opening() + whole.batch(events) + whole.closing())
    assert full[-1] == (None, "[DONE]")
    assert [seq for seq, _ in full[:-1]] == sorted(seq for seq, _ in full[:-1])  # each frame names its event
    for cursor in range(len(events) + 1):
        resumed = UIFrames(UIMessageProjection(message_id="msg_1"), after=cursor)
        # In batches of any size: the first one straddling the cursor.
        body = resumed.opening() + resumed.batch(events[: cursor + 1]) + resumed.batch(events[cursor + 1 :])
        body += resumed.closing()
        assert frames_of(body) == [f for f in full if f[0] is None or f[0] > cursor], cursor


def test_a_continuation_names_the_message_it_continues() -> None:
    log = Log()
    log.started(("b1", "text/plain"))
    log.add("generation.completed", usage=[])
    proj = UIMessageProjection(message_id="msg_from_the_client")
    assert proj.feed(log.events[0])[0] == {
        "type": "start",
        "messageId": "msg_from_the_client",
        "messageMetadata": {"generationId": GEN},
    }


def stored(block_id: str, mime: str, text: str) -> dict[str, Any]:
    return {"id": block_id, "mime_type": mime, "text": text}


def test_earlier_parts_rebuild_a_message_and_do_not_ask_the_client_to_run_its_tool_again() -> None:
    invocation = {"tool_name": "get_weather", "args": {"city": "Paris"}, "call_id": "c1"}
    clock = {"tool_name": "get_time", "args": {}, "call_id": "c2"}
    blocks = [
        stored("r1", REASONING_MIME, "hmm"),
        stored("b1", "text/plain", "Let me look. "),
        stored("b0", "text/plain", ""),  # an empty text block: no part
        stored("i1", INVOCATION, json.dumps(invocation)),
        stored("i2", INVOCATION, json.dumps(clock)),
        stored("x2", RESULT, json.dumps({"tool_name": "get_time", "result": ["12:00"], "call_id": "c2"})),
        stored("x1", RESULT, json.dumps({"tool_name": "get_weather", "result": ["sunny"], "call_id": "c1"})),
    ]
    chunks = earlier_parts(blocks, client_results={"x1"})
    assert chunks == [
        {"type": "start-step"},
        {"type": "reasoning-start", "id": "r1"},
        {"type": "reasoning-delta", "id": "r1", "delta": "hmm"},
        {"type": "reasoning-end", "id": "r1"},
        {"type": "text-start", "id": "b1"},
        {"type": "text-delta", "id": "b1", "delta": "Let me look. "},
        {"type": "text-end", "id": "b1"},
        {"type": "tool-input-start", "toolCallId": "c1", "toolName": "get_weather"},
        {"type": "tool-input-delta", "toolCallId": "c1", "inputTextDelta": '{"city": "Paris"}'},
        {"type": "tool-output-available", "toolCallId": "c1", "output": "sunny"},
        {"type": "tool-input-start", "toolCallId": "c2", "toolName": "get_time", "providerExecuted": True},
        {"type": "tool-input-available", "toolCallId": "c2", "toolName": "get_time", "input": {},
         "providerExecuted": True},
        {"type": "tool-output-available", "toolCallId": "c2", "output": "12:00", "providerExecuted": True},
        {"type": "finish-step"},
    ]


def test_a_continuation_replayed_from_its_start_carries_the_earlier_parts_after_start() -> None:
    earlier = earlier_parts([stored("b1", "text/plain", "before")])
    log = Log()
    log.started(("b2", "text/plain"))
    log.delta("b2", 0, "after")
    log.add("block.completed", block_id="b2", length=5)
    log.add("generation.completed", usage=[])
    _, chunks = play(log.events, earlier=earlier)
    assert types(chunks) == [
        "start", "start-step", "text-start", "text-delta", "text-end", "finish-step",
        "start-step", "text-start", "text-delta", "text-end", "finish-step", "finish",
    ]
    assert_closed(chunks)


def test_earlier_parts_of_a_call_without_output_and_a_failed_call() -> None:
    blocks = [
        stored("i1", INVOCATION, json.dumps({"tool_name": "a", "args": {}, "call_id": "c1"})),
        stored("x1", RESULT, json.dumps({"tool_name": "a", "result": ["no"], "call_id": "c1", "is_error": True})),
        stored("b1", "text/plain", "next round"),
        stored("i2", INVOCATION, json.dumps({"tool_name": "b", "args": {"n": 1}, "call_id": "c2"})),
        stored("bad", INVOCATION, "not json"),
    ]
    assert types(earlier_parts(blocks)) == [
        "start-step", "tool-input-start", "tool-input-available", "tool-output-error", "finish-step",
        "start-step", "text-start", "text-delta", "text-end", "tool-input-start", "tool-input-available",
        "finish-step",
    ]


def test_a_stream_refused_after_its_headers_ends_with_an_error_chunk_and_done() -> None:
    from streaming.errors import LimitExceededError

    frames = UIFrames(UIMessageProjection(message_id="msg_1"))
    body = frames.refused(LimitExceededError("too many subscribers"))
    assert frames_of(body) == [
        (None, {"type": "error", "errorText": "limit_exceeded: too many subscribers"}),
        (None, "[DONE]"),
    ]
    assert frames.closing() == b""  # (a stream whose generation did not end says no [DONE] of its own)
