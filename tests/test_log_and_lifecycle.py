"""The pure core, event in, event out: event log, block and generation lifecycle."""

from __future__ import annotations

import pytest

from streaming.errors import IllegalTransitionError
from streaming.events import Event
from streaming.lifecycle import (
    BLOCK_TRANSITIONS,
    GENERATION_TRANSITIONS,
    GenerationMachine,
    check_block_transition,
    check_generation_transition,
)
from streaming.log import EventLog
from streaming.model import Block, Generation, GenerationState, StreamState
from tests.invariants import check_invariants


def machine(coalesce: bool = False) -> GenerationMachine:
    gen = Generation(generator="test")
    return GenerationMachine(gen, EventLog(gen.id, coalesce=coalesce))


def test_log_seq_is_gapless_and_read_after_cursor() -> None:
    log = EventLog("g", coalesce=False)
    for i in range(5):
        log.append("block.delta", {"block_id": "b", "offset": i, "text": "x"})
    assert [e.seq for e in log.read(0)] == [1, 2, 3, 4, 5]
    assert [e.seq for e in log.read(3)] == [4, 5]
    assert [e.seq for e in log.read(2, limit=2)] == [3, 4]
    assert log.read(5) == [] and log.read(-4)[0].seq == 1


def test_log_refuses_events_after_the_terminal_one() -> None:
    log = EventLog("g")
    log.append("generation.completed", {"usage": []})
    assert log.closed
    with pytest.raises(IllegalTransitionError):
        log.append("block.delta", {})
    with pytest.raises(IllegalTransitionError):
        log.append_delta("b", 0, "x")


def test_waiters_fire_once_on_the_next_append() -> None:
    log = EventLog("g")
    calls: list[str] = []
    log.wait(lambda: calls.append("a"))
    log.wait(lambda: calls.append("b"))
    log.append("block.created", {})
    log.append("block.created", {})
    assert calls == ["a", "b"]
    waiter = lambda: calls.append("c")  # noqa: E731
    log.wait(waiter)
    log.cancel_wait(waiter)
    log.append("block.created", {})
    assert calls == ["a", "b"]


def test_coalescing_merges_only_unread_deltas_of_one_block() -> None:
    log = EventLog("g", coalesce=True)
    log.append_delta("b1", 0, "a")
    log.append_delta("b1", 1, "b")
    log.append_delta("b1", 2, "c")
    assert log.last_seq == 1
    (first,) = log.read(0)
    assert first.data["text"] == "abc" and first.data["offset"] == 0
    # Read (sealed): the next chunk is a new event, seq still gapless.
    log.append_delta("b1", 3, "d")
    log.append_delta("b2", 0, "x")  # another block: never merged
    log.append_delta("b1", 4, "e")
    assert [(e.seq, e.data["block_id"], e.data["text"]) for e in log.read(1)] == [
        (2, "b1", "d"),
        (3, "b2", "x"),
        (4, "b1", "e"),
    ]
    # A sealed event's JSON never changes.
    assert '"text":"abc"' in first.to_json()


def test_events_encode_once_and_round_trip() -> None:
    ev = Event.delta(7, "gen_1", "blk_1", 3, 'he said "hi" ✓\n')
    js = ev.to_json()
    assert ev.to_json() is js
    assert ev.to_sse() is ev.to_sse()
    assert ev.to_sse() == f"id: 7\nevent: block.delta\ndata: {js}\n\n".encode()
    back = Event.from_json(js)
    assert back.to_dict() == ev.to_dict() == {
        "type": "block.delta", "seq": 7, "generation_id": "gen_1",
        "block_id": "blk_1", "offset": 3, "text": 'he said "hi" ✓\n',
    }


def test_transition_tables_allow_only_the_designed_moves() -> None:
    assert BLOCK_TRANSITIONS[StreamState.STARTED] == {StreamState.COMPLETE, StreamState.ABORTED}
    for final in (StreamState.COMPLETE, StreamState.ABORTED):
        for target in StreamState:
            with pytest.raises(IllegalTransitionError):
                check_block_transition("b", final, target)
    check_generation_transition("g", GenerationState.WAITING, GenerationState.RUNNING)
    for final in (GenerationState.SUCCEEDED, GenerationState.FAILED, GenerationState.CANCELLED):
        assert GENERATION_TRANSITIONS[final] == frozenset()
        with pytest.raises(IllegalTransitionError):
            check_generation_transition("g", final, GenerationState.RUNNING)
    with pytest.raises(IllegalTransitionError):
        check_generation_transition("g", GenerationState.WAITING, GenerationState.SUCCEEDED)


