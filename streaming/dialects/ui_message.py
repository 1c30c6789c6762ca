"""The Vercel AI SDK's UI message stream: a generation's events as UI message chunks.

Pure (events in, chunk dicts out; see :mod:`streaming.dialects`). Every chunk comes from
one event, so the chunks of a stream are the concatenation of what each event says, in
``seq`` order: a client that has seen the chunks of the events up to ``seq`` N is owed
exactly the chunks of the events after N (:meth:`UIMessageProjection.feed` of the first N
events, its output dropped, is how a stream picks up after N).

What is projected (the chunk types ``ai`` 6 and ``ai`` 7 both know, nothing else):

- ``generation.started``: ``start`` (``messageId``, ``messageMetadata.generationId``) and
  ``start-step``;
- a text block's deltas: ``text-start`` (at its first text), ``text-delta``, and
  ``text-end`` when the block completes or is aborted; a block of type
  :data:`REASONING_MIME` the same as ``reasoning-start`` / ``-delta`` / ``-end``. The part
  ids are the block ids;
- ``tool.call``: ``tool-input-start``, ``tool-input-delta`` (the arguments as JSON) and
  ``tool-input-available``; a call the client does not answer (``client_side: false``: a
  tool the server runs, or one nobody offered, answered at once with an error) is marked
  ``providerExecuted`` (the client does not run it, nor waits for it), and its
  ``tool.result`` is ``tool-output-available`` or ``tool-output-error``;
- a tool round: the next round's first block closes the step (``finish-step``) and opens
  the next (``start-step``);
- ``generation.completed``: ``finish-step`` and ``finish`` with ``finishReason``
  (``tool-calls`` when client tools wait for their outputs, ``length`` when the sampled
  tokens reached ``max_tokens``, else ``stop``) and ``messageMetadata.usage``
  (``inputTokens``, ``outputTokens``, ``totalTokens``);
- ``generation.failed`` / ``generation.cancelled``: every part still open is ended (text
  and reasoning with their ``-end``, a tool call without output with
  ``tool-output-error``), then ``finish-step``, ``error`` (``errorText``) or ``abort``
  (``reason``), and ``finish`` (``error`` or ``other``). No part is left streaming.

A request that continues an assistant message (the outputs of its client tools) passes
that message's id: its ``start`` names it, so the client extends the same message. A
stream that replays such a generation from its start to a client that starts the message
afresh (the AI SDK's resume) also passes the chunks of the parts the message had before
(``earlier``, built by :func:`earlier_parts` from the conversation's blocks): they come
right after ``start``, so the replay is still the same function of the events.
"""

from __future__ import annotations

import json
from typing import Any

from streaming.dialects import HOLES, Failure, json_template
from streaming.events import Event
from streaming.model import MimeTypes

__all__ = ["REASONING_MIME", "UIMessageProjection", "earlier_parts", "tool_output"]

#: a block of this MIME type is the model's reasoning (``reasoning-*`` chunks)
REASONING_MIME = "text/x-reasoning"

_TOOL_MIMES = (MimeTypes.FUNCTION_CALL_INVOCATION, MimeTypes.FUNCTION_CALL_RESULT)


def tool_output(result: list[str]) -> Any:
    """A tool's result (a list of strings) as the ``output`` of its part: the one string
    when there is one, else the list."""
    return result[0] if len(result) == 1 else list(result)


