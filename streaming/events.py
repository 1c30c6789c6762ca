"""Typed events of a generation's stream, each encoded to JSON once.

Every event has ``type``, ``seq`` and ``generation_id``; ``seq`` starts at 1 and rises by
exactly 1 per event of a generation. An event is built once, appended to the generation's
log, and its JSON (and SSE frame) is computed at most once however many subscribers read
it. Until that first encoding a ``block.delta`` at the tail of a log may still absorb the
next chunk of the same block (delta coalescing); encoding seals it.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

__all__ = ["TERMINAL_TYPES", "Event", "EventType", "encode_json"]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode_json(value: Any) -> str:
    """Compact JSON, UTF-8 text kept as is."""
    return _dumps(value)


class EventType(StrEnum):
    GENERATION_STARTED = "generation.started"
    BLOCK_CREATED = "block.created"
    BLOCK_DELTA = "block.delta"
    BLOCK_COMPLETED = "block.completed"
    BLOCK_ABORTED = "block.aborted"
    TOOL_CALL = "tool.call"
    TOOL_RESULT = "tool.result"
    GENERATION_COMPLETED = "generation.completed"
    GENERATION_FAILED = "generation.failed"
    GENERATION_CANCELLED = "generation.cancelled"


TERMINAL_TYPES = frozenset(
    {
        EventType.GENERATION_COMPLETED.value,
        EventType.GENERATION_FAILED.value,
        EventType.GENERATION_CANCELLED.value,
    }
)


class Event:
    """One event of a generation. Fields other than the envelope live in ``data``."""

    __slots__ = ("type", "seq", "generation_id", "data", "_json", "_sse", "_parts")

    def __init__(self, type: str, seq: int, generation_id: str, data: dict[str, Any]) -> None:
        self.type = type
        self.seq = seq
        self.generation_id = generation_id
        self.data = data
        self._json: str | None = None
        self._sse: bytes | None = None
        # For a coalescable delta: the text parts, joined when sealed.
        self._parts: list[str] | None = None

    # -- construction helpers --

    @classmethod
    def delta(cls, seq: int, generation_id: str, block_id: str, offset: int, text: str) -> Event:
        ev = cls(
            EventType.BLOCK_DELTA.value,
            seq,
            generation_id,
            {"block_id": block_id, "offset": offset, "text": text},
        )
        ev._parts = [text]
        return ev

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Event:
        """Rebuild an event from its JSON object (as a client or store reads it).

        Raises:
            KeyError: a required envelope field is missing.
        """
        data = {k: v for k, v in obj.items() if k not in ("type", "seq", "generation_id")}
        return cls(str(obj["type"]), int(obj["seq"]), str(obj["generation_id"]), data)

    @classmethod
    def from_json(cls, text: str | bytes) -> Event:
        ev = cls.from_dict(json.loads(text))
        ev._json = text if isinstance(text, str) else text.decode()
        return ev

    # -- coalescing --

    @property
    def sealed(self) -> bool:
        return self._json is not None

    def try_extend(self, block_id: str, text: str) -> bool:
        """Absorb ``text`` into this unsealed delta of the same block; False if it cannot."""
        if self._json is not None or self._parts is None or self.data["block_id"] != block_id:
            return False
        self._parts.append(text)
        return True

    def seal(self) -> None:
        if self._json is None:
            self.to_json()

    # -- encoding (at most once) --

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    def to_dict(self) -> dict[str, Any]:
        self._join()
        out: dict[str, Any] = {"type": self.type, "seq": self.seq, "generation_id": self.generation_id}
        out.update(self.data)
        return out

    def _join(self) -> None:
        parts = self._parts
        if parts is not None and len(parts) > 1:
            joined = "".join(parts)
            parts[:] = [joined]
            self.data["text"] = joined

    def to_json(self) -> str:
        js = self._json
        if js is None:
            self._join()
            self._parts = None
            if self.type == "block.delta":
                d = self.data
                js = (
                    f'{{"type":"block.delta","seq":{self.seq},"generation_id":"{self.generation_id}",'
                    f'"block_id":"{d["block_id"]}","offset":{d["offset"]},"text":{_dumps(d["text"])}}}'
                )
            else:
                js = _dumps(self.to_dict())
            self._json = js
        return js

    def to_sse(self) -> bytes:
        """The SSE frame: ``id``, ``event`` and one ``data`` line (JSON has no newline)."""
        sse = self._sse
        if sse is None:
            sse = f"id: {self.seq}\nevent: {self.type}\ndata: {self.to_json()}\n\n".encode()
            self._sse = sse
        return sse

    def __repr__(self) -> str:
        return f"Event({self.type!r}, seq={self.seq}, {self.data!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]
