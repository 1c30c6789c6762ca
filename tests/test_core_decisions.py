"""Decisions of the core, without an event loop: how a run ends, who answers a tool call,
what the next round sees, and the capability block a plugin receives."""

from __future__ import annotations

import pytest

from streaming.capabilities import (
    CapabilityPluginRequest,
    FunctionCallingSupport,
    FunctionCallInvocation,
    RequestLevel,
    Tool,
)
from streaming.capability_block import capability_block, offered_tools
from streaming.errors import (
    GenerationCancelledError,
    InvalidRequestError,
    PluginError,
    StreamingError,
    ToolTimeoutError,
)
from streaming.history import next_history, turn_ends_with_client_calls
from streaming.lifecycle import GenerationMachine
from streaming.log import EventLog
from streaming.model import Block, Generation, GenerationState, MimeTypes
from streaming.outcome import apply_outcome, terminal_outcome
from streaming.routing import AnsweredBy, parse_tool_call, route_tool_call
from tests.invariants import check_invariants

# -- the terminal outcome, event in, event out --


def running(text: str = "hel") -> tuple[GenerationMachine, Block]:
    gen = Generation(generator="test")
    machine = GenerationMachine(gen, EventLog(gen.id, coalesce=False))
    block = Block(mime_type=MimeTypes.TXT)
    machine.start([block], None)
    machine.append(block.id, text)
    return machine, block


def end(**happened: object) -> list:
    machine, _ = running()
    terminal = apply_outcome(machine, terminal_outcome(**happened))  # type: ignore[arg-type]
    events = machine.log.read(0)
    check_invariants(events)
    assert terminal is events[-1]
    return events


def test_a_plugin_that_returns_completes_and_its_open_block_completes() -> None:
    events = end()
    assert [e.type for e in events[-2:]] == ["block.completed", "generation.completed"]


def test_a_plugin_that_raises_fails_as_plugin_error_and_aborts_its_block() -> None:
    events = end(raised=ValueError("model exploded"))
    assert [e.type for e in events[-2:]] == ["block.aborted", "generation.failed"]
    assert events[-1].data["error"]["code"] == "plugin_error"
    assert "ValueError: model exploded" in events[-1].data["error"]["message"]


def test_a_streaming_error_is_told_as_it_is_even_inside_an_exception_group() -> None:
    events = end(raised=ExceptionGroup("tg", [ToolTimeoutError("no result")]))
    assert events[-1].data["error"]["code"] == "tool_timeout"


def test_a_cancel_asked_for_cancels_whatever_the_plugin_raised_meanwhile() -> None:
    for raised in (None, GenerationCancelledError("x"), ValueError("torn down")):
        events = end(raised=raised, cancel_reason="client left", cancelled=True)
        assert events[-1].type == "generation.cancelled"
        assert events[-1].data["reason"] == "client left"
        assert events[-2].type == "block.aborted"


def test_a_cancel_asked_for_before_the_run_began_still_cancels() -> None:
    assert end(cancel_reason="too late")[-1].type == "generation.cancelled"


def test_a_cancel_nobody_asked_for_is_the_duration_limit() -> None:
    outcome = terminal_outcome(cancelled=True)
    assert outcome.timed_out and outcome.state is GenerationState.FAILED
    assert end(cancelled=True)[-1].data["error"]["code"] == "max_duration"


def test_a_stop_with_an_error_wins_over_everything_else() -> None:
    stop = StreamingError("the server shut down", code="shutdown")
    events = end(raised=ValueError("x"), stop_error=stop, cancel_reason="shutdown", cancelled=True)
    assert events[-1].type == "generation.failed"
    assert events[-1].data["error"]["code"] == "shutdown"


def test_an_ended_machine_takes_no_second_terminal_event() -> None:
    machine, _ = running()
    machine.cancel("first")
    assert apply_outcome(machine, terminal_outcome(raised=ValueError("x"))) is None
    assert [e.type for e in machine.log.read(0)].count("generation.cancelled") == 1


# -- who answers a tool call --

