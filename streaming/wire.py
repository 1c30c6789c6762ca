"""What travels between the server and its clients, with nothing beyond the standard library.

One module for every client (and the server) to build on; ``docs/protocol.md`` describes
the protocol it implements:

- the events: :class:`Event`, :class:`EventType`, :data:`TERMINAL_TYPES` (defined in
  :mod:`streaming.events`, re-exported here);
- the errors: every :class:`StreamingError` class with its ``code`` and HTTP ``status``
  (defined in :mod:`streaming.errors`), and :func:`error_from_dict`, which turns a wire
  error ``{code, message, suggestion}`` back into the matching exception;
- SSE decoding: :class:`SSEDecoder` (bytes in, ``id``/``event``/``data`` frames out) and
  :class:`EventDecoder` (bytes in, :class:`Event` objects out), both incremental;
- the fold: :class:`GenerationFold` applies a generation's events, each once, to its state
  (blocks with their text and ``stream_state``, tool calls and results, usage, error, last
  ``seq``); with ``strict=True`` it checks the protocol's invariants on the way.

Importing this module imports :mod:`streaming.events` and :mod:`streaming.errors` and
nothing else of the package (``tests/test_client_import.py`` checks it).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streaming import errors as _errors
from streaming.errors import *  # noqa: F403  (every error class, re-exported)
from streaming.errors import InvalidRequestError, StreamingError
from streaming.events import TERMINAL_TYPES, Event, EventType, encode_json

__all__ = [
    "ERROR_CLASSES",
    "FINAL_STATES",
    "TERMINAL_TYPES",
    "BlockState",
    "Event",
    "EventDecoder",
    "EventType",
    "GenerationFold",
    "MimeTypes",
    "ProtocolError",
    "SSEDecoder",
    "ServerSentEvent",
    "ToolCall",
    "encode_json",
    "error_from_dict",
]
__all__ += _errors.__all__

# -- MIME types --------------------------------------------------------------------------


class MimeTypes:
    """MIME types the runtime knows by name (those of the seed included)."""

    TXT = "text/plain"
    MKD = "text/markdown"
    JSON = "application/json"
    PNG = "image/png"
    STEAMSHIP_BLOCK_JSON_V1 = "application/vnd.steamship-block.json.v1"
    STEAMSHIP_PLUGIN_CAPABILITIES_REQUEST = (
        "application/vnd.steamship-block.plugin-capabilities-request+json"
    )
    STEAMSHIP_PLUGIN_CAPABILITIES_RESPONSE = (
        "application/vnd.steamship-block.plugin-capabilities-response+json"
    )
    FUNCTION_CALL_INVOCATION = (
        "application/vnd.steamship-block.function-calling-support-invocation+json"
    )
    FUNCTION_CALL_RESULT = "application/vnd.steamship-block.function-calling-support-result+json"


# -- errors -------------------------------------------------------------------------------

#: every error class of the wire (those of :mod:`streaming.errors`), by its ``code``
ERROR_CLASSES: dict[str, type[StreamingError]] = {
    cls.code: cls
    for cls in (getattr(_errors, name) for name in _errors.__all__)
    if isinstance(cls, type) and issubclass(cls, StreamingError)
}

# Codes whose class lives above this layer (``streaming.capabilities``): their base here.
_CODE_ALIASES: dict[str, type[StreamingError]] = {"unsupported_capability": InvalidRequestError}


def _most_general_by_status() -> dict[int, type[StreamingError]]:
    """Each HTTP status that a single tree of classes has, to the root of that tree."""
    roots: dict[int, list[type[StreamingError]]] = {}
    for cls in ERROR_CLASSES.values():
        parent = cls.__mro__[1]
        if cls is not StreamingError and not (issubclass(parent, StreamingError) and parent.status == cls.status):
            roots.setdefault(cls.status, []).append(cls)
    return {status: found[0] for status, found in roots.items() if len(found) == 1}


# An unknown code is read by its HTTP status, as the most general class of that status.
_BY_STATUS = _most_general_by_status()


def error_from_dict(error: Mapping[str, Any], status: int | None = None) -> StreamingError:
    """A wire error ``{code, message, suggestion, ...}`` as the matching exception.

    The class is the one of ``code``; for a code this module does not know, the most
    general class of the HTTP ``status`` (if given), else :class:`StreamingError`. The
    exception keeps the code it was sent with, and any further fields as ``details``.
    """
    code = str(error.get("code") or "internal_error")
    cls = ERROR_CLASSES.get(code) or _CODE_ALIASES.get(code)
    if cls is None:
        cls = _BY_STATUS.get(status, StreamingError) if status is not None else StreamingError
    message = error.get("message")
    suggestion = error.get("suggestion")
    details = {k: v for k, v in error.items() if k not in ("code", "message", "suggestion")}
    return cls(
        str(message) if message else code,
        suggestion=str(suggestion) if suggestion is not None else None,
        code=code,
        details=details or None,
    )


class ProtocolError(ValueError):
    """What the server sent breaks the protocol (an invariant of ``docs/protocol.md``)."""


# -- SSE decoding -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One SSE frame: its ``event`` name, its ``data`` lines joined by ``\\n``, ``id``, ``retry``."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """An incremental SSE decoder: ``decode(chunk) -> [ServerSentEvent]``, ``flush()``.

    Bytes may be split anywhere, including inside a multi-byte UTF-8 character or between
    ``\\r`` and ``\\n``; the decoder keeps what it cannot finish for the next chunk.
    Comment lines (the server's heartbeats, ``: ping``) produce no frame.
    """

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._retry: int | None = None
        #: the ``id`` of the last complete frame that had one (what to resume after)
        self.last_event_id: str | None = None

    def decode(self, chunk: bytes) -> list[ServerSentEvent]:
        text = self._buffer + self._utf8.decode(chunk)
        out: list[ServerSentEvent] = []
        start = 0
        n = len(text)
        while True:
            # Find the next line end: \n, \r\n or \r (a trailing \r may be half of \r\n).
            i = start
            while i < n and text[i] not in "\r\n":
                i += 1
            if i >= n:
                break
            if text[i] == "\r":
                if i + 1 >= n:
                    break
                end = i + 2 if text[i + 1] == "\n" else i + 1
            else:
                end = i + 1
            ev = self._line(text[start:i])
            if ev is not None:
                out.append(ev)
            start = end
        self._buffer = text[start:]
        return out

    def flush(self) -> list[ServerSentEvent]:
        """End of stream: an unterminated frame is dropped, as the SSE spec says."""
        self._buffer = ""
        self._event, self._data, self._id, self._retry = "", [], None, None
        return []

    def _line(self, line: str) -> ServerSentEvent | None:
        if line == "":
            if not self._data and not self._event and self._id is None:
                return None
            ev = ServerSentEvent(
                event=self._event or "message",
                data="\n".join(self._data),
                id=self._id,
                retry=self._retry,
            )
            if self._id is not None:
                self.last_event_id = self._id
            self._event, self._data, self._id, self._retry = "", [], None, None
            return ev
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
        elif name == "retry":
            if value.isdigit():
                self._retry = int(value)
        return None


class EventDecoder:
    """A generation's SSE stream, incrementally: ``decode(chunk) -> [Event]``, ``flush()``.

    An ``error`` frame (a stream the server refused after its headers went out) is raised
    as its :class:`StreamingError`: at once if it is the first thing of its chunk,
    otherwise after the events before it have been returned, by the next ``decode`` or
    ``flush``.

    Raises:
        ProtocolError: a frame is not an event (not JSON, or no ``type``/``seq``).
    """

    def __init__(self) -> None:
        self.sse = SSEDecoder()
        self._error: StreamingError | None = None

    def decode(self, chunk: bytes) -> list[Event]:
        self._raise_pending()
        return self._events(self.sse.decode(chunk))

    def flush(self) -> list[Event]:
        self._raise_pending()
        return self._events(self.sse.flush())

    def _raise_pending(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _events(self, frames: list[ServerSentEvent]) -> list[Event]:
        out: list[Event] = []
        for frame in frames:
            if not frame.data:
                continue
            try:
                obj = json.loads(frame.data)
            except ValueError:
                raise ProtocolError(f"an SSE frame that is not JSON: {frame.data[:80]!r}") from None
            if not isinstance(obj, dict):
                raise ProtocolError(f"an SSE frame that is not a JSON object: {frame.data[:80]!r}")
            if frame.event == "error":
                error = error_from_dict(obj.get("error") or {})
                if not out:
                    raise error
                self._error = error
                break
            try:
                out.append(Event.from_dict(obj))
            except (KeyError, TypeError, ValueError):
                raise ProtocolError(f"an SSE frame that is not an event: {frame.data[:80]!r}") from None
        return out


# -- the fold -----------------------------------------------------------------------------

#: the generation ``state`` each terminal event leaves
FINAL_STATES: dict[str, str] = {
    EventType.GENERATION_COMPLETED.value: "succeeded",
    EventType.GENERATION_FAILED.value: "failed",
    EventType.GENERATION_CANCELLED.value: "cancelled",
}

_BLOCK_ENDS: dict[str, str] = {
    EventType.BLOCK_COMPLETED.value: "complete",
    EventType.BLOCK_ABORTED.value: "aborted",
}


@dataclass(eq=False)
class BlockState:
    """One block of a generation as its events have built it.

    ``parts`` are the pieces of text in the order they were added (a snapshot's text
    first, then what each delta added); ``text`` joins them. ``length`` counts code points,
    the unit of a delta's ``offset``.
    """

    id: str
    #: the block's JSON as the fold first learnt of it (a snapshot from
    #: ``GET /generations/{id}``, ``generation.started`` or ``block.created``)
    block: dict[str, Any]
    #: ``started``, ``complete`` or ``aborted``
    stream_state: str = "started"
    #: why it was aborted (``block.aborted``'s ``reason``)
    reason: str | None = None
    parts: list[str] = field(default_factory=list)
    length: int = 0

    @property
    def mime_type(self) -> str | None:
        value = self.block.get("mime_type")
        return str(value) if value is not None else None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def done(self) -> bool:
        return self.stream_state in ("complete", "aborted")

    @property
    def is_text(self) -> bool:
        return (self.mime_type or "").startswith("text/")

    def _add(self, offset: int, text: str) -> str:
        """The text of a delta at ``offset``, less what this block already has; appended."""
        if offset < self.length:
            skip = self.length - offset
            if skip >= len(text):
                return ""
            text = text[skip:]  # str indexes count code points, as offsets do
        if text:
            self.parts.append(text)
            self.length += len(text)
        return text


@dataclass(eq=False)
class ToolCall:
    """A ``tool.call`` and, once it came, its ``tool.result``."""

    call_id: str
    block_id: str
    tool_name: str
    args: Any
    #: the client is expected to answer it
    client_side: bool
    result: list[str] | None = None
    is_error: bool = False

    @property
    def answered(self) -> bool:
        return self.result is not None


def _envelope(event: Event | Mapping[str, Any]) -> tuple[str, int, str, Mapping[str, Any]]:
    if isinstance(event, Event):
        return event.type, event.seq, event.generation_id, event.data
    return str(event["type"]), int(event["seq"]), str(event["generation_id"]), event


def _lost_range(data: Mapping[str, Any]) -> tuple[int, int] | None:
    """``(after, through)`` of the seqs a crash recovery's ending declares lost
    (``events_lost``), or None."""
    lost = data.get("events_lost")
    if not isinstance(lost, Mapping):
        return None
    after, through = lost.get("after"), lost.get("through")
    if not isinstance(after, int) or not isinstance(through, int) or through < after:
        return None
    return after, through


class GenerationFold:
    """A generation's state, built by applying its events once each.

    Lenient by default, as a client needs it: an event at or before ``last_seq`` is ignored
    (a replay after a resume), one that arrives early is held until the events before it
    have come, a delta adds only the text past what its block already has (by its
    code-point ``offset``), and ending a block that has ended changes nothing. Applying a
    generation's events in any order, any of them several times, ends in the state that
    applying each once in order gives.

    With ``strict=True`` it checks the protocol's invariants instead and raises
    :class:`ProtocolError` at the first event that breaks one: ``seq`` rising by exactly
    one, one ``generation_id``, ``generation.started`` first, nothing after the terminal
    event, blocks created once, deltas only on started blocks at the offset where their
    text ends, a ``block.completed`` length equal to the text, ``tool.call`` only on a
    completed block, each call answered at most once, and no block left started at the end.

    Args:
        generation_id: whose events (``None``: taken from the first event).
        generation: the generation's JSON, if known (``POST /generations``' answer).
        blocks: block snapshots (their text and ``stream_state`` as the server had them).
        after: the ``seq`` those snapshots are at least as new as: events up to it are not
            applied (the cursor a stream resumes after).
        strict: check the invariants.
    """

    def __init__(
        self,
        generation_id: str | None = None,
        *,
        generation: Mapping[str, Any] | None = None,
        blocks: Iterable[Mapping[str, Any]] = (),
        after: int = 0,
        strict: bool = False,
    ) -> None:
        self.generation: dict[str, Any] = dict(generation or {})
        self.generation_id = generation_id or self.generation.get("id")
        self.state: str = str(self.generation.get("state") or "running")
        self.strict = strict
        self.last_seq = after
        self.blocks: dict[str, BlockState] = {}
        #: block ids in creation order
        self.order: list[str] = []
        self.tool_calls: dict[str, ToolCall] = {}
        self.capabilities: Any = None
        self.usage: list[dict[str, Any]] = list(self.generation.get("usage") or [])
        self.error: dict[str, Any] | None = self.generation.get("error")
        #: why it was cancelled (``generation.cancelled``'s ``reason``)
        self.reason: str | None = None
        self.terminal: Event | Mapping[str, Any] | None = None
        self._ahead: dict[int, Event | Mapping[str, Any]] = {}
        for block in blocks:
            self._add_block(block, snapshot=True)

    # -- queries --

    @property
    def finished(self) -> bool:
        """The terminal event has been applied."""
        return self.terminal is not None

    def block_list(self) -> list[BlockState]:
        return [self.blocks[i] for i in self.order]

    @property
    def texts(self) -> dict[str, str]:
        """Each block's text, by id."""
        return {bid: self.blocks[bid].text for bid in self.order}

    def text(self) -> str:
        """The text of every ``text/*`` block, in order."""
        return "".join(b.text for b in self.block_list() if b.is_text)

    @property
    def open_blocks(self) -> list[str]:
        return [bid for bid in self.order if not self.blocks[bid].done]

    # -- applying --

    def apply(self, event: Event | Mapping[str, Any]) -> list[Event | Mapping[str, Any]]:
        """Apply ``event`` (an :class:`Event` or its JSON object); the events applied.

        That is ``[]`` for an event already applied or held until the ones before it come,
        ``[event]`` usually, and more when ``event`` fills the gap before held ones.

        Raises:
            ProtocolError: (strict) the event breaks an invariant.
        """
        _, seq, gen_id, data = _envelope(event)
        lost = _lost_range(data)
        if lost is not None and lost[0] <= self.last_seq < lost[1] < seq:
            # A crash recovery's ending says those seqs were lost (events_lost): nothing
            # will fill that gap, so what follows it (aborted blocks, the ending) applies.
            self.last_seq = lost[1]
            self._ahead = {k: v for k, v in self._ahead.items() if k > lost[1]}
            if seq > self.last_seq + 1:
                self._ahead[seq] = event
                applied: list[Event | Mapping[str, Any]] = []
                self._drain(applied)
                return applied
        if self.generation_id is None:
            self.generation_id = gen_id
        elif gen_id != self.generation_id:
            if self.strict:
                raise ProtocolError(f"seq {seq}: an event of {gen_id}, not {self.generation_id}")
            return []
        if self.strict:
            if seq != self.last_seq + 1:
                raise ProtocolError(f"seq {seq} after {self.last_seq}: seq must rise by exactly 1")
        elif seq <= self.last_seq or seq in self._ahead:
            return []
        elif seq > self.last_seq + 1:
            self._ahead[seq] = event
            return []
        applied = [event]
        self._apply(event)
        self._drain(applied)
        return applied

    def _drain(self, applied: list[Event | Mapping[str, Any]]) -> None:
        """Apply the held events that now follow ``last_seq``."""
        while self._ahead:
            nxt = self._ahead.pop(self.last_seq + 1, None)
            if nxt is None:
                break
            self._apply(nxt)
            applied.append(nxt)

    def apply_all(self, events: Iterable[Event | Mapping[str, Any]]) -> GenerationFold:
        for event in events:
            self.apply(event)
        return self

    def check_complete(self) -> None:
        """(strict) The events so far are a whole generation: it ended, every block with it.

        Raises:
            ProtocolError: it has not ended.
        """
        if self.terminal is None:
            raise ProtocolError(f"no terminal event after seq {self.last_seq}")

    def _fail(self, seq: int, message: str) -> None:
        raise ProtocolError(f"seq {seq}: {message}")

    def _add_block(self, block: Mapping[str, Any], *, snapshot: bool = False) -> BlockState | None:
        bid = str(block["id"])
        known = self.blocks.get(bid)
        if known is not None:
            return None
        if "stream_state" in block and block["stream_state"] is None:
            state = "complete"  # never streamed (an input block): whole as it is
        else:
            state = str(block.get("stream_state") or "started")
        created = BlockState(bid, dict(block), stream_state=state)
        if snapshot:
            created._add(0, str(block.get("text") or ""))
        self.blocks[bid] = created
        self.order.append(bid)
        return created

    def _apply(self, event: Event | Mapping[str, Any]) -> None:
        kind, seq, _, data = _envelope(event)
        strict = self.strict
        self.last_seq = seq
        if strict:
            if self.terminal is not None:
                self._fail(seq, f"{kind} after the terminal event")
            if seq == 1 and kind != EventType.GENERATION_STARTED:
                self._fail(seq, f"the first event is {kind}, not generation.started")
        if kind == EventType.GENERATION_STARTED:
            self.generation = dict(data.get("generation") or self.generation)
            self.state = str(self.generation.get("state") or "running")
            self.capabilities = data.get("capabilities")
            for block in data.get("blocks") or ():
                if self._add_block(block) is None and strict:
                    self._fail(seq, f"block {block['id']} created twice")
        elif kind == EventType.BLOCK_CREATED:
            block = data["block"]
            if self._add_block(block) is None and strict:
                self._fail(seq, f"block {block['id']} created twice")
        elif kind == EventType.BLOCK_DELTA:
            self._delta(seq, str(data["block_id"]), int(data["offset"]), str(data["text"]))
        elif kind in _BLOCK_ENDS:
            self._end_block(seq, kind, data)
        elif kind == EventType.TOOL_CALL:
            self._tool_call(seq, data)
        elif kind == EventType.TOOL_RESULT:
            self._tool_result(seq, data)
        elif kind in TERMINAL_TYPES:
            if strict and self.open_blocks:
                self._fail(seq, f"{kind} with blocks left started: {self.open_blocks}")
            self.terminal = event
            self.state = FINAL_STATES[kind]
            self.generation["state"] = self.state
            self.generation["last_seq"] = seq
            if kind == EventType.GENERATION_COMPLETED:
                self.usage = list(data.get("usage") or [])
            elif kind == EventType.GENERATION_FAILED:
                self.error = dict(data.get("error") or {})
            else:
                reason = data.get("reason")
                self.reason = str(reason) if reason is not None else None
        elif strict:
            self._fail(seq, f"unknown event type {kind!r}")

    def _delta(self, seq: int, block_id: str, offset: int, text: str) -> None:
        block = self.blocks.get(block_id)
        if block is None:
            if self.strict:
                self._fail(seq, f"a delta on block {block_id}, never created")
            block = self._add_block({"id": block_id})
            assert block is not None
        if self.strict:
            if block.stream_state != "started":
                self._fail(seq, f"a delta on block {block_id}, which is {block.stream_state}")
            if offset != block.length:
                self._fail(seq, f"offset {offset} where block {block_id} has {block.length} code points")
        block._add(offset, text)

    def _end_block(self, seq: int, kind: str, data: Mapping[str, Any]) -> None:
        block_id = str(data["block_id"])
        block = self.blocks.get(block_id)
        if self.strict:
            if block is None or block.stream_state != "started":
                state = block.stream_state if block is not None else "never created"
                self._fail(seq, f"{kind} on block {block_id}, which is {state}")
            assert block is not None
            if "length" in data and data["length"] != block.length:
                self._fail(seq, f"block {block_id} completed at length {data['length']}, its deltas make {block.length}")
        if block is None or block.done:
            return
        block.stream_state = _BLOCK_ENDS[kind]
        reason = data.get("reason")
        block.reason = str(reason) if reason is not None else None

    def _tool_call(self, seq: int, data: Mapping[str, Any]) -> None:
        call_id = str(data["call_id"])
        block_id = str(data["block_id"])
        if self.strict:
            block = self.blocks.get(block_id)
            if block is None or block.stream_state != "complete":
                self._fail(seq, f"tool.call {call_id} before its block {block_id} completed")
            if call_id in self.tool_calls:
                self._fail(seq, f"tool.call {call_id} twice")
        if call_id in self.tool_calls:
            return
        self.tool_calls[call_id] = ToolCall(
            call_id,
            block_id,
            str(data["tool_name"]),
            data.get("args"),
            bool(data.get("client_side", False)),
        )

    def _tool_result(self, seq: int, data: Mapping[str, Any]) -> None:
        call_id = str(data["call_id"])
        call = self.tool_calls.get(call_id)
        if self.strict:
            if call is None:
                self._fail(seq, f"tool.result for {call_id}, an unknown call")
            elif call.answered:
                self._fail(seq, f"tool.result for {call_id}, answered before")
            block = self.blocks.get(str(data["block_id"]))
            if block is None or block.stream_state != "complete":
                self._fail(seq, f"tool.result {call_id} on a block that is not complete")
        if call is None or call.answered:
            return
        call.result = [str(item) for item in data.get("result") or []]
        call.is_error = bool(data.get("is_error", False))
