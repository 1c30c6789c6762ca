"""The projection of a generation's events to Anthropic Messages stream events, on event lists
(no loop, no server): what a Messages client is told for each shape of generation, and that
a replay from any cursor is the tail of the whole stream."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streaming.dialects import Failure
from streaming.dialects.anthropic import MessagesProjection
from streaming.events import Event
from tests.test_dialect_responses import (
    cancelled_log,
    failed_log,
    several_blocks_log,
    text_log,
    tools_log,
)
from tests.test_openai_projection import Log


def play(log: Log, **options: Any) -> tuple[MessagesProjection, list[dict[str, Any]]]:
    proj = MessagesProjection(message_id="msg_gen_1", model="m", **options)
    out = proj.open()
    for event in log.events:
        out += proj.feed(event)
    return proj, out + proj.close()


def types(out: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in out]


def test_text_then_end_turn_with_usage() -> None:
    proj, out = play(text_log())
    assert types(out) == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop",
    ]
    start = out[0]["message"]
    assert (start["id"], start["role"], start["model"], start["content"]) == ("msg_gen_1", "assistant", "m", [])
    assert start["stop_reason"] is None
    # The coalesced delta is one text_delta.
    assert [e["delta"] for e in out if e["type"] == "content_block_delta"] == [
        {"type": "text_delta", "text": "Hello there "}, {"type": "text_delta", "text": "world"},
    ]
    assert {e["index"] for e in out if "index" in e} == {0}
    assert out[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert out[-2]["usage"] == {"input_tokens": 5, "output_tokens": 3}
    message = proj.message()
    assert message["content"] == [{"type": "text", "text": "Hello there world"}]
    assert message["stop_reason"] == "end_turn" and proj.failure is None


def test_several_blocks_by_index() -> None:
    proj, out = play(several_blocks_log())
    starts = [(e["index"], e["content_block"]["type"]) for e in out if e["type"] == "content_block_start"]
    assert starts == [(0, "text"), (1, "text"), (2, "text")]
    assert [e["index"] for e in out if e["type"] == "content_block_stop"] == [0, 1, 2]
    assert [c["text"] for c in proj.message()["content"]] == ["first. ", "*second*", " third"]


def test_parallel_client_tool_calls_are_tool_use_blocks() -> None:
    proj, out = play(tools_log())
    starts = [e["content_block"] for e in out if e["type"] == "content_block_start"]
    assert starts[1:] == [
        {"type": "tool_use", "id": "call_0", "name": "get_weather", "input": {}},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}},
    ]
    inputs = [json.loads(e["delta"]["partial_json"]) for e in out
              if e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta"]
    assert inputs == [{"city": "Paris"}, {"city": "Oslo"}]
    assert "clock" not in json.dumps(out)  # the server's tool is not shown
    assert out[-2]["delta"]["stop_reason"] == "tool_use"
    assert [c["type"] for c in proj.message()["content"]] == ["text", "tool_use", "tool_use"]
    assert proj.message()["content"][2]["input"] == {"city": "Oslo"}


def test_max_tokens_reached() -> None:
    _, out = play(several_blocks_log(), max_tokens=4)
    assert out[-2]["delta"]["stop_reason"] == "max_tokens"
    assert out[-2]["usage"]["output_tokens"] == 4


def test_a_failure_mid_block_is_one_error_event() -> None:
    proj, out = play(failed_log())
    assert types(out) == ["message_start", "content_block_start", "content_block_delta", "error"]
    assert out[-1]["error"] == {"type": "api_error", "message": "boom"}
    assert proj.failure == Failure("failed", "plugin_error", "boom")
    assert proj.close() == []


def test_a_cancel_is_an_error_event_and_no_stop() -> None:
    proj, out = play(cancelled_log())
    assert out[-1]["type"] == "error" and "message_stop" not in types(out)
    assert proj.failure is not None and proj.failure.outcome == "cancelled"


@pytest.mark.parametrize("make", [text_log, tools_log, failed_log, cancelled_log, several_blocks_log])
def test_a_replay_from_every_cursor_is_the_tail(make: Any) -> None:
    _, full = play(make())
    for after in range(-1, len(full)):
        reread = Log()
        reread.events = [Event.from_json(e.to_json()) for e in make().events]  # as a store hands them back
        _, tail = play(reread, after=after)
        assert tail == full[after + 1:], after
