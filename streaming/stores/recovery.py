"""Closing the log of a generation whose process died: plain Python, no I/O.

A store that finds a generation ``waiting`` or ``running`` with nobody running it (sqlite
after a restart, redis after a lease expired) hands its record, stored blocks and event
log to :func:`close_interrupted`, and writes back what it returns. The event log is the
truth: block texts and states are rebuilt from it (stored block snapshots may lag it by a
flush), every block still open is aborted and the log ends with ``generation.failed``
(code ``interrupted``), so a client resuming the stream is told instead of waiting forever.

The process streamed events to its clients before its batched writes stored them, so the
stored log may end before what a client saw. The store keeps how far the log may have been
sent (``Store.reserve_seq``); the events added here are numbered after that mark, never
after the stored log alone: a client that saw seq N is told, with a terminal event above
N, and no seq it saw names another event. The seqs between the stored log's end and the
mark are then missing from the log, and the terminal event says so (``events_lost``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from streaming.events import Event, EventType
from streaming.model import Block, ErrorInfo, Generation, GenerationState, StreamState, Usage
from streaming.wire import GenerationFold

__all__ = ["INTERRUPTED", "Recovered", "close_interrupted", "fold_tail"]

#: the error code of a generation whose process died while it ran
INTERRUPTED = "interrupted"

_DELTA = EventType.BLOCK_DELTA.value
_ENDS = {EventType.BLOCK_COMPLETED.value: StreamState.COMPLETE, EventType.BLOCK_ABORTED.value: StreamState.ABORTED}


def fold_tail(blocks: Iterable[Block], events: Iterable[Event]) -> None:
    """Bring stored snapshots of blocks still streaming up to their generation's log, in place.

    A running generation's blocks are stored when something other than text happens (a
    block created or ended, a tool call), not for every flush of text: a reader in
    another process folds the log's ``block.delta`` events onto the stored snapshot. Each
    delta says at which offset of its block's text it starts, so ``events`` may begin
    anywhere at or before the point the snapshot was taken: what the snapshot already
    has is skipped, what it lacks is added. ``block.completed`` and ``block.aborted`` end
    a block. A delta past the end of the text (the events do not reach back far enough)
    stops the fold of that block: its text stays a prefix of the truth.
    """
    open_ = {b.id: b for b in blocks if b.stream_state is StreamState.STARTED}
    for ev in events:
        if not open_:
            return
        kind = ev.type
        if kind == _DELTA:
            data = ev.data
            block = open_.get(data["block_id"])
            if block is None:
                continue
            have, offset, text = len(block.text), data["offset"], data["text"]
            if offset > have:
                del open_[block.id]  # a hole: nothing after it can be placed
            elif offset + len(text) > have:
                block.text += text[have - offset :]
        elif kind in _ENDS:
            block = open_.pop(ev.data["block_id"], None)
            if block is not None:
                block.stream_state = _ENDS[kind]

@dataclass
class Recovered:
    """What to write back: events to append (may be empty), the record, changed blocks."""

    events: list[Event]
    generation: Generation
    blocks: list[Block] = field(default_factory=list)


def close_interrupted(
    generation: Generation,
    blocks: Mapping[str, Block],
    events: Sequence[Event],
    *,
    message: str = "the server running this generation stopped before it finished",
    suggestion: str | None = "start the generation again",
    now: float | None = None,
    sent: int = 0,
) -> Recovered:
    """Fail ``generation`` with code ``interrupted`` (unless its log already ended).

    ``blocks`` are the stored blocks by id (any superset of the generation's); ``events``
    its whole stored log, in ``seq`` order; ``sent`` how far its log may have been sent
    to clients (the store's mark): the events added are numbered after it.
    """
    gen = generation.model_copy(deep=True)
    gen_id = gen.id
    new: list[Event] = []
    if not events:
        # Died before its first flush: write the start the log never got, so the log a
        # client reads is well formed (generation.started first).
        started = [blocks[b].model_copy(deep=True) for b in gen.output_block_ids if b in blocks]
        for b in started:
            b.text = ""
            b.stream_state = StreamState.STARTED
        head = gen.model_copy(deep=True)
        head.state = GenerationState.RUNNING
        head.error = None
        head.finished_at = None
        head.last_seq = 0
        new.append(
            Event(
                EventType.GENERATION_STARTED.value,
                1,
                gen_id,
                {
                    "generation": head.public(),
                    "blocks": [b.model_dump(mode="json") for b in started],
                    "capabilities": None,
                },
            )
        )

    # Replay the log: which blocks exist, their text and state.
    fold = GenerationFold(gen_id).apply_all([*events, *new])

    seq = (events[-1].seq if events else 0) + len(new)
    if not fold.finished:
        reason = f"generation failed: {INTERRUPTED}"
        for block_id in fold.open_blocks:
            seq += 1
            aborted = Event(EventType.BLOCK_ABORTED.value, seq, gen_id, {"block_id": block_id, "reason": reason})
            new.append(aborted)
            fold.apply(aborted)
        gen.error = ErrorInfo(code=INTERRUPTED, message=message, suggestion=suggestion)
        gen.state = GenerationState.FAILED
        seq += 1
        new.append(
            Event(
                EventType.GENERATION_FAILED.value,
                seq,
                gen_id,
                {"error": gen.error.model_dump(mode="json")},
            )
        )
    else:
        # The log ended but the record was not updated (died between the two writes).
        gen.state = GenerationState(fold.state)
        if gen.state is GenerationState.FAILED:
            gen.error = ErrorInfo.model_validate(fold.error)
        elif gen.state is GenerationState.SUCCEEDED:
            gen.usage = [Usage.model_validate(u) for u in fold.usage]
    stored = events[-1].seq if events else 0
    skip = max(0, sent - stored) if not fold.finished else 0
    if skip:
        # Events stored..sent may have reached clients and were never stored: number what
        # is added after them, and say that they were lost.
        lost = {"after": stored, "through": sent}
        assert gen.error is not None
        gen.error.message += f"; events {stored + 1} to {sent}, which it may have streamed, were lost"
        renumbered = []
        for ev in new:
            if ev.type == EventType.GENERATION_STARTED.value:  # written for an empty log
                renumbered.append(ev)
                continue
            data = ev.data
            if ev.type == EventType.GENERATION_FAILED.value:
                data = {"error": gen.error.model_dump(mode="json"), "events_lost": lost}
            renumbered.append(Event(ev.type, ev.seq + skip, gen_id, data))
        new = renumbered
        seq += skip
    gen.finished_at = gen.finished_at or (time.time() if now is None else now)
    gen.last_seq = seq
    for block_id in fold.order:
        if block_id not in gen.output_block_ids:
            gen.output_block_ids.append(block_id)

    fixed: list[Block] = []
    for replayed in fold.block_list():
        base = blocks.get(replayed.id) or Block.model_validate(replayed.block)
        block = base.model_copy(deep=True)
        block.text = replayed.text
        block.stream_state = StreamState(replayed.stream_state)
        block.request_id = block.request_id or gen_id
        fixed.append(block)
    for ev in new:
        ev.seal()
    return Recovered(new, gen, fixed)
