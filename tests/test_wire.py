"""The wire module on its own, event in, event out: the fold, the decoders, the errors."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streaming.errors as E
from streaming.lifecycle import GenerationMachine
from streaming.log import EventLog
from streaming.model import Block, Generation, MimeTypes, Usage
from streaming.wire import (
    ERROR_CLASSES,
    Event,
    EventDecoder,
    GenerationFold,
    ProtocolError,
    error_from_dict,
)


def tool_generation() -> tuple[list[Event], dict[str, str]]:
    """A whole generation: two preallocated blocks, a tool round trip, a later block, usage."""
    m = GenerationMachine(Generation(generator="test"), EventLog("gen_w", coalesce=False))
    m.generation.id = "gen_w"
    a, b = Block(), Block(mime_type="application/json")
    m.start([a, b], {"function_calling": "native"})
    m.append(a.id, "héllo ")
    m.append(a.id, "wörld 🎉")
    invocation = Block(mime_type=MimeTypes.FUNCTION_CALL_INVOCATION, text='{"tz":"UTC"}')
    m.add_block_text(invocation, output=False)
    m.tool_call("call_1", invocation.id, "get_time", {"tz": "UTC"}, client_side=True)
    m.tool_result("call_1", invocation.id, "get_time", ["noon"], False)
    m.complete_block(b.id)
    late = Block()
    m.create_block(late)
    m.append(late.id, "it is noon")
    m.succeed([Usage(operation_amount=42)])
    texts = {a.id: "héllo wörld 🎉", b.id: "", invocation.id: '{"tz":"UTC"}', late.id: "it is noon"}
    return list(m.log.events), texts


def snapshot(fold: GenerationFold) -> tuple:
    return (
        fold.state,
        fold.last_seq,
        fold.order,
        {bid: (b.text, b.length, b.stream_state, b.reason) for bid, b in fold.blocks.items()},
        {cid: (c.tool_name, c.args, c.client_side, c.result, c.is_error) for cid, c in fold.tool_calls.items()},
        fold.usage,
        fold.error,
        fold.reason,
        fold.finished,
    )


def test_fold_builds_the_generation_state() -> None:
    events, texts = tool_generation()
    fold = GenerationFold(strict=True).apply_all(events)
    fold.check_complete()
    assert fold.generation_id == "gen_w"
    assert fold.state == "succeeded" and fold.finished
    assert fold.texts == texts
    assert [fold.blocks[b].stream_state for b in fold.order] == ["complete"] * 4
    assert fold.text() == "héllo wörld 🎉it is noon"  # the text/* blocks, in order
    call = fold.tool_calls["call_1"]
    assert (call.tool_name, call.args, call.client_side, call.result, call.is_error) == (
        "get_time", {"tz": "UTC"}, True, ["noon"], False,
    )
    assert fold.usage[0]["operation_amount"] == 42
    assert fold.capabilities == {"function_calling": "native"}
    assert fold.last_seq == len(events) and fold.generation["state"] == "succeeded"


def test_fold_takes_events_as_objects_or_json() -> None:
    events, _ = tool_generation()
    as_objects = GenerationFold().apply_all(events)
    as_json = GenerationFold().apply_all(Event.from_json(ev.to_json()).to_dict() for ev in events)
    assert snapshot(as_objects) == snapshot(as_json)


def test_a_resume_that_replays_events_changes_nothing() -> None:
    events, _ = tool_generation()
    once = GenerationFold().apply_all(events)
    fold = GenerationFold()
    cut = len(events) // 2
    applied = [ev for e in events[:cut] for ev in fold.apply(e)]
    # Reconnected after seq 3: the server (or a second tab) sends events 4.. again.
    applied += [ev for e in events[3:] for ev in fold.apply(e)]
    assert applied == events  # each exactly once
    assert snapshot(fold) == snapshot(once)
    assert all(fold.apply(e) == [] for e in events)  # a whole replay is a no-op


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(0, 3))
def test_any_order_with_duplicates_ends_in_the_same_state(rng: random.Random, copies: int) -> None:
    events, _ = tool_generation()
    expected = snapshot(GenerationFold().apply_all(events))
    shuffled = events + [rng.choice(events) for _ in range(copies * 5)]
    rng.shuffle(shuffled)
    fold = GenerationFold()
    applied = [ev for e in shuffled for ev in fold.apply(e)]
    assert [e.seq for e in applied] == list(range(1, len(events) + 1))
    assert snapshot(fold) == expected


def test_events_that_come_early_wait_for_the_gap_to_fill() -> None:
    events, _ = tool_generation()
    fold = GenerationFold()
    assert fold.apply(events[0]) == [events[0]]
    assert fold.apply(events[2]) == [] and fold.apply(events[3]) == []
    assert fold.last_seq == 1
    assert fold.apply(events[1]) == events[1:4]
    assert fold.last_seq == 4


def test_text_is_applied_by_offset_over_a_snapshot() -> None:
    """A block snapshot (``GET /generations/{id}``) newer than the cursor: the deltas it
    already holds add nothing, a delta that overlaps it adds only its new part."""
    started = {"type": "generation.started", "seq": 1, "generation_id": "g",
               "generation": {"id": "g", "state": "running"}, "blocks": [{"id": "b", "text": ""}]}
    deltas = [
        {"type": "block.delta", "seq": 2, "generation_id": "g", "block_id": "b", "offset": 0, "text": "日本"},
        {"type": "block.delta", "seq": 3, "generation_id": "g", "block_id": "b", "offset": 2, "text": "語🎉ab"},
        {"type": "block.delta", "seq": 4, "generation_id": "g", "block_id": "b", "offset": 6, "text": "cd"},
    ]
    fold = GenerationFold("g", blocks=[{"id": "b", "text": "日本語🎉", "stream_state": "started"}])
    fold.apply(started)
    assert fold.blocks["b"].text == "日本語🎉"  # the snapshot is kept, not reset
    for ev in deltas:
        fold.apply(ev)
    assert fold.blocks["b"].text == "日本語🎉abcd"
    assert fold.blocks["b"].parts == ["日本語🎉", "ab", "cd"]  # what each step added
    assert fold.blocks["b"].length == 8


def test_a_fold_resumed_after_a_cursor_skips_what_came_before() -> None:
    events, texts = tool_generation()
    cursor = 5
    whole = GenerationFold().apply_all(events)
    # What GET /generations/{id} said at seq 5 (text and states as of then or later).
    at_cursor = GenerationFold().apply_all(events[:cursor])
    blocks = [{**b.block, "text": b.text, "stream_state": b.stream_state} for b in at_cursor.block_list()]
    fold = GenerationFold("gen_w", generation=at_cursor.generation, blocks=blocks, after=cursor)
    assert all(fold.apply(e) == [] for e in events[:cursor])
    fold.apply_all(events[cursor:])
    assert fold.texts == texts
    assert fold.state == whole.state and fold.last_seq == whole.last_seq


def test_terminal_events_set_state_error_and_reason() -> None:
    def ended(kind: str, **data: object) -> GenerationFold:
        fold = GenerationFold(strict=True)
        fold.apply({"type": "generation.started", "seq": 1, "generation_id": "g",
                    "generation": {"id": "g", "state": "running"}, "blocks": [{"id": "b"}]})
        fold.apply({"type": "block.aborted", "seq": 2, "generation_id": "g", "block_id": "b", "reason": "why"})
        fold.apply({"type": kind, "seq": 3, "generation_id": "g", **data})
        return fold

    failed = ended("generation.failed", error={"code": "plugin_error", "message": "boom", "suggestion": None})
    assert failed.state == "failed" and failed.error == {"code": "plugin_error", "message": "boom", "suggestion": None}
    assert failed.blocks["b"].stream_state == "aborted" and failed.blocks["b"].reason == "why"
    cancelled = ended("generation.cancelled", reason="user pressed stop")
    assert cancelled.state == "cancelled" and cancelled.reason == "user pressed stop"


def _ev(seq: int, kind: str, **data: object) -> dict[str, object]:
    return {"type": kind, "seq": seq, "generation_id": "g", **data}


START = _ev(1, "generation.started", generation={"id": "g"}, blocks=[{"id": "b"}])


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([START, _ev(3, "block.completed", block_id="b", length=0)], "rise by exactly 1"),
        ([START, START], "rise by exactly 1"),
        ([_ev(1, "block.created", block={"id": "c"})], "not generation.started"),
        ([START, {**_ev(2, "block.aborted", block_id="b"), "generation_id": "h"}], "an event of h"),
        ([START, _ev(2, "block.created", block={"id": "b"})], "created twice"),
        ([START, _ev(2, "block.delta", block_id="x", offset=0, text="a")], "never created"),
        ([START, _ev(2, "block.delta", block_id="b", offset=1, text="a")], "offset 1"),
        ([START, _ev(2, "block.delta", block_id="b", offset=0, text="ab"),
          _ev(3, "block.completed", block_id="b", length=3)], "length 3"),
        ([START, _ev(2, "block.aborted", block_id="b"),
          _ev(3, "block.delta", block_id="b", offset=0, text="a")], "which is aborted"),
        ([START, _ev(2, "block.completed", block_id="b", length=0),
          _ev(3, "block.aborted", block_id="b")], "which is complete"),
        ([START, _ev(2, "tool.call", call_id="c", block_id="b", tool_name="t", args={})], "before its block"),
        ([START, _ev(2, "block.completed", block_id="b", length=0),
          _ev(3, "tool.result", call_id="c", block_id="b", tool_name="t", result=[])], "unknown call"),
        ([START, _ev(2, "block.completed", block_id="b", length=0),
          _ev(3, "tool.call", call_id="c", block_id="b", tool_name="t", args={}),
          _ev(4, "tool.result", call_id="c", block_id="b", tool_name="t", result=[]),
          _ev(5, "tool.result", call_id="c", block_id="b", tool_name="t", result=[])], "answered before"),
        ([START, _ev(2, "generation.completed", usage=[])], "blocks left started"),
        ([START, _ev(2, "block.aborted", block_id="b"), _ev(3, "generation.cancelled", reason="x"),
          _ev(4, "generation.failed", error={})], "after the terminal event"),
        ([START, _ev(2, "block.sideways", block_id="b")], "unknown event type"),
    ],
)
def test_strict_fold_names_the_broken_invariant(events: list[dict[str, object]], message: str) -> None:
    fold = GenerationFold(strict=True)
    with pytest.raises(ProtocolError, match=message):
        fold.apply_all(events)


def test_strict_fold_wants_a_terminal_event() -> None:
    fold = GenerationFold(strict=True).apply_all([START])
    with pytest.raises(ProtocolError, match="no terminal event"):
        fold.check_complete()


# -- decoding --


def test_event_decoder_gives_the_same_events_however_the_bytes_are_split() -> None:
    events, _ = tool_generation()
    stream = b": ping\n\n".join(ev.to_sse() for ev in events) + b": ping\n\n"
    whole = EventDecoder().decode(stream)
    assert whole == events
    rng = random.Random(3)
    for _ in range(30):
        decoder = EventDecoder()
        out: list[Event] = []
        pos = 0
        while pos < len(stream):
            step = rng.randint(1, 40)
            out += decoder.decode(stream[pos : pos + step])
            pos += step
        assert out + decoder.flush() == events
    assert EventDecoder().decode(stream[:-3]) == events  # the last heartbeat cut short


def test_event_decoder_raises_an_error_frame_after_the_events_before_it() -> None:
    events, _ = tool_generation()
    error = E.LimitExceededError("too many subscribers", suggestion="wait")
    frame = f"event: error\ndata: {json.dumps({'error': error.to_dict()})}\n\n"
    decoder = EventDecoder()
    assert decoder.decode(events[0].to_sse() + frame.encode()) == [events[0]]
    with pytest.raises(E.LimitExceededError) as raised:
        decoder.flush()
    assert raised.value.suggestion == "wait"
    with pytest.raises(E.LimitExceededError):
        EventDecoder().decode(frame.encode())


@pytest.mark.parametrize("data", ["not json", "[1, 2]", '{"no": "type"}'])
def test_event_decoder_refuses_frames_that_are_not_events(data: str) -> None:
    with pytest.raises(ProtocolError):
        EventDecoder().decode(f"data: {data}\n\n".encode())


# -- errors --


def _error_classes() -> set[type[E.StreamingError]]:
    return {
        obj for name in E.__all__ if isinstance(obj := getattr(E, name), type) and issubclass(obj, E.StreamingError)
    }


def test_every_error_of_streaming_errors_is_on_the_wire() -> None:
    assert set(ERROR_CLASSES.values()) == _error_classes()
    for cls in _error_classes():
        err = cls("msg", suggestion="hint", details={"retry_after": 2})
        back = error_from_dict(err.to_dict())
        assert type(back) is cls
        assert (back.code, back.message, back.suggestion, back.details) == (cls.code, "msg", "hint", {"retry_after": 2})


def test_unknown_codes_fall_back_by_status_and_keep_their_code() -> None:
    back = error_from_dict({"code": "max_duration", "message": "too long"})
    assert type(back) is E.StreamingError and back.code == "max_duration"
    back = error_from_dict({"code": "not_acceptable", "message": "no"}, status=409)
    assert type(back) is E.ConflictError and back.code == "not_acceptable"
    # 503 is the status of two trees (store, model): neither is guessed.
    back = error_from_dict({"code": "log_gap", "message": "gap"}, status=503)
    assert type(back) is E.StreamingError and back.code == "log_gap"
    back = error_from_dict({"code": "unsupported_capability", "message": "no"})
    assert isinstance(back, E.InvalidRequestError) and back.code == "unsupported_capability"
    assert error_from_dict({}).code == "internal_error"


# -- the written protocol --


def test_docs_protocol_names_every_event_type_and_error_code() -> None:
    from pathlib import Path

    from streaming.wire import EventType

    doc = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    missing = [f"`{t.value}`" for t in EventType if f"`{t.value}`" not in doc]
    for cls in _error_classes():
        row = f"| `{cls.code}` | {cls.status} | `{cls.__name__}` |"
        if row not in doc:
            missing.append(row)
    assert not missing, f"docs/protocol.md does not describe: {missing}"


def test_docs_protocol_lists_every_route() -> None:
    import re
    from pathlib import Path

    from starlette.routing import Route, WebSocketRoute
    from streaming.server.app import create_app

    doc = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    missing = []
    for route in create_app().routes:
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", getattr(route, "path", ""))
        if isinstance(route, WebSocketRoute):
            names = [f"WS {path}"]
        elif isinstance(route, Route):
            names = [f"{m} {path}" for m in sorted((route.methods or set()) - {"HEAD"})]
        else:
            continue
        missing += [name for name in names if f"`{name}`" not in doc]
    assert not missing, f"docs/protocol.md does not list: {missing}"


def test_a_crash_ending_applies_across_the_seqs_it_says_were_lost() -> None:
    gid = "gen_c"
    started = {"type": "generation.started", "seq": 1, "generation_id": gid,
               "generation": {"id": gid, "state": "running"},
               "blocks": [{"id": "b1", "index": 0, "mime_type": "text/plain", "text": "", "stream_state": "started"}]}
    seen = [started, {"type": "block.delta", "seq": 2, "generation_id": gid, "block_id": "b1", "offset": 0, "text": "ab"}]
    ending = [
        {"type": "block.aborted", "seq": 4098, "generation_id": gid, "block_id": "b1", "reason": "interrupted"},
        {"type": "generation.failed", "seq": 4099, "generation_id": gid,
         "error": {"code": "interrupted", "message": "lost"}, "events_lost": {"after": 1, "through": 4097}},
    ]
    # The client saw seqs 1-2 (2 was never stored); the recovered log is 1, then the ending.
    fold = GenerationFold().apply_all(seen)
    fold.apply(ending[0])  # held: it declares no loss itself
    assert not fold.finished
    assert [e["seq"] for e in fold.apply(ending[1])] == [4098, 4099]  # type: ignore[index]
    assert fold.finished and fold.state == "failed" and fold.last_seq == 4099
    assert fold.blocks["b1"].text == "ab" and fold.blocks["b1"].done
    # An ending without a declared loss still waits for the gap.
    other = GenerationFold().apply_all(seen)
    other.apply({**ending[1], "events_lost": None})
    assert not other.finished
