"""One shared check of DESIGN section 4's invariants over a generation's events."""

from __future__ import annotations

from typing import Any

TERMINAL = {"generation.completed", "generation.failed", "generation.cancelled"}


def _d(ev: Any) -> dict[str, Any]:
    return ev.to_dict() if hasattr(ev, "to_dict") else dict(ev)


def check_invariants(events: list[Any], *, final_blocks: dict[str, str] | None = None) -> dict[str, str]:
    """Assert the event-protocol invariants; return each block's text from its deltas.

    - seq starts at 1 and rises by exactly 1; one generation_id;
    - ``generation.started`` first; exactly one terminal event, last;
    - every created block is completed or aborted before the end, exactly once;
    - deltas only on open blocks, offsets contiguous;
    - ``tool.call`` follows its block's completion; each ``tool.result`` answers a call once;
    - if ``final_blocks`` (id -> text) is given, deltas concatenate to exactly that text.
    """
    evs = [_d(e) for e in events]
    assert evs, "no events"
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1)), "seq must be gapless from 1"
    assert len({e["generation_id"] for e in evs}) == 1
    assert evs[0]["type"] == "generation.started"
    terminals = [i for i, e in enumerate(evs) if e["type"] in TERMINAL]
    assert terminals == [len(evs) - 1], f"exactly one terminal event, last (at {terminals})"
    texts: dict[str, str] = {}
    state: dict[str, str] = {}
    for b in evs[0]["blocks"]:
        state[b["id"]] = "started"
        texts[b["id"]] = ""
    calls: dict[str, str] = {}
    answered: set[str] = set()
    for e in evs[1:]:
        t = e["type"]
        if t == "block.created":
            bid = e["block"]["id"]
            assert bid not in state, f"block {bid} created twice"
            state[bid] = "started"
            texts[bid] = ""
        elif t == "block.delta":
            bid = e["block_id"]
            assert state.get(bid) == "started", f"delta on a block that is {state.get(bid)}"
            assert e["offset"] == len(texts[bid]), "offset must equal the code points so far"
            texts[bid] += e["text"]
        elif t in ("block.completed", "block.aborted"):
            bid = e["block_id"]
            assert state.get(bid) == "started", f"{t} on a block that is {state.get(bid)}"
            state[bid] = "complete" if t == "block.completed" else "aborted"
            if t == "block.completed":
                assert e["length"] == len(texts[bid])
        elif t == "tool.call":
            assert state.get(e["block_id"]) == "complete", "tool.call before its block completed"
            assert e["call_id"] not in calls
            calls[e["call_id"]] = e["tool_name"]
        elif t == "tool.result":
            assert e["call_id"] in calls, "result for an unknown call"
            assert e["call_id"] not in answered, "call answered twice"
            answered.add(e["call_id"])
            assert state.get(e["block_id"]) == "complete"
    still_open = [b for b, s in state.items() if s == "started"]
    assert not still_open, f"blocks left started: {still_open}"
    if final_blocks is not None:
        for bid, text in final_blocks.items():
            assert texts.get(bid) == text, f"block {bid}: deltas do not make its final text"
    return texts
