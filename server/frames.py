"""What an SSE stream says, as bytes: frame projections for the one pump (server/sse.py).

:data:`NATIVE` frames our own events (``id`` / ``event`` / ``data``, each encoded once and
shared by every subscriber, a backlog in one write); :class:`DialectFrames` frames a pure
dialect projection (:mod:`streaming.dialects`, e.g. OpenAI chat chunks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from streaming.dialects import Failure, Projection
from streaming.errors import StreamingError
from streaming.events import Event, encode_json

__all__ = ["NATIVE", "DialectFrames", "Frames", "NativeFrames", "data_frame"]


class Frames(Protocol):
    """A frame projection: what an SSE stream says, as bytes."""

    def opening(self) -> bytes:
        """Before the first batch (after the headers)."""
        ...

    def batch(self, events: list[Event]) -> bytes:
        """One batch of events (empty bytes: nothing to send)."""
        ...

    def closing(self) -> bytes:
        """After the last batch (the terminal event, or the log's end)."""
        ...

    def refused(self, exc: StreamingError) -> bytes:
        """The subscription was refused after the headers went out (a race on a limit)."""
        ...


class NativeFrames:
    """Our own events: ``id: <seq>``, ``event: <type>``, ``data: <json>`` (stateless, shared)."""

    __slots__ = ()

    def opening(self) -> bytes:
        return b""

    def batch(self, events: list[Event]) -> bytes:
        return b"".join([ev.to_sse() for ev in events]) if len(events) > 1 else events[0].to_sse()

    def closing(self) -> bytes:
        return b""

    def refused(self, exc: StreamingError) -> bytes:
        return f"event: error\ndata: {encode_json({'error': exc.to_dict()})}\n\n".encode()


NATIVE = NativeFrames()


def data_frame(obj: Any) -> bytes:
    return f"data: {encode_json(obj)}\n\n".encode()


class DialectFrames:
    """A dialect's projection (:mod:`streaming.dialects`) as SSE frames: ``data: <json>``,
    or, with ``event_names``, also ``event: <the object's "type">`` (as the APIs whose
    stream events are named, OpenAI Responses and Anthropic Messages, send them).

    A ``block.delta`` of a part already streaming takes the projection's fast path
    (``text_delta``): its frame is formatted around the text as the event's JSON already
    escapes it; the bytes are those of the objects ``feed`` would return.

    Args:
        projection: one generation's projection (it keeps state: one per stream).
        error: a failure of the generation, or a refusal, as the dialect's error object.
        done: the last data of a stream that succeeded (``[DONE]`` for OpenAI chat), if any.
        event_names: name each frame by its object's ``type``.
    """

    def __init__(
        self,
        projection: Projection,
        *,
        error: Callable[[Failure | StreamingError], dict[str, Any]],
        done: str | None = "[DONE]",
        event_names: bool = False,
    ) -> None:
        self.projection = projection
        self.error = error
        self.done = done
        self.event_names = event_names
        #: the projection's fast path for a delta, if it has one (and its frames can be named)
        self.text_delta: Callable[[str, str], str | None] | None = getattr(projection, "text_delta", None)
        #: the type of the objects of the fast path (a frame's name, with event_names)
        self.delta_type: str | None = getattr(projection, "text_delta_type", None)
        if event_names and self.delta_type is None:
            self.text_delta = None

    def frame_json(self, kind: str | None, js: str) -> str:
        """The frame of one object: its JSON ``js``, its ``type`` ``kind`` (None: it has none)."""
        if self.event_names and kind is not None:
            return f"event: {kind}\ndata: {js}\n\n"
        return f"data: {js}\n\n"

    def frame(self, obj: dict[str, Any]) -> bytes:
        return self.frame_json(obj.get("type"), encode_json(obj)).encode()

    def frames(self, objs: list[dict[str, Any]]) -> bytes:
        frame_json = self.frame_json
        return "".join([frame_json(obj.get("type"), encode_json(obj)) for obj in objs]).encode()

    def opening(self) -> bytes:
        return self.frames(self.projection.open())

    def batch(self, events: list[Event]) -> bytes:
        feed = self.projection.feed
        fast = self.text_delta
        frame_json = self.frame_json
        delta_type = self.delta_type
        out: list[str] = []
        for ev in events:
            if fast is not None and ev.type == "block.delta":
                js = fast(*ev.delta_json())
                if js is not None:
                    out.append(frame_json(delta_type, js))
                    continue
            for obj in feed(ev):
                out.append(frame_json(obj.get("type"), encode_json(obj)))
        return "".join(out).encode()

    def closing(self) -> bytes:
        failure = self.projection.failure
        if failure is not None:
            return self.frame(self.error(failure))
        out = self.frames(self.projection.close())
        return out + (f"data: {self.done}\n\n".encode() if self.done is not None else b"")

    def refused(self, exc: StreamingError) -> bytes:
        return self.frame(self.error(exc))