class UIMessageProjection:
    """One generation's events as the chunks of one assistant message's stream.

    Args:
        message_id: the assistant message's id (``start.messageId``): a new one, or the
            message this generation continues.
        max_tokens: the request's token limit, to tell ``length`` from ``stop``.
        earlier: chunks of the parts the message had before this generation (for a stream
            that replays a continuation to a client starting afresh: :func:`earlier_parts`),
            sent right after ``start``.
    """

    #: the ``type`` of what :meth:`text_delta` returns
    text_delta_type: str | None = None  # (text-delta or reasoning-delta)

    def __init__(
        self,
        *,
        message_id: str,
        max_tokens: int | None = None,
        earlier: list[dict[str, Any]] | None = None,
    ) -> None:
        self.message_id = message_id
        self.earlier = list(earlier or [])
        self.max_tokens = max_tokens
        #: block id -> "text" or "reasoning", for blocks whose text is shown
        self.kinds: dict[str, str] = {}
        #: parts started and not yet ended (block ids)
        self.open_parts: dict[str, str] = {}
        self._delta_json: dict[str, tuple[str, ...] | None] = {}  # block id -> its text_delta's template
        #: tool calls without an output: call id -> the tool's name
        self.pending: dict[str, str] = {}
        #: client tool calls, in order
        self.client_calls: list[str] = []
        self.in_step = False
        self.step_has_results = False
        self.generation_id: str | None = None
        self.usage: list[dict[str, Any]] = []
        self.completed = False
        self.ended = False
        self.failure: Failure | None = None

    # -- the Projection protocol (every chunk comes from an event) --

    def open(self) -> list[dict[str, Any]]:
        return []

    def close(self) -> list[dict[str, Any]]:
        return []

    def text_delta(self, block_id: str, text_json: str) -> str | None:
        """The JSON of the ``text-delta`` (or ``reasoning-delta``) a delta of ``block_id``
        with this text (a JSON string) adds to a part already started, as :meth:`feed`
        would (None: feed the event instead)."""
        pieces = self._delta_json.get(block_id)
        if pieces is None or text_json == '""' or self.ended:
            return None
        return f"{pieces[0]}{text_json}{pieces[1]}"

    def feed(self, event: Event) -> list[dict[str, Any]]:
        """The chunks this event adds (often none)."""
        if self.ended:
            return []
        kind = event.type
        if kind == "block.delta":
            return self._delta(event)
        if kind == "block.created":
            return self._created(event.data["block"])
        if kind in ("block.completed", "block.aborted"):
            return self._end_part(event.data["block_id"])
        if kind == "tool.call":
            return self._call(event.data)
        if kind == "tool.result":
            return self._result(event.data)
        if kind == "generation.started":
            return self._started(event)
        if kind == "generation.completed":
            return self._completed(event)
        if event.terminal:
            return self._failed(event)
        return []

    # -- events --

    def _started(self, event: Event) -> list[dict[str, Any]]:
        self.generation_id = event.generation_id
        for block in event.data.get("blocks") or []:
            self._register(block)
        self.in_step = True
        return [
            {"type": "start", "messageId": self.message_id, "messageMetadata": {"generationId": event.generation_id}},
            *self.earlier,
            {"type": "start-step"},
        ]

    def _register(self, block: dict[str, Any]) -> None:
        mime = block.get("mime_type") or MimeTypes.TXT
        if mime == REASONING_MIME:
            self.kinds[block["id"]] = "reasoning"
        elif mime.startswith("text/") and mime not in _TOOL_MIMES:
            self.kinds[block["id"]] = "text"

    def _created(self, block: dict[str, Any]) -> list[dict[str, Any]]:
        self._register(block)
        if block.get("mime_type") == MimeTypes.FUNCTION_CALL_RESULT:
            return []
        # A block of the model's (text or a call) after tool results: the next round.
        return self._next_step() if self.step_has_results else []

    def _next_step(self) -> list[dict[str, Any]]:
        out = self._end_open_parts()
        out.append({"type": "finish-step"})
        out.append({"type": "start-step"})
        self.step_has_results = False
        return out

    def _delta(self, event: Event) -> list[dict[str, Any]]:
        data = event.to_dict()  # (not .data: a coalesced delta's text is joined here)
        block_id = data["block_id"]
        part = self.kinds.get(block_id)
        text = data["text"]
        if part is None or not text:
            return []
        out: list[dict[str, Any]] = []
        if block_id not in self.open_parts:
            self.open_parts[block_id] = part
            self._delta_json[block_id] = json_template(self._text_delta(part, block_id, HOLES[0]))
            out.append({"type": f"{part}-start", "id": block_id})
        out.append(self._text_delta(part, block_id, text))
        return out

    @staticmethod
    def _text_delta(part: str, block_id: str, text: str) -> dict[str, Any]:
        return {"type": f"{part}-delta", "id": block_id, "delta": text}

    def _end_part(self, block_id: str) -> list[dict[str, Any]]:
        part = self.open_parts.pop(block_id, None)
        self._delta_json.pop(block_id, None)
        if part is None:
            return []
        # Ended once: a later delta to the same block (there is none) would not reopen it.
        self.kinds.pop(block_id, None)
        return [{"type": f"{part}-end", "id": block_id}]

    def _end_open_parts(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for block_id in list(self.open_parts):
            out += self._end_part(block_id)
        return out

    def _call(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        call_id, name = data["call_id"], data["tool_name"]
        out = self._next_step() if self.step_has_results else []
        server = not data.get("client_side", True)  # the server's tool, or nobody's (an error at once)
        extra: dict[str, Any] = {"providerExecuted": True} if server else {}
        self.pending[call_id] = name
        if not server:
            self.client_calls.append(call_id)
        args = data.get("args") or {}
        out += [
            {"type": "tool-input-start", "toolCallId": call_id, "toolName": name, **extra},
            {"type": "tool-input-delta", "toolCallId": call_id, "inputTextDelta": json.dumps(args)},
            {"type": "tool-input-available", "toolCallId": call_id, "toolName": name, "input": args, **extra},
        ]
        return out

    def _result(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        call_id = data["call_id"]
        name = self.pending.pop(call_id, None)
        if name is None:
            return []
        self.step_has_results = True
        extra: dict[str, Any] = {} if call_id in self.client_calls else {"providerExecuted": True}
        result = [str(r) for r in data.get("result") or []]
        if data.get("is_error"):
            return [{"type": "tool-output-error", "toolCallId": call_id, "errorText": "; ".join(result), **extra}]
        return [{"type": "tool-output-available", "toolCallId": call_id, "output": tool_output(result), **extra}]

    def _completed(self, event: Event) -> list[dict[str, Any]]:
        self.completed = self.ended = True
        self.usage = list(event.data.get("usage") or [])
        out = self._end_open_parts()
        out.append({"type": "finish-step"})
        out.append(
            {
                "type": "finish",
                "finishReason": self.finish_reason(),
                "messageMetadata": {"generationId": event.generation_id, "usage": self.usage_dict()},
            }
        )
        return out

    def _failed(self, event: Event) -> list[dict[str, Any]]:
        self.ended = True
        failure = self.failure = Failure.of(event)
        assert failure is not None
        out = self._end_open_parts()
        why = failure.message if failure.outcome == "failed" else f"cancelled: {event.data.get('reason') or ''}"
        for call_id in list(self.pending):
            del self.pending[call_id]
            extra = {} if call_id in self.client_calls else {"providerExecuted": True}
            out.append({"type": "tool-output-error", "toolCallId": call_id, "errorText": why, **extra})
        out.append({"type": "finish-step"})
        if failure.outcome == "failed":
            text = failure.message + (f" ({failure.suggestion})" if failure.suggestion else "")
            out.append({"type": "error", "errorText": f"{failure.code}: {text}"})
            reason = "error"
        else:
            out.append({"type": "abort", "reason": str(event.data.get("reason") or "cancelled")})
            reason = "other"
        out.append({"type": "finish", "finishReason": reason, "messageMetadata": {"generationId": event.generation_id}})
        return out

    # -- the answer --

    def finish_reason(self) -> str:
        if any(call_id in self.pending for call_id in self.client_calls):
            return "tool-calls"
        sampled = [u for u in self.usage if u.get("operation_unit") == "sampled tokens"]
        if self.max_tokens and sampled and int(sampled[-1].get("operation_amount", 0)) >= self.max_tokens:
            return "length"
        return "stop"

    def usage_dict(self) -> dict[str, int]:
        prompt = self._tokens("prompt tokens")
        sampled = self._tokens("sampled tokens")
        return {"inputTokens": prompt, "outputTokens": sampled, "totalTokens": prompt + sampled}

    def _tokens(self, unit: str) -> int:
        return sum(int(u.get("operation_amount", 0)) for u in self.usage if u.get("operation_unit") == unit)


def earlier_parts(blocks: list[dict[str, Any]], client_results: set[str] | frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """The chunks that rebuild the parts an assistant message already has, from its blocks
    in the conversation (text, reasoning, tool calls and their results, in order; blocks of
    other types and empty texts are left out), each tool round a step.

    A call the client answered is rebuilt without ``tool-input-available`` (its input comes
    whole in ``tool-input-delta``): that chunk is what makes a client run its tool
    (``onToolCall``), and this one has run.

    Args:
        blocks: the message's blocks (``id``, ``mime_type``, ``text``, as in the store).
        client_results: ids of the result blocks the client gave (its tools' outputs);
            the other calls were the server's (``providerExecuted``).
    """
    results: dict[str, tuple[dict[str, Any], bool]] = {}  # call id -> (result, the client's)
    for block in blocks:
        if block.get("mime_type") == MimeTypes.FUNCTION_CALL_RESULT:
            result = _json_object(block)
            if result is not None and "call_id" in result:
                results[str(result["call_id"])] = (result, block.get("id") in client_results)
    out: list[dict[str, Any]] = []
    in_step = after_results = False
    for block in blocks:
        mime = block.get("mime_type") or MimeTypes.TXT
        text = str(block.get("text") or "")
        if mime != MimeTypes.FUNCTION_CALL_RESULT and after_results:
            out.append({"type": "finish-step"})
            in_step = after_results = False
        if not in_step:
            out.append({"type": "start-step"})
            in_step = True
        if mime == MimeTypes.FUNCTION_CALL_INVOCATION:
            out += _earlier_call(_json_object(block), results)
        elif mime == MimeTypes.FUNCTION_CALL_RESULT:
            after_results = True
        elif text and (mime == REASONING_MIME or mime.startswith("text/")):
            part = "reasoning" if mime == REASONING_MIME else "text"
            out += [
                {"type": f"{part}-start", "id": block["id"]},
                {"type": f"{part}-delta", "id": block["id"], "delta": text},
                {"type": f"{part}-end", "id": block["id"]},
            ]
    if in_step:
        out.append({"type": "finish-step"})
    return out


def _json_object(block: dict[str, Any]) -> dict[str, Any] | None:
    try:
        value = json.loads(str(block.get("text") or ""))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _earlier_call(call: dict[str, Any] | None, results: dict[str, tuple[dict[str, Any], bool]]) -> list[dict[str, Any]]:
    """The chunks of one earlier tool call and its output."""
    if call is None or "call_id" not in call or "tool_name" not in call:
        return []
    call_id, name, args = str(call["call_id"]), str(call["tool_name"]), call.get("args") or {}
    answer = results.get(call_id)
    if answer is None:  # not answered yet: the client's to run
        return [
            {"type": "tool-input-start", "toolCallId": call_id, "toolName": name},
            {"type": "tool-input-available", "toolCallId": call_id, "toolName": name, "input": args},
        ]
    result, by_client = answer
    extra: dict[str, Any] = {} if by_client else {"providerExecuted": True}
    out: list[dict[str, Any]] = [{"type": "tool-input-start", "toolCallId": call_id, "toolName": name, **extra}]
    if by_client:
        out.append({"type": "tool-input-delta", "toolCallId": call_id, "inputTextDelta": json.dumps(args)})
    else:
        out.append({"type": "tool-input-available", "toolCallId": call_id, "toolName": name, "input": args, **extra})
    items = [str(r) for r in result.get("result") or []]
    if result.get("is_error"):
        out.append({"type": "tool-output-error", "toolCallId": call_id, "errorText": "; ".join(items), **extra})
    else:
        out.append({"type": "tool-output-available", "toolCallId": call_id, "output": tool_output(items), **extra})
    return out