WEATHER = Tool(
    name="weather",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def test_a_declared_tool_with_good_arguments_is_answered_by_the_client() -> None:
    route = route_tool_call("weather", {"city": "Oslo"}, {"weather": WEATHER}, set())
    assert route.answered_by is AnsweredBy.CLIENT and route.client_side and route.problem is None


def test_a_server_tool_that_was_offered_is_answered_by_the_server() -> None:
    route = route_tool_call("weather", {"anything": 1}, {"weather": WEATHER}, {"weather"})
    assert route.answered_by is AnsweredBy.SERVER and not route.client_side


def test_calls_nobody_can_answer_get_an_error_at_once() -> None:
    unknown = route_tool_call("nope", {}, {"weather": WEATHER}, set())
    assert unknown.answered_by is AnsweredBy.NOBODY and unknown.problem == "unknown tool 'nope'"
    not_offered = route_tool_call("clock", {}, {"weather": WEATHER}, {"clock"})
    assert not_offered.problem == "tool 'clock' was not offered"
    bad = route_tool_call("weather", {"city": 3}, {"weather": WEATHER}, set())
    assert bad.answered_by is AnsweredBy.NOBODY and bad.problem.startswith("invalid arguments:")
    assert not bad.client_side


def test_a_tool_call_block_that_is_not_json_is_an_invalid_tool_call() -> None:
    good = FunctionCallInvocation(tool_name="weather", args={"city": "Oslo"}, call_id="c1").to_block()
    assert parse_tool_call(good).args == {"city": "Oslo"}
    broken = Block(text="{not json", mime_type=MimeTypes.FUNCTION_CALL_INVOCATION)
    with pytest.raises(PluginError) as err:
        parse_tool_call(broken)
    assert err.value.code == "invalid_tool_call"


# -- what the next round sees --


def test_the_next_round_sees_outputs_and_calls_in_order_then_results_in_call_order() -> None:
    # Round 1 created text t1 and calls c1, c2; their results arrived r2 first, then r1.
    history = next_history([], ["t1", "c1", "c2", "r2", "r1"], ["r1", "r2"])
    assert history == ["t1", "c1", "c2", "r1", "r2"]
    # Round 2 added t2 and c3 answered by r3: earlier rounds stay as they were.
    created = ["t1", "c1", "c2", "r2", "r1", "t2", "c3", "r3"]
    assert next_history(history, created, ["r3"]) == [*history, "t2", "c3", "r3"]


def test_a_round_with_a_client_call_ends_the_turn_only_when_the_client_answers_next_time() -> None:
    assert turn_ends_with_client_calls("return", [False, True])
    assert not turn_ends_with_client_calls("return", [False, False])
    assert not turn_ends_with_client_calls("wait", [True])


# -- the capability block --


def test_no_capability_and_no_tool_means_no_block() -> None:
    assert capability_block([], {}) is None


def test_offered_tools_are_listed_in_function_calling_at_best_effort() -> None:
    block = capability_block([], {"weather": WEATHER})
    assert block is not None
    caps = CapabilityPluginRequest.from_block(block).requested_capabilities
    assert [(c.name, c.request_level) for c in caps] == [(FunctionCallingSupport.NAME, RequestLevel.BEST_EFFORT)]
    assert [t["name"] for t in caps[0].model_dump()["functions"]] == ["weather"]


def test_tools_merge_into_the_function_calling_capability_asked_for() -> None:
    listed = Tool(name="clock")
    asked = [{"name": FunctionCallingSupport.NAME, "request_level": "native",
              "functions": [listed.model_dump()]}]
    block = capability_block(asked, {"weather": WEATHER, "clock": listed})
    assert block is not None
    caps = CapabilityPluginRequest.from_block(block).requested_capabilities
    assert len(caps) == 1 and caps[0].request_level is RequestLevel.NATIVE
    assert [t["name"] for t in caps[0].model_dump()["functions"]] == ["clock", "weather"]


def test_a_malformed_capability_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequestError):
        capability_block([{"name": "x", "request_level": "sometimes"}], {})


def test_tools_named_by_a_string_must_be_server_tools() -> None:
    lookup = {"weather": WEATHER}.get
    assert offered_tools(["weather", Tool(name="clock")], lookup) == {"weather": WEATHER, "clock": Tool(name="clock")}
    with pytest.raises(InvalidRequestError):
        offered_tools(["nope"], lookup)


def test_ids_minted_later_sort_later_and_never_repeat() -> None:
    import re
    import time

    from streaming.model import new_id

    minted = []
    for _ in range(5):
        minted += [new_id("gen") for _ in range(2000)]
        time.sleep(0.002)
    assert len(set(minted)) == len(minted)
    assert all(re.fullmatch(r"gen_[0-9a-f]{32}", i) for i in minted)
    # Within a millisecond the order is random; across milliseconds it is the minting order
    # (a B-tree index takes each new id near the previous ones).
    stamps = [int(i[4:16], 16) for i in minted]
    assert stamps == sorted(stamps)
    assert abs(stamps[-1] - time.time() * 1000) < 5_000
    before = new_id("x")[2:14]
    time.sleep(0.002)
    for made in (Block(), Generation(generator="echo")):
        assert made.id.split("_", 1)[1][:12] > before
