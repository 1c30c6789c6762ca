"""``scripted``: a test double that plays a script of rounds (like LangChain's fake models).

Options:

- ``blocks``: MIME types to preallocate each round (default ``["text/plain"]``);
- ``rounds``: a list of rounds, each a list of steps. Round *n* plays when the plugin is
  called for the *n*-th time in a generation (after *n* tool rounds). Steps:

  - ``{"text": "...", "block": 0, "chunk": N}``: append ``text`` to output block ``block``
    in chunks of ``N`` characters (default: all at once);
  - ``{"sleep_ms": N}``;
  - ``{"tool_call": {"name": ..., "args": {...}}}``: call a tool;
  - ``{"echo_tool_results": true}``: write the results of the previous round's tools;
  - ``{"error": "message"}``: raise (with ``"code": "..."``, a :class:`StreamingError` of
    that code, as a plugin refusing a request would: ``"invalid_request"``, say).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio

from streaming.capabilities import (
    ConversationSupport,
    FunctionCallingSupport,
    FunctionCallInvocation,
    FunctionCallResult,
    SupportLevel,
    SystemPromptSupport,
)
from streaming.errors import InvalidRequestError, StreamingError
from streaming.model import MimeTypes
from streaming.plugin.inputs import (
    RawBlockAndTagPluginInput,
    RawBlockAndTagPluginInputWithPreallocatedBlocks,
)
from streaming.plugin.outputs import BlockTypePluginOutput
from streaming.plugin.request import InvocableResponse, PluginRequest
from streaming.plugin.streaming_generator import StreamingGenerator

__all__ = ["ScriptError", "ScriptedGenerator"]


class ScriptError(RuntimeError):
    """Raised by an ``error`` step."""


def _round_index(blocks: list[Any]) -> int:
    """How many tool turns this generation has had: runs of result blocks after the
    last user message (earlier turns of the conversation do not count)."""
    last_user = max((i for i, b in enumerate(blocks) if b.chat_role == "user"), default=-1)
    turns = 0
    in_results = False
    for b in blocks[last_user + 1 :]:
        is_result = b.mime_type == MimeTypes.FUNCTION_CALL_RESULT
        if is_result and not in_results:
            turns += 1
        in_results = is_result
    return turns


class ScriptedGenerator(StreamingGenerator):
    description = (
        "a test double: plays the script in its 'rounds' option (text, sleeps, tool calls, "
        "errors); without one it says hello"
    )

    supported_capabilities = {
        ConversationSupport: SupportLevel.NATIVE,
        SystemPromptSupport: SupportLevel.NATIVE | SupportLevel.CAN_DISABLE,
        FunctionCallingSupport: SupportLevel.NATIVE,
    }

    def _script(self, options: dict[str, Any]) -> list[list[dict[str, Any]]]:
        rounds = options.get("rounds", [[{"text": "Hello from the scripted generator."}]])
        if not isinstance(rounds, list) or not all(isinstance(r, list) for r in rounds):
            raise InvalidRequestError("option 'rounds' must be a list of lists of steps")
        return rounds

    def determine_output_block_types(
        self, request: PluginRequest[RawBlockAndTagPluginInput]
    ) -> InvocableResponse[BlockTypePluginOutput]:
        assert request.data is not None
        types = request.data.options.get("blocks", [MimeTypes.TXT])
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise InvalidRequestError("option 'blocks' must be a list of MIME types")
        self._script(request.data.options)
        return InvocableResponse(data=BlockTypePluginOutput(block_types_to_create=types))

    async def run(
        self, request: PluginRequest[RawBlockAndTagPluginInputWithPreallocatedBlocks]
    ) -> AsyncIterator[Any]:
        assert request.data is not None
        rounds = self._script(request.data.options)
        index = _round_index(request.data.blocks)
        if index >= len(rounds):
            return
        for step in rounds[index]:
            if "text" in step:
                text = str(step["text"])
                block = int(step.get("block", 0))
                size = int(step.get("chunk", 0)) or len(text) or 1
                for i in range(0, len(text), size):
                    yield (block, text[i : i + size])
            elif "sleep_ms" in step:
                await anyio.sleep(float(step["sleep_ms"]) / 1000.0)
            elif "tool_call" in step:
                call = step["tool_call"]
                yield FunctionCallInvocation(tool_name=call["name"], args=call.get("args", {}))
            elif step.get("echo_tool_results"):
                for b in request.data.blocks:
                    if b.mime_type == MimeTypes.FUNCTION_CALL_RESULT:
                        res = FunctionCallResult.from_block(b)
                        prefix = "error" if res.is_error else "result"
                        yield f"[{res.tool_name} {prefix}: {'; '.join(res.result)}]"
            elif "error" in step:
                if "code" in step:
                    raise StreamingError(str(step["error"]), code=str(step["code"]))
                raise ScriptError(str(step["error"]))
            else:
                raise InvalidRequestError(f"unknown script step {step!r}")
