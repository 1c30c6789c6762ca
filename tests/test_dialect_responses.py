"""The projection of a generation's events to OpenAI Responses stream events, on event lists
(no loop, no server): what a Responses client is told for each shape of generation, and that
a replay from any ``starting_after`` is the tail of the whole stream."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streaming.dialects import Failure
from streaming.dialects.responses import ResponsesProjection
from streaming.events import Event
from tests.test_openai_projection import Log, block

INVOCATION = "application/vnd.steamship-block.function-calling-support-invocation+json"


def projection(**options: Any) -> ResponsesProjection:
    return ResponsesProjection(response_id="resp_gen_1", model="m", created_at=7, **options)


def play(log: Log, **options: Any) -> tuple[ResponsesProjection, list[dict[str, Any]]]:
    proj = projection(**options)
    out = proj.open()
    for event in log.events:
        out += proj.feed(event)
    return proj, out + proj.close()


def types(out: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in out]


def text_log() -> Log:
    log = Log()
    log.started(("b1", "text/plain"))
    first = log.delta("b1", 0, "Hello ")
    assert first.try_extend("b1", "there ")  # coalesced: one event, one delta
    log.delta("b1", 12, "world")
    log.add("block.completed", block_id="b1", length=17)
    log.add("generation.completed", usage=[
        {"operation_unit": "prompt tokens", "operation_amount": 5},
        {"operation_unit": "sampled tokens", "operation_amount": 3},
    ])
    return log


def tools_log() -> Log:
    log = Log()
    log.started(("b1", "text/plain"))
    log.delta("b1", 0, "Let me look. ")
    log.add("block.completed", block_id="b1", length=13)
    # A server tool runs inside the generation: not the client's business.
    log.add("block.created", block={**block("inv_s", INVOCATION)})
    log.add("block.completed", block_id="inv_s", length=10)
    log.add("tool.call", call_id="call_s", block_id="inv_s", tool_name="clock", args={}, client_side=False)
    log.add("tool.result", call_id="call_s", block_id="res_s", tool_name="clock", result=["12:00"], is_error=False)
    for n, city in enumerate(["Paris", "Oslo"]):
        log.add("block.created", block={**block(f"inv{n}", INVOCATION)})
        log.add("block.completed", block_id=f"inv{n}", length=10)
        log.add("tool.call", call_id=f"call_{n}", block_id=f"inv{n}", tool_name="get_weather",
                args={"city": city}, client_side=True)
    log.add("generation.completed", usage=[])
    return log


def failed_log() -> Log:
    log = Log()
    log.started(("b1", "text/plain"))
    log.delta("b1", 0, "partial ")
    log.add("block.aborted", block_id="b1", reason="generation failed: plugin_error")
    log.add("generation.failed", error={"code": "plugin_error", "message": "boom", "suggestion": None})
    return log


def cancelled_log() -> Log:
    log = Log()
    log.started(("b1", "text/plain"))
    log.delta("b1", 0, "first ")
    log.add("block.aborted", block_id="b1", reason="cancelled: client disconnected")
    log.add("generation.cancelled", reason="client disconnected")
    return log


def several_blocks_log() -> Log:
    log = Log()
    log.started(("b1", "text/plain"), ("b2", "text/markdown"), ("img", "image/png"), ("empty", "text/plain"))
    log.delta("b1", 0, "first. ")
    log.delta("img", 0, "iVBORw0")
    log.delta("b2", 0, "*second*")
    log.add("block.completed", block_id="b1", length=7)
    log.add("block.completed", block_id="b2", length=8)
    log.add("block.completed", block_id="empty", length=0)
    log.add("block.created", block=block("b3"))  # a later round's output
    log.delta("b3", 0, " third")
    log.add("block.completed", block_id="b3", length=6)
    log.add("generation.completed", usage=[{"operation_unit": "sampled tokens", "operation_amount": 4}])
    return log


def test_text_stream_numbered_from_zero() -> None:
    proj, out = play(text_log())
    assert types(out) == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    assert [e["delta"] for e in out if e["type"] == "response.output_text.delta"] == ["Hello there ", "world"]
    assert out[0]["response"]["status"] == "in_progress" and out[0]["response"]["output"] == []
    done = next(e for e in out if e["type"] == "response.output_text.done")
    assert done["text"] == "Hello there world" and done["item_id"] == "msg_b1" and done["output_index"] == 0
    final = out[-1]["response"]
    assert final["id"] == "resp_gen_1" and final["status"] == "completed"
    assert final["output"] == [{
        "id": "msg_b1", "type": "message", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": "Hello there world", "annotations": [], "logprobs": []}],
    }]
    assert final["usage"]["input_tokens"] == 5 and final["usage"]["output_tokens"] == 3
    assert final["usage"]["total_tokens"] == 8
    assert proj.failure is None and proj.response() == final


def test_several_blocks_are_several_message_items() -> None:
    _, out = play(several_blocks_log())
    added = [e for e in out if e["type"] == "response.output_item.added"]
    # Text blocks only, in the order they got text; an empty one is no item.
    assert [(e["output_index"], e["item"]["id"]) for e in added] == [(0, "msg_b1"), (1, "msg_b2"), (2, "msg_b3")]
    texts = [e["text"] for e in out if e["type"] == "response.output_text.done"]
    assert texts == ["first. ", "*second*", " third"]
    assert out[-1]["type"] == "response.completed"


def test_parallel_client_tool_calls_are_function_call_items() -> None:
    _, out = play(tools_log())
    items = [e["item"] for e in out if e["type"] == "response.output_item.done"]
    assert [i["type"] for i in items] == ["message", "function_call", "function_call"]
    calls = items[1:]
    assert [(c["call_id"], c["name"], json.loads(c["arguments"])) for c in calls] == [
        ("call_0", "get_weather", {"city": "Paris"}), ("call_1", "get_weather", {"city": "Oslo"}),
    ]
    assert all(c["status"] == "completed" for c in calls)
    deltas = [e for e in out if e["type"] == "response.function_call_arguments.delta"]
    assert [json.loads(e["delta"]) for e in deltas] == [{"city": "Paris"}, {"city": "Oslo"}]
    assert [e["output_index"] for e in deltas] == [1, 2]
    assert "clock" not in json.dumps(out)  # the server's tool is not shown
    assert out[-1]["type"] == "response.completed"
    assert [i["call_id"] for i in out[-1]["response"]["output"][1:]] == ["call_0", "call_1"]


def test_a_failure_mid_block_is_an_error_then_response_failed() -> None:
    proj, out = play(failed_log())
    assert types(out)[-2:] == ["error", "response.failed"]
    assert "response.output_text.done" not in types(out)
    error = out[-2]
    # Its fields flat and under "error".
    assert (error["code"], error["message"]) == ("plugin_error", "boom")
    assert error["error"]["code"] == "plugin_error" and error["error"]["message"] == "boom"
    failed = out[-1]["response"]
    assert failed["status"] == "failed" and failed["error"] == {"code": "plugin_error", "message": "boom"}
    assert failed["output"][0]["status"] == "incomplete"
    assert failed["output"][0]["content"][0]["text"] == "partial "
    assert proj.failure == Failure("failed", "plugin_error", "boom")
    assert [e["sequence_number"] for e in out] == list(range(len(out)))


def test_a_cancel_ends_without_completed() -> None:
    proj, out = play(cancelled_log())
    assert "response.completed" not in types(out) and "response.failed" not in types(out)
    assert out[-1]["type"] == "error" and out[-1]["code"] == "cancelled"
    assert proj.response()["status"] == "cancelled"
    assert proj.failure is not None and proj.failure.outcome == "cancelled"


def test_max_output_tokens_reached_is_incomplete() -> None:
    _, out = play(several_blocks_log(), max_output_tokens=4)
    assert out[-1]["type"] == "response.incomplete"
    assert out[-1]["response"]["status"] == "incomplete"
    assert out[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    _, out = play(several_blocks_log(), max_output_tokens=5)
    assert out[-1]["type"] == "response.completed"


def test_the_response_while_it_streams() -> None:
    log = text_log()
    proj = projection()
    proj.open()
    for event in log.events[:3]:
        proj.feed(event)
    now = proj.response()
    assert now["status"] == "in_progress" and now["usage"] is None
    assert now["output"][0]["status"] == "in_progress"
    assert now["output"][0]["content"][0]["text"] == "Hello there world"


@pytest.mark.parametrize("make", [text_log, tools_log, failed_log, cancelled_log, several_blocks_log])
def test_a_replay_from_every_cursor_is_the_tail(make: Any) -> None:
    """``starting_after=N`` gives exactly the events numbered after N, the same as the first
    time (the cursor maps back to a point of the log)."""
    _, full = play(make())
    assert [e["sequence_number"] for e in full] == list(range(len(full)))
    for after in range(-1, len(full)):
        reread = Log()
        reread.events = [Event.from_json(e.to_json()) for e in make().events]  # as a store hands them back
        _, tail = play(reread, after=after)
        assert tail == full[after + 1:], after