def test_machine_success_completes_open_blocks() -> None:
    m = machine()
    a, b = Block(), Block()
    m.start([a, b], None)
    m.append(a.id, "héllo ")
    m.append(a.id, "wörld")
    m.append(b.id, "")  # empty chunks make no event
    m.complete_block(b.id)
    m.succeed()
    texts = check_invariants(m.log.events, final_blocks={a.id: "héllo wörld", b.id: ""})
    assert texts[a.id] == "héllo wörld"
    assert m.log.events[2].data["offset"] == 6  # code points, not bytes
    assert m.blocks[a.id].stream_state is StreamState.COMPLETE
    assert m.generation.state is GenerationState.SUCCEEDED


@pytest.mark.parametrize("ending", ["fail", "cancel"])
def test_machine_failure_and_cancel_abort_every_open_block(ending: str) -> None:
    m = machine()
    blocks = [Block(), Block(), Block()]
    m.start(blocks, None)
    m.append(blocks[0].id, "partial")
    m.complete_block(blocks[1].id)
    late = Block()
    m.create_block(late)
    if ending == "fail":
        m.fail("plugin_error", "boom")
        assert m.log.events[-1].data["error"]["code"] == "plugin_error"
    else:
        m.cancel("user pressed stop")
    check_invariants(m.log.events)
    states = [m.blocks[b.id].stream_state for b in [*blocks, late]]
    assert states == [StreamState.ABORTED, StreamState.COMPLETE, StreamState.ABORTED, StreamState.ABORTED]
    assert m.blocks[blocks[0].id].text == "partial"
    with pytest.raises(IllegalTransitionError):
        m.append(blocks[0].id, "more")
    with pytest.raises(IllegalTransitionError):
        m.succeed()


def test_machine_refuses_illegal_moves() -> None:
    m = machine()
    a = Block()
    with pytest.raises(IllegalTransitionError):
        m.create_block(a)  # not running yet
    m.start([a], None)
    m.complete_block(a.id)
    with pytest.raises(IllegalTransitionError):
        m.complete_block(a.id)
    with pytest.raises(IllegalTransitionError):
        m.abort_block(a.id, "late")
    with pytest.raises(IllegalTransitionError):
        m.create_block(a)  # same id twice


def test_bound_block_writes_through_its_writer() -> None:
    block = Block()
    with pytest.raises(Exception) as info:
        block.append_stream("x")
    assert "not open for streaming" in str(info.value)
    copy = block.model_copy(deep=True)
    assert copy._writer is None


def test_a_coalesced_delta_tells_its_whole_text_once_another_event_follows() -> None:
    # Nobody read the delta while it absorbed chunks; once it is no longer the tail, its
    # data is its whole text (not its first chunk).
    log = EventLog("g", coalesce=True)
    first = log.append_delta("b", 0, "he")
    log.append_delta("b", 2, "llo")
    log.append("block.completed", {"block_id": "b", "length": 5})
    assert first.data["text"] == "hello" and first.to_dict()["text"] == "hello"
    second = log.append_delta("c", 0, "x")
    log.append_delta("c", 1, "y")
    log.append_delta("d", 0, "z")  # another block's delta follows it
    assert second.data["text"] == "xy"


def test_a_coalesced_delta_tells_its_whole_text_before_it_is_sealed() -> None:
    from streaming.events import Event

    ev = Event.delta(1, "gen_x", "blk_x", 0, "a ")
    assert ev.try_extend("blk_x", "b ") and ev.try_extend("blk_x", "c ")
    assert ev.data["text"] == "a b c "  # read before any encoding
    assert ev.try_extend("blk_x", "d ")  # still open to the next chunk
    assert ev.to_dict()["text"] == "a b c d "
    assert not ev.try_extend("blk_y", "x")
