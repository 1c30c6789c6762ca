"""Typed events of a generation's stream, each encoded to JSON once.

Every event has ``type``, ``seq`` and ``generation_id``; ``seq`` starts at 1 and rises by
exactly 1 per event of a generation. An event is built once, appended to the generation's
log, and its JSON (and SSE frame) is computed at most once however many subscribers read
it. Until it is first read or encoded, a ``block.delta`` at the tail of a log may still
absorb the next chunk of the same block (delta coalescing); reading or encoding seals it.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import Any

__all__ = ["TERMINAL_TYPES", "Event", "EventType", "encode_json"]

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
#: one string as JSON: what ``_encode`` does for a str, without its Python frame
_encode_str = json.encoder.encode_basestring
_SURROGATE = re.compile("[\ud800-\udfff]")
#: one JSON string (its quotes, and every quote inside escaped)
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
#: how ``to_json`` starts a ``block.delta`` (its text is the last field)
_DELTA_HEAD = '{"type":"block.delta","seq":'


def _utf8_safe(js: str) -> str:
    # A lone surrogate (written by a plugin, or stored by an older version) cannot be
    # encoded as UTF-8: as its JSON escape, the text stays valid JSON and says the same.
    if _SURROGATE.search(js) is None:
        return js
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", js)


def _delta_json(seq: int, generation_id: str, data: dict[str, Any]) -> str:
    """A ``block.delta``'s JSON (its text the last field: see ``Event.delta_json``)."""
    js = (
        f'{{"type":"block.delta","seq":{seq},"generation_id":"{generation_id}",'
        f'"block_id":"{data["block_id"]}","offset":{data["offset"]},"text":{_encode_str(data["text"])}}}'
    )
    return js if js.isascii() else _utf8_safe(js)


def _dumps(value: Any) -> str:
    text = _encode(value)
    return text if text.isascii() else _utf8_safe(text)


def encode_json(value: Any) -> str:
    """Compact JSON, UTF-8 text kept as is (a lone surrogate escaped: ``\\ud800``), so
    the result always encodes as UTF-8."""
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


_DELTA = EventType.BLOCK_DELTA.value


