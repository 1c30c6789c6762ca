"""Closing the log of a generation whose process died: plain Python, no I/O.

A store that finds a generation ``waiting`` or ``running`` with nobody running it (sqlite
after a restart, redis after a lease expired) hands its record, stored blocks and event
log to :func:`close_interrupted`, and writes back what it returns. The event log is the
truth: block texts and states are rebuilt from it (stored block snapshots may lag it by a
flush), every block still open is aborted and the log ends with ``generation.failed``
(code ``interrupted``), so a client resuming the stream is told instead of waiting forever.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from streaming.events import Event, EventType
from streaming.model import Block, ErrorInfo, Generation, GenerationState, StreamState, Usage

__all__ = ["INTERRUPTED", "Recovered", "close_interrupted"]

#: the error code of a generation whose process died while it ran
INTERRUPTED = "interrupted"

_ENDINGS = {
    EventType.GENERATION_COMPLETED.value: GenerationState.SUCCEEDED,
    EventType.GENERATION_FAILED.value: GenerationState.FAILED,
    EventType.GENERATION_CANCELLED.value: GenerationState.CANCELLED,
}


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
) -> Recovered:
    """Fail ``generation`` with code ``interrupted`` (unless its log already ended).

    ``blocks`` are the stored blocks by id (any superset of the generation's); ``events``
    its whole stored log, in ``seq`` order.
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
                    "generation": head.model_dump(mode="json"),
                    "blocks": [b.model_dump(mode="json") for b in started],
                    "capabilities": None,
                },
            )
        )

    # Replay the log: which blocks exist, their text and state.
    order: list[str] = []
    made: dict[str, Block] = {}
    texts: dict[str, list[str]] = {}
    states: dict[str, StreamState] = {}
    terminal: Event | None = None

    def opened(raw: dict[str, object]) -> None:
        block = Block.model_validate(raw)
        if block.id not in made:
            order.append(block.id)
        made[block.id] = block
        texts[block.id] = []
        states[block.id] = StreamState.STARTED

    for ev in [*events, *new]:
        data = ev.data
        if ev.type == EventType.GENERATION_STARTED.value:
            for raw in data.get("blocks") or []:
                opened(raw)
        elif ev.type == EventType.BLOCK_CREATED.value:
            opened(data["block"])
        elif ev.type == EventType.BLOCK_DELTA.value:
            texts.setdefault(data["block_id"], []).append(str(data["text"]))
        elif ev.type == EventType.BLOCK_COMPLETED.value:
            states[data["block_id"]] = StreamState.COMPLETE
        elif ev.type == EventType.BLOCK_ABORTED.value:
            states[data["block_id"]] = StreamState.ABORTED
        elif ev.terminal:
            terminal = ev

    seq = (events[-1].seq if events else 0) + len(new)
    if terminal is None:
        reason = f"generation failed: {INTERRUPTED}"
        for block_id in order:
            if states[block_id] is StreamState.STARTED:
                seq += 1
                new.append(
                    Event(
                        EventType.BLOCK_ABORTED.value,
                        seq,
                        gen_id,
                        {"block_id": block_id, "reason": reason},
                    )
                )
                states[block_id] = StreamState.ABORTED
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
        gen.state = _ENDINGS[terminal.type]
        if terminal.type == EventType.GENERATION_FAILED.value:
            gen.error = ErrorInfo.model_validate(terminal.data["error"])
        elif terminal.type == EventType.GENERATION_COMPLETED.value:
            gen.usage = [Usage.model_validate(u) for u in terminal.data.get("usage") or []]
    gen.finished_at = gen.finished_at or (time.time() if now is None else now)
    gen.last_seq = seq
    for block_id in order:
        if block_id not in gen.output_block_ids:
            gen.output_block_ids.append(block_id)

    fixed: list[Block] = []
    for block_id in order:
        base = blocks.get(block_id) or made[block_id]
        block = base.model_copy(deep=True)
        block.text = "".join(texts.get(block_id, []))
        block.stream_state = states[block_id]
        block.request_id = block.request_id or gen_id
        fixed.append(block)
    for ev in new:
        ev.seal()
    return Recovered(new, gen, fixed)
