"""OpenAI Responses: a generation's events as Responses stream events.

Pure (events in, event dicts out; see :mod:`streaming.dialects`). Every event carries a
``sequence_number``, gapless from 0, and the numbering is a function of the generation's
log alone: a replay from ``starting_after=N`` is the same projection with the events up to
``N`` left out (:attr:`ResponsesProjection.after`), so the client's cursor always maps back
to a ``seq`` of the log. What is projected:

- ``response.created`` then ``response.in_progress`` (``open()``);
- each assistant text block, once it has text, as a ``message`` item with one
  ``output_text`` part: ``output_item.added``, ``content_part.added``, ``output_text.delta``
  per delta, and once the block is complete ``output_text.done``, ``content_part.done``,
  ``output_item.done``;
- each call of a client-side tool (``tool.call`` with ``client_side``) as a
  ``function_call`` item (added, its arguments as one delta, done); the server's own tools
  run inside the generation and are not shown;
- the end: ``response.completed``, or ``response.incomplete`` when the last round's sampled
  tokens reached ``max_output_tokens``; a failure is an ``error`` event (its fields both
  flat and under ``error``, which the SDKs raise) then ``response.failed``; a cancel is an
  ``error`` event with code ``cancelled`` and no ``response.completed``.

:meth:`ResponsesProjection.response` is the ``response`` object as it stands (what
``GET /v1/responses/{id}`` answers).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable
from typing import Any

from streaming.dialects import HOLES, Failure, TextParts, json_template
from streaming.events import Event
from streaming.model import MimeTypes

__all__ = ["ResponsesProjection", "limit_reached", "text_blocks", "tokens"]

_TOOL_MIMES = (MimeTypes.FUNCTION_CALL_INVOCATION, MimeTypes.FUNCTION_CALL_RESULT)


def text_blocks(event: Event) -> list[str]:
    """The ids of the blocks ``event`` allocates (``generation.started``, ``block.created``)
    that the assistant streams text into: not a tool call or result, not bytes."""
    blocks = event.data.get("blocks") or [] if event.type == "generation.started" else [event.data["block"]]
    return [
        block["id"] for block in blocks
        if block.get("stream_state") == "started"
        and (mime := block.get("mime_type") or MimeTypes.TXT) not in _TOOL_MIMES and mime.startswith("text/")
    ]


def tokens(usage: Iterable[dict[str, Any]], unit: str) -> int:
    """The sum of the usage reports of ``unit`` (``prompt tokens``, ``sampled tokens``)."""
    return sum(int(u.get("operation_amount", 0)) for u in usage if u.get("operation_unit") == unit)


def limit_reached(usage: list[dict[str, Any]], limit: int | None) -> bool:
    """The last round's sampled tokens reached ``limit``: the answer was cut there."""
    sampled = [u for u in usage if u.get("operation_unit") == "sampled tokens"]
    return bool(limit and sampled and int(sampled[-1].get("operation_amount", 0)) >= limit)


def _default_error(failure: Failure) -> dict[str, Any]:
    kind = "server_error" if failure.outcome == "failed" else "invalid_request_error"
    return {"type": kind, "code": failure.code, "message": failure.message, "param": None}


