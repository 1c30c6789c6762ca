"""OpenAI chat completions: a generation's events as ``chat.completion.chunk`` objects.

Pure (events in, chunk dicts out; see :mod:`streaming.dialects`). What is projected:

- text deltas of the assistant's text blocks become ``delta.content``;
- calls of tools that are not the server's become ``delta.tool_calls`` (one chunk per call,
  ``index`` counting the calls of the answer); the server's own tools run inside the
  generation and are not shown;
- the end: a chunk with ``finish_reason`` (``tool_calls`` if the client has calls to run,
  ``length`` if the last round's sampled tokens reached ``max_tokens``, else ``stop``),
  then, with ``include_usage``, a chunk with ``choices: []`` and the usage.

Without streaming, :meth:`ChatChunkProjection.completion` is the one ``chat.completion``
object of the same answer.
"""

from __future__ import annotations

import json
from typing import Any

from streaming.dialects import HOLES, Failure, TextParts, json_template
from streaming.events import Event
from streaming.model import MimeTypes

__all__ = ["ChatChunkProjection"]

_TOOL_MIMES = (MimeTypes.FUNCTION_CALL_INVOCATION, MimeTypes.FUNCTION_CALL_RESULT)


class ChatChunkProjection:
    """One generation's events as the chunks of one chat completion.

    Args:
        completion_id: the ``id`` of every chunk (``chatcmpl-<generation id>``).
        created: the ``created`` timestamp of every chunk.
        model: the ``model`` of every chunk.
        server_tools: names of tools the server runs (their calls are not shown).
        include_usage: ``stream_options.include_usage``: every chunk has ``usage`` (null
            but on the last one, which has no choices).
        max_tokens: the request's limit, to tell ``length`` from ``stop``.
    """

    #: the ``type`` of what :meth:`text_delta` returns
    text_delta_type: str | None = None  # (a chunk has no type)

    def __init__(
        self,
        *,
        completion_id: str,
        created: int,
        model: str,
        server_tools: frozenset[str] | set[str] = frozenset(),
        include_usage: bool = False,
        max_tokens: int | None = None,
    ) -> None:
        self.base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
        self.server_tools = frozenset(server_tools)
        self.include_usage = include_usage
        self.max_tokens = max_tokens
        self.text_blocks: set[str] = set()
        self.content = TextParts()
        self.tool_calls: list[dict[str, Any]] = []
        self.usage: list[dict[str, Any]] = []
        self.completed = False
        self.failure: Failure | None = None
        self._delta_json = json_template(self.chunk({"content": HOLES[0]}))

    # -- the stream --

    def open(self) -> list[dict[str, Any]]:
        return [self.chunk({"role": "assistant", "content": ""})]

    def feed(self, event: Event) -> list[dict[str, Any]]:
        return [self.chunk(delta) for delta in self.deltas(event)]

    def text_delta(self, block_id: str, text_json: str) -> str | None:
        """The JSON of the chunk a delta of ``block_id`` with this text (a JSON string)
        adds, as :meth:`feed` would (None: feed the event instead)."""
        pieces = self._delta_json
        if block_id not in self.text_blocks or text_json == '""' or pieces is None:
            return None
        self.content.add_json(text_json)
        return f"{pieces[0]}{text_json}{pieces[1]}"

    def close(self) -> list[dict[str, Any]]:
        if not self.completed:
            return []
        out = [self.chunk({}, self.finish_reason())]
        if self.include_usage:
            out.append({**self.base, "choices": [], "usage": self.usage_dict()})
        return out

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            **self.base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    # -- reading events --

    def deltas(self, event: Event) -> list[dict[str, Any]]:
        """The OpenAI ``delta`` objects this event adds (and what it says of the end)."""
        kind = event.type
        if kind == "block.delta":
            data = event.to_dict()  # not .data: a coalesced delta's text is joined here
            if data["block_id"] in self.text_blocks and data["text"]:
                self.content.add(data["text"])
                return [{"content": data["text"]}]
        elif kind == "generation.started":
            for block in event.data.get("blocks") or []:
                self._block(block)
        elif kind == "block.created":
            self._block(event.data["block"])
        elif kind == "tool.call":
            data = event.data
            if data["tool_name"] not in self.server_tools:
                call = {
                    "index": len(self.tool_calls),
                    "id": data["call_id"],
                    "type": "function",
                    "function": {"name": data["tool_name"], "arguments": json.dumps(data["args"])},
                }
                self.tool_calls.append(call)
                return [{"tool_calls": [call]}]
        elif kind == "generation.completed":
            self.completed = True
            self.usage = list(event.data.get("usage") or [])
        elif event.terminal:
            self.failure = Failure.of(event)
        return []

    def _block(self, block: dict[str, Any]) -> None:
        mime = block.get("mime_type") or MimeTypes.TXT
        if block.get("stream_state") == "started" and mime not in _TOOL_MIMES and mime.startswith("text/"):
            self.text_blocks.add(block["id"])

    # -- the answer --

    def finish_reason(self) -> str:
        if self.tool_calls:
            return "tool_calls"
        # The last round's sampled tokens reaching the limit means the answer was cut.
        sampled = [u for u in self.usage if u.get("operation_unit") == "sampled tokens"]
        limit = self.max_tokens
        if limit and sampled and int(sampled[-1].get("operation_amount", 0)) >= limit:
            return "length"
        return "stop"

    def usage_dict(self) -> dict[str, int]:
        prompt = self._tokens("prompt tokens")
        sampled = self._tokens("sampled tokens")
        return {"prompt_tokens": prompt, "completion_tokens": sampled, "total_tokens": prompt + sampled}

    def _tokens(self, unit: str) -> int:
        return sum(int(u.get("operation_amount", 0)) for u in self.usage if u.get("operation_unit") == unit)

    def completion(self) -> dict[str, Any]:
        """The whole answer as one ``chat.completion`` object (once the generation succeeded)."""
        message: dict[str, Any] = {
            "role": "assistant",
            "content": self.content.text() if self.content or not self.tool_calls else None,
            "refusal": None,
        }
        if self.tool_calls:
            message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in self.tool_calls]
        return {
            "id": self.base["id"],
            "object": "chat.completion",
            "created": self.base["created"],
            "model": self.base["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason(), "logprobs": None}],
            "usage": self.usage_dict(),
        }