class Event:
    """One event of a generation. Fields other than the envelope live in ``data``.

    Once encoded, an event keeps only its SSE frame (the JSON is a slice of it) and drops
    its ``data`` dict, which is parsed again if someone asks for it: a long log costs its
    bytes, not a dict per delta.
    """

    __slots__ = ("type", "seq", "generation_id", "_data", "_json", "_sse", "_parts")

    def __init__(
        self, type: str, seq: int, generation_id: str, data: dict[str, Any], parts: list[str] | None = None
    ) -> None:
        self.type = type
        self.seq = seq
        self.generation_id = generation_id
        self._data: dict[str, Any] | None = data
        self._json: str | None = None
        self._sse: bytes | None = None
        # For a coalescable delta: the text parts (``[data["text"]]`` at first), joined
        # when sealed.
        self._parts = parts

    @property
    def data(self) -> dict[str, Any]:
        data = self._data
        if data is None:
            obj = json.loads(self.to_json())
            for key in ("type", "seq", "generation_id"):
                obj.pop(key, None)
            data = self._data = obj
        if self._parts is not None and len(self._parts) > 1:
            self.freeze()  # a coalesced delta's data tells its whole text
        return data

    # -- construction helpers --

    @classmethod
    def delta(cls, seq: int, generation_id: str, block_id: str, offset: int, text: str) -> Event:
        return cls(_DELTA, seq, generation_id, {"block_id": block_id, "offset": offset, "text": text}, [text])

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

    def delta_json(self) -> tuple[str, str]:
        """A ``block.delta``'s block id and its text as a JSON string, exactly as
        :func:`encode_json` writes it: cut from the event's JSON when it has one (no
        parsing), else escaped once. The event is not sealed.

        Raises:
            KeyError: not a ``block.delta``.
        """
        js = self._json
        if js is None and self._sse is not None:
            js = self.to_json()
        if js is not None and js.startswith(_DELTA_HEAD):
            # {"type":"block.delta","seq":…,"generation_id":"…","block_id":"…","offset":…,"text":"…"}
            # Inside a JSON string every quote is escaped, so the last ',"text":"' is the
            # field's own, and the text is the last field if what follows (up to the
            # object's "}") is one string.
            i = js.find(',"block_id":"', 27) + 13
            j = js.find('","offset":', i)
            k = js.rfind(',"text":"', j)
            if i > 12 and j > 0 and k > 0:
                block_id = js[i:j]
                text = js[k + 8 : -1]
                if (text.count('"') == 2 or _STRING.fullmatch(text) is not None) and "\\" not in block_id:
                    if "\\" in text and ("\\u" in text or "\\/" in text):
                        # Written otherwise ("\u00e9", "\/"), or a surrogate's escape:
                        # as encode_json writes what it reads.
                        text = _dumps(json.loads(text))
                    return block_id, text
        if self.type != "block.delta":
            raise KeyError(f"{self.type} is not a block.delta")
        data = self.data  # (joins a coalesced delta's parts)
        return data["block_id"], _dumps(data["text"])

    # -- coalescing --

    @property
    def sealed(self) -> bool:
        """Whether no chunk may join this event any more (read, encoded, or not a delta
        being written)."""
        return self._parts is None

    def try_extend(self, block_id: str, text: str) -> bool:
        """Absorb ``text`` into this unsealed delta of the same block; False if it cannot,
        and then this event absorbs nothing more: the chunks it holds are joined (its
        ``data`` tells its whole text, encoded or not)."""
        # _data, not data: joining on every absorbed chunk would be quadratic. (An encoded
        # event has no _parts.)
        parts = self._parts
        if parts is None:
            return False
        data = self._data
        if self._json is None and self._sse is None and data is not None and data["block_id"] == block_id:
            parts.append(text)
            return True
        self.freeze()
        return False

    def seal(self) -> None:
        """No chunk joins this event any more: its text is final. It is encoded when first
        read (a ``block.delta`` straight to its SSE frame, for the SSE route)."""
        if self._parts is not None:
            self.freeze()
            self._parts = None

    # -- encoding (at most once) --

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    def to_dict(self) -> dict[str, Any]:
        self.freeze()
        out: dict[str, Any] = {"type": self.type, "seq": self.seq, "generation_id": self.generation_id}
        out.update(self.data)
        return out

    def freeze(self) -> None:
        """No chunk joins this delta any more: join the ones it absorbed (its ``data`` then
        tells its whole text). Cheap on any other event."""
        parts = self._parts
        if parts is not None and len(parts) > 1 and self._data is not None:
            joined = "".join(parts)
            parts[:] = [joined]
            self._data["text"] = joined

    def to_json(self) -> str:
        js = self._json
        if js is not None:
            return js
        sse = self._sse
        if sse is not None:
            # The frame is "id: …\nevent: …\ndata: <json>\n\n": slice the JSON out.
            start = sse.index(b"\ndata: ") + 7
            return sse[start:-2].decode()
        parts = self._parts
        if parts is not None and len(parts) > 1:
            self.freeze()
        self._parts = None
        d = self._data
        assert d is not None  # (an event has its data, its JSON or its frame)
        if self.type == _DELTA:
            js = _delta_json(self.seq, self.generation_id, d)
        else:
            out: dict[str, Any] = {"type": self.type, "seq": self.seq, "generation_id": self.generation_id}
            out.update(d)
            js = _dumps(out)
        self._json = js
        self._data = None  # parsed again on demand
        return js

    def to_sse(self) -> bytes:
        """The SSE frame: ``id``, ``event`` and one ``data`` line (JSON has no newline)."""
        sse = self._sse
        if sse is None:
            js = self._json
            d = self._data
            if js is None and d is not None and self.type == _DELTA:
                # A delta's frame straight from its fields (its JSON is not kept on the way).
                if self._parts is not None:
                    self.seal()
                seq = self.seq
                js = _delta_json(seq, self.generation_id, d)
                sse = f"id: {seq}\nevent: block.delta\ndata: {js}\n\n".encode()
                self._data = None  # parsed again on demand
            else:
                if js is None:
                    js = self.to_json()
                sse = f"id: {self.seq}\nevent: {self.type}\ndata: {js}\n\n".encode()
            self._sse = sse
            self._json = None  # a slice of the frame from now on
        return sse

    def __repr__(self) -> str:
        return f"Event({self.type!r}, seq={self.seq}, {self.data!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]
