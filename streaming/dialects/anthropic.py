"""Anthropic Messages: a generation's events as Messages stream events.

Pure (events in, event dicts out; see :mod:`streaming.dialects`). What is projected:

- ``message_start`` (``open()``), the message with no content yet;
- each assistant text block, once it has text, as a ``text`` content block:
  ``content_block_start``, a ``text_delta`` per delta, ``content_block_stop`` once the block
  is complete;
- each call of a client-side tool (``tool.call`` with ``client_side``) as a ``tool_use``
  block: start, its input as one ``input_json_delta``, stop; the server's own tools run
  inside the generation and are not shown;
- ``index`` counts the content blocks in the order they start;
- the end (``close()``): ``message_delta`` with ``stop_reason`` (``tool_use`` if the client
  has calls to run, ``max_tokens`` if the last round's sampled tokens reached
  ``max_tokens``, else ``end_turn``) and the usage so far (cumulative), then
  ``message_stop``; a failure or a cancel is one ``error`` event instead.

The events of a projection are numbered from 0 in order (the dialect's cursor, sent as the
SSE ``id``); :attr:`MessagesProjection.after` leaves out those up to a cursor, so a replay
from cursor ``N`` is the tail of the whole projection. Pings are the server's heartbeat,
not part of the projection. :meth:`MessagesProjection.message` is the whole ``message``
object (the non-streaming answer).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from streaming.dialects import HOLES, Failure, TextParts, json_template
from streaming.dialects.responses import limit_reached, text_blocks, tokens
from streaming.events import Event

__all__ = ["MessagesProjection"]


def _default_error(failure: Failure) -> dict[str, Any]:
    return {"type": "api_error", "message": failure.message}


class MessagesProjection:
    """One generation's events as the stream events of one message.

    Args:
        message_id: ``msg_<generation id>``.
        model: the message's ``model``.
        max_tokens: the request's limit, to tell ``max_tokens`` from ``end_turn``.
        after: leave out the events up to this cursor (-1: none).
        describe: a failure as the ``error`` object of the ``error`` event (``type``,
            ``message``); the server's error shaping.
    """

    #: the ``type`` of what :meth:`text_delta` returns
    text_delta_type: str | None = "content_block_delta"

    def __init__(
        self,
        *,
        message_id: str,
        model: str,
        max_tokens: int | None = None,
        after: int = -1,
        describe: Callable[[Failure], dict[str, Any]] = _default_error,
    ) -> None:
        self.message_id = message_id
        self.model = model
        self.max_tokens = max_tokens
        self.after = after
        self.describe = describe
        #: the next event's cursor
        self.cursor = 0
        self.text_blocks: set[str] = set()
        self.open_text: dict[str, int] = {}  # block id -> content index
        self.content: list[dict[str, Any]] = []
        self.texts: dict[int, TextParts] = {}  # content index -> the text of a text block
        self._delta_json: dict[str, tuple[str, ...] | None] = {}  # block id -> its text_delta's template
        self.tool_calls = 0
        self.usage: list[dict[str, Any]] = []
        self.completed = False
        self.failure: Failure | None = None

    # -- the stream --

    def open(self) -> list[dict[str, Any]]:
        start = {**self.message(), "content": [], "stop_reason": None}
        return self._emit({"type": "message_start", "message": start})

    def feed(self, event: Event) -> list[dict[str, Any]]:
        kind = event.type
        if kind == "block.delta":
            data = event.to_dict()  # not .data: a coalesced delta's text is joined here
            if data["block_id"] in self.text_blocks and data["text"]:
                return self._text(data["block_id"], data["text"])
        elif kind in ("block.completed", "block.aborted"):
            block_id = event.data["block_id"]
            index = self.open_text.pop(block_id, None)
            self._delta_json.pop(block_id, None)
            if index is not None and kind == "block.completed":
                return self._emit({"type": "content_block_stop", "index": index})
        elif kind in ("generation.started", "block.created"):
            self.text_blocks.update(text_blocks(event))
        elif kind == "tool.call":
            if event.data.get("client_side"):
                return self._tool_use(event.data)
        elif kind == "generation.completed":
            self.completed = True
            self.usage = list(event.data.get("usage") or [])
        elif event.terminal:
            failure = self.failure = Failure.of(event)
            assert failure is not None
            return self._emit({"type": "error", "error": self.describe(failure)})
        return []

    def text_delta(self, block_id: str, text_json: str) -> str | None:
        """The JSON of the ``content_block_delta`` a delta of ``block_id`` with this text
        (a JSON string) adds to a block already started, as :meth:`feed` would (None: feed
        the event instead)."""
        index = self.open_text.get(block_id)
        if index is None or text_json == '""' or self.cursor <= self.after:
            return None
        pieces = self._delta_json.get(block_id)
        if pieces is None:
            return None
        self.texts[index].add_json(text_json)
        self.cursor += 1
        return f"{pieces[0]}{text_json}{pieces[1]}"

    def close(self) -> list[dict[str, Any]]:
        if not self.completed:
            return []
        out = self._emit({
            "type": "message_delta",
            "delta": {"stop_reason": self.stop_reason(), "stop_sequence": None},
            "usage": self.usage_dict(),
        })
        return out + self._emit({"type": "message_stop"})

    def _emit(self, obj: dict[str, Any]) -> list[dict[str, Any]]:
        number = self.cursor
        self.cursor += 1
        return [obj] if number > self.after else []

    # -- content blocks --

    def _text(self, block_id: str, text: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        index = self.open_text.get(block_id)
        if index is None:
            index = self.open_text[block_id] = len(self.content)
            self.content.append({"type": "text", "text": ""})
            self.texts[index] = TextParts()
            self._delta_json[block_id] = json_template(self._delta(index, HOLES[0]))
            out = self._emit({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})
        self.texts[index].add(text)
        return out + self._emit(self._delta(index, text))

    @staticmethod
    def _delta(index: int, text: str) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}

    def _tool_use(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        index = len(self.content)
        args = data.get("args") or {}
        self.tool_calls += 1
        self.content.append({"type": "tool_use", "id": data["call_id"], "name": data["tool_name"], "input": args})
        start = {"type": "tool_use", "id": data["call_id"], "name": data["tool_name"], "input": {}}
        out = self._emit({"type": "content_block_start", "index": index, "content_block": start})
        delta = {"type": "input_json_delta", "partial_json": json.dumps(args)}
        out += self._emit({"type": "content_block_delta", "index": index, "delta": delta})
        return out + self._emit({"type": "content_block_stop", "index": index})

    # -- the answer --

    def stop_reason(self) -> str:
        if self.tool_calls:
            return "tool_use"
        if limit_reached(self.usage, self.max_tokens):
            return "max_tokens"
        return "end_turn"

    def usage_dict(self) -> dict[str, int]:
        return {"input_tokens": tokens(self.usage, "prompt tokens"), "output_tokens": tokens(self.usage, "sampled tokens")}

    def message(self) -> dict[str, Any]:
        """The whole ``message`` object (its content so far; ``stop_reason`` once it succeeded)."""
        return {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [
                {**c, "text": self.texts[i].text()} if i in self.texts else dict(c) for i, c in enumerate(self.content)
            ],
            "stop_reason": self.stop_reason() if self.completed else None,
            "stop_sequence": None,
            "usage": self.usage_dict(),
        }
