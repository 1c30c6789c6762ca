"""Dialects: a generation's events projected into another API's stream.

A dialect is a *pure* projection: it reads the events of one generation in order and says
what a client of that API is told, with no I/O (events in, JSON objects out). The server
frames what it returns (SSE lines, or one JSON body) and sends it; the tests feed lists of
events. Every dialect has the same three steps:

- ``open()``: what the client is told before the first event;
- ``feed(event)``: what this event adds (often nothing);
- ``close()``: what ends an answer that succeeded, after the terminal event.

A generation that failed or was cancelled ends with :attr:`Projection.failure` set and
``close()`` returning nothing: how a failure is told (an HTTP status, an error frame in the
dialect's own shape) is the server's to decide.

A ``block.delta`` of a part already streaming adds one object whose only new content is the
text. For it a streaming dialect also offers ``text_delta(block_id, text_json)``: that
object's JSON, formatted around the text already JSON-escaped (:meth:`Event.delta_json`),
with no dict built and no encoding, the state advanced as ``feed`` would; None when the
delta says anything else (the first text of a part, a block not shown, a cursor not passed),
and then ``feed`` takes the event. The JSON is the bytes ``encode_json`` would write for
what ``feed`` returns (:func:`json_template`); ``text_delta_type`` is its ``type`` (None: it
has none, or it varies). A projection without them is fed every event.

Dialects: :mod:`streaming.dialects.openai_chat` (OpenAI chat-completion chunks),
:mod:`streaming.dialects.ui_message` (the Vercel AI SDK's UI message stream),
:mod:`streaming.dialects.responses` (OpenAI Responses stream events) and
:mod:`streaming.dialects.anthropic` (Anthropic Messages stream events).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from streaming.events import Event, encode_json

__all__ = ["HOLES", "Failure", "Projection", "TextParts", "json_template"]

#: values that mark the holes of a :func:`json_template` (private-use characters)
HOLES = ("\ue000hole 0\ue001", "\ue000hole 1\ue001")
_MARKERS = tuple(encode_json(hole) for hole in HOLES)


def json_template(obj: Any) -> tuple[str, ...] | None:
    """The JSON of ``obj`` (as :func:`encode_json` writes it) cut at the :data:`HOLES` it
    holds as values, in order: ``pieces[0] + v0 + pieces[1] + v1 + ...`` is the JSON of
    ``obj`` with the JSON texts ``v0``, ``v1``, ... as those values. None if a hole is there
    more than once (a value of ``obj`` looks like one) or out of order."""
    text = encode_json(obj)
    pieces: list[str] = []
    for marker in _MARKERS:
        count = text.count(marker)
        if count == 0:
            break
        before, _, text = text.partition(marker)
        if count > 1 or any(m in before for m in _MARKERS):
            return None
        pieces.append(before)
    if any(m in text for m in _MARKERS):
        return None
    pieces.append(text)
    return tuple(pieces)


class TextParts:
    """A text streamed in parts, some as JSON strings (the fast path's) decoded only when
    the whole text is asked for."""

    __slots__ = ("_text", "_json")

    def __init__(self) -> None:
        self._text: list[str] = []  # decoded parts
        self._json: list[str] = []  # JSON strings after them

    def __bool__(self) -> bool:
        return bool(self._text or self._json)

    def add(self, text: str) -> None:
        if self._json:
            self._decode()
        self._text.append(text)

    def add_json(self, text_json: str) -> None:
        parts = self._json
        parts.append(text_json)
        if len(parts) >= 1024:  # one string of them, not a str object each
            parts[:] = [f'"{"".join([part[1:-1] for part in parts])}"']

    def text(self) -> str:
        if self._json:
            self._decode()
        if len(self._text) > 1:
            self._text[:] = ["".join(self._text)]
        return self._text[0] if self._text else ""

    def _decode(self) -> None:
        # The parts' contents are one JSON string's content together (none ends inside an
        # escape): one parse.
        content = "".join([part[1:-1] for part in self._json])
        if "\\ud" in content:
            # A lone surrogate's escape (encode_json writes no other): each its own
            # character, where a JSON reader would pair two.
            self._text.append(_ESCAPE.sub(_unescape, content))
        else:
            self._text.append(json.loads(f'"{content}"'))
        self._json = []


_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)")
_ESCAPED = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _unescape(match: re.Match[str]) -> str:
    escape = match[1]
    return chr(int(escape[1:], 16)) if len(escape) == 5 else _ESCAPED[escape]


@dataclass(frozen=True)
class Failure:
    """How a generation ended, when it did not succeed."""

    #: ``failed`` (``generation.failed``) or ``cancelled`` (``generation.cancelled``)
    outcome: Literal["failed", "cancelled"]
    #: the error's code (``cancelled`` for a cancel)
    code: str
    message: str
    suggestion: str | None = None

    @classmethod
    def of(cls, event: Event) -> Failure | None:
        """The failure a terminal event says, or None (``generation.completed``, or not terminal)."""
        if event.type == "generation.failed":
            error = event.data.get("error") or {}
            suggestion = error.get("suggestion")
            return cls(
                "failed",
                str(error.get("code") or "generation_failed"),
                str(error.get("message") or "the generation failed"),
                str(suggestion) if suggestion else None,
            )
        if event.type == "generation.cancelled":
            reason = str(event.data.get("reason") or "")
            return cls("cancelled", "cancelled", f"the generation was cancelled: {reason}")
        return None


class Projection(Protocol):
    """What every dialect offers (see the module's doc)."""

    #: set once a ``generation.failed`` or ``generation.cancelled`` event was fed
    failure: Failure | None

    def open(self) -> list[dict[str, Any]]: ...

    def feed(self, event: Event) -> list[dict[str, Any]]: ...

    def close(self) -> list[dict[str, Any]]: ...