class ResponsesProjection:
    """One generation's events as the stream events of one response.

    Args:
        response_id: ``resp_<generation id>``.
        model: the response's ``model``.
        created_at: its ``created_at`` (the generation's, so every replay says the same).
        after: leave out the events whose ``sequence_number`` is at most this
            (``starting_after``; -1: none).
        max_output_tokens: the request's limit, to tell ``incomplete`` from ``completed``.
        describe: a failure as the nested ``error`` object (``type``, ``code``,
            ``message``, ``param``); the server's error shaping.
        fields: more fields of the response object (``instructions``, ``tools``,
            ``previous_response_id``, ``background``, ``store``, ...).
    """

    #: the ``type`` of what :meth:`text_delta` returns
    text_delta_type: str | None = "response.output_text.delta"

    def __init__(
        self,
        *,
        response_id: str,
        model: str,
        created_at: int,
        after: int = -1,
        max_output_tokens: int | None = None,
        describe: Callable[[Failure], dict[str, Any]] = _default_error,
        fields: dict[str, Any] | None = None,
    ) -> None:
        self.response_id = response_id
        self.after = after
        self.max_output_tokens = max_output_tokens
        self.describe = describe
        self.base: dict[str, Any] = {
            "id": response_id,
            "object": "response",
            "created_at": created_at,
            "model": model,
            "background": False,
            "instructions": None,
            "max_output_tokens": max_output_tokens,
            "metadata": {},
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "store": True,
            "temperature": None,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": None,
            "truncation": "disabled",
            **(fields or {}),
        }
        #: the next event's sequence_number
        self.sequence_number = 0
        self.status = "in_progress"
        self.output: list[dict[str, Any]] = []
        self.text_blocks: set[str] = set()
        self.open_text: dict[str, tuple[int, TextParts]] = {}  # block id -> (output index, its text)
        self._delta_json: dict[str, tuple[str, ...] | None] = {}  # block id -> its text_delta's template
        self.usage: list[dict[str, Any]] = []
        self.error: dict[str, Any] | None = None
        self.incomplete_details: dict[str, Any] | None = None
        self.completed = False
        self.failure: Failure | None = None

    # -- the stream --

    def open(self) -> list[dict[str, Any]]:
        out = self._emit({"type": "response.created", "response": self.response()})
        return out + self._emit({"type": "response.in_progress", "response": self.response()})

    def feed(self, event: Event) -> list[dict[str, Any]]:
        kind = event.type
        if kind == "block.delta":
            data = event.to_dict()  # not .data: a coalesced delta's text is joined here
            if data["block_id"] in self.text_blocks and data["text"]:
                return self._text(data["block_id"], data["text"])
        elif kind == "block.completed":
            return self._text_done(event.data["block_id"])
        elif kind == "block.aborted":
            block_id = event.data["block_id"]
            opened = self.open_text.pop(block_id, None)
            self._delta_json.pop(block_id, None)
            if opened is not None:
                self._set_item(opened[0], "incomplete", opened[1].text())
        elif kind in ("generation.started", "block.created"):
            self.text_blocks.update(text_blocks(event))
        elif kind == "tool.call":
            if event.data.get("client_side"):
                return self._call(event.data)
        elif kind == "generation.completed":
            return self._completed(list(event.data.get("usage") or []))
        elif event.terminal:
            return self._ended(event)
        return []

    def text_delta(self, block_id: str, text_json: str) -> str | None:
        """The JSON of the ``response.output_text.delta`` a delta of ``block_id`` with this
        text (a JSON string) adds to an item already added, as :meth:`feed` would (None:
        feed the event instead)."""
        opened = self.open_text.get(block_id)
        number = self.sequence_number
        if opened is None or text_json == '""' or number <= self.after:
            return None
        pieces = self._delta_json.get(block_id)
        if pieces is None:
            return None
        opened[1].add_json(text_json)
        self.sequence_number = number + 1
        return f"{pieces[0]}{text_json}{pieces[1]}{number}{pieces[2]}"

    def close(self) -> list[dict[str, Any]]:
        return []  # the terminal event said everything

    def error_event(self, code: str, message: str, nested: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """An ``error`` event (a stream refused after it started, or the end of a failed
        one): its fields flat and under ``error``."""
        error = nested or {"type": "server_error", "code": code, "message": message, "param": None}
        return self._emit({"type": "error", "code": code, "message": message, "param": None, "error": error})

    # -- items --

    def _emit(self, obj: dict[str, Any]) -> list[dict[str, Any]]:
        obj["sequence_number"] = number = self.sequence_number
        self.sequence_number += 1
        return [obj] if number > self.after else []

    def _text(self, block_id: str, text: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        opened = self.open_text.get(block_id)
        item_id = f"msg_{block_id}"
        if opened is None:
            index = len(self.output)
            opened = self.open_text[block_id] = (index, TextParts())
            self._delta_json[block_id] = json_template(self._delta(item_id, index, HOLES[0], HOLES[1]))
            item: dict[str, Any] = {
                "id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": [],
            }
            self.output.append(item)
            out += self._emit({"type": "response.output_item.added", "output_index": index, "item": copy.deepcopy(item)})
            out += self._emit({
                "type": "response.content_part.added", "item_id": item_id, "output_index": index,
                "content_index": 0, "part": _part(""),
            })
            item["content"] = [_part("")]
        opened[1].add(text)
        return out + self._emit(self._delta(item_id, opened[0], text))

    @staticmethod
    def _delta(item_id: str, index: int, text: str, number: Any = None) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "type": "response.output_text.delta", "item_id": item_id, "output_index": index,
            "content_index": 0, "delta": text, "logprobs": [],
        }
        if number is not None:  # (else _emit numbers it)
            obj["sequence_number"] = number
        return obj

    def _text_done(self, block_id: str) -> list[dict[str, Any]]:
        opened = self.open_text.pop(block_id, None)
        self._delta_json.pop(block_id, None)
        if opened is None:
            return []
        index, parts = opened
        text = parts.text()
        item = self._set_item(index, "completed", text)
        item_id = item["id"]
        out = self._emit({
            "type": "response.output_text.done", "item_id": item_id, "output_index": index,
            "content_index": 0, "text": text, "logprobs": [],
        })
        out += self._emit({
            "type": "response.content_part.done", "item_id": item_id, "output_index": index,
            "content_index": 0, "part": _part(text),
        })
        return out + self._emit({"type": "response.output_item.done", "output_index": index, "item": copy.deepcopy(item)})

    def _set_item(self, index: int, status: str, text: str) -> dict[str, Any]:
        item = self.output[index]
        item["status"] = status
        item["content"] = [_part(text)]
        return item

    def _call(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        index = len(self.output)
        call_id = data["call_id"]
        arguments = json.dumps(data.get("args") or {})
        item = {
            "id": f"fc_{call_id}", "type": "function_call", "status": "in_progress",
            "call_id": call_id, "name": data["tool_name"], "arguments": "",
        }
        self.output.append(item)
        out = self._emit({"type": "response.output_item.added", "output_index": index, "item": dict(item)})
        out += self._emit({
            "type": "response.function_call_arguments.delta", "item_id": item["id"], "output_index": index,
            "delta": arguments,
        })
        out += self._emit({
            "type": "response.function_call_arguments.done", "item_id": item["id"], "output_index": index,
            "name": data["tool_name"], "arguments": arguments,
        })
        item.update(status="completed", arguments=arguments)
        return out + self._emit({"type": "response.output_item.done", "output_index": index, "item": dict(item)})

    # -- the end --

    def _completed(self, usage: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.completed = True
        self.usage = usage
        if limit_reached(usage, self.max_output_tokens):
            self.status = "incomplete"
            self.incomplete_details = {"reason": "max_output_tokens"}
            return self._emit({"type": "response.incomplete", "response": self.response()})
        self.status = "completed"
        return self._emit({"type": "response.completed", "response": self.response()})

    def _ended(self, event: Event) -> list[dict[str, Any]]:
        failure = self.failure = Failure.of(event)
        assert failure is not None
        nested = self.describe(failure)
        out = self.error_event(failure.code, str(nested.get("message") or failure.message), nested)
        if failure.outcome == "cancelled":
            self.status = "cancelled"
            return out
        self.status = "failed"
        self.error = {"code": failure.code, "message": failure.message}
        return out + self._emit({"type": "response.failed", "response": self.response()})

    def response(self) -> dict[str, Any]:
        """The response object now (``status``, ``output``, ``usage``, ``error``, ...)."""
        output = copy.deepcopy(self.output)
        for index, parts in self.open_text.values():  # text so far of the items still streaming
            output[index]["content"] = [_part(parts.text())]
        return {
            **self.base,
            "status": self.status,
            "output": output,
            "error": self.error,
            "incomplete_details": self.incomplete_details,
            "usage": self.usage_dict() if self.completed else None,
        }

    def usage_dict(self) -> dict[str, Any]:
        prompt = tokens(self.usage, "prompt tokens")
        sampled = tokens(self.usage, "sampled tokens")
        return {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": sampled,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + sampled,
        }


def _part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
