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

Dialects: :mod:`streaming.dialects.openai_chat` (OpenAI chat-completion chunks),
:mod:`streaming.dialects.ui_message` (the Vercel AI SDK's UI message stream),
:mod:`streaming.dialects.responses` (OpenAI Responses stream events) and
:mod:`streaming.dialects.anthropic` (Anthropic Messages stream events).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from streaming.events import Event

__all__ = ["Failure", "Projection"]


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
