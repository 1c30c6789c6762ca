"""One shared check of the event protocol's invariants (docs/protocol.md, "Events")."""

from __future__ import annotations

from typing import Any

from streaming.wire import GenerationFold, ProtocolError


def check_invariants(events: list[Any], *, final_blocks: dict[str, str] | None = None) -> dict[str, str]:
    """Assert the event-protocol invariants; return each block's text from its deltas.

    The strict fold of :mod:`streaming.wire` checks each event as it applies it:

    - seq starts at 1 and rises by exactly 1; one generation_id;
    - ``generation.started`` first; exactly one terminal event, last;
    - every created block is completed or aborted before the end, exactly once;
    - deltas only on open blocks, offsets contiguous (in code points);
    - ``tool.call`` follows its block's completion; each ``tool.result`` answers a call once;

    and if ``final_blocks`` (id -> text) is given, deltas concatenate to exactly that text.
    """
    assert events, "no events"
    fold = GenerationFold(strict=True)
    try:
        for event in events:
            fold.apply(event if hasattr(event, "to_dict") else dict(event))
        fold.check_complete()
    except ProtocolError as exc:
        raise AssertionError(str(exc)) from None
    texts = fold.texts
    if final_blocks is not None:
        for bid, text in final_blocks.items():
            assert texts.get(bid) == text, f"block {bid}: deltas do not make its final text"
    return texts
