"""``echo``: streams back the last user message, one word (with its spacing) per chunk."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

from streaming.capabilities import (
    ConversationSupport,
    RequestLevel,
    SupportLevel,
    SystemPromptSupport,
)
from streaming.errors import InvalidRequestError
from streaming.model import MimeTypes, RoleTag
from streaming.plugin.conversation import fold_system_prompt
from streaming.plugin.inputs import (
    RawBlockAndTagPluginInput,
    RawBlockAndTagPluginInputWithPreallocatedBlocks,
)
from streaming.plugin.outputs import BlockTypePluginOutput
from streaming.plugin.request import InvocableResponse, PluginRequest
from streaming.plugin.streaming_generator import StreamingGenerator

__all__ = ["MAX_DELAY_MS", "MAX_REPEAT", "EchoGenerator", "echo_options", "split_words"]

#: most times one request may ask its message to be repeated
MAX_REPEAT = 1_000_000
#: longest pause one request may ask for between chunks (one minute)
MAX_DELAY_MS = 60_000

_WORD = re.compile(r"\s*\S+\s*|\s+")


def split_words(text: str) -> list[str]:
    """``"a  b c"`` -> ``["a  ", "b ", "c"]``: chunks that concatenate back to ``text``."""
    return _WORD.findall(text)


def _bounded(options: dict[str, Any], name: str, default: int, low: int, high: int, kind: type) -> Any:
    value = options.get(name, default)
    # bool is an int in Python, and a float like 1e300 or a 400-digit integer is no count.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        what = "an integer" if kind is int else "a number"
        raise InvalidRequestError(
            f"option {name!r} must be {what} from {low} to {high}", suggestion=f"send {name} between {low} and {high}"
        )
    if not low <= value <= high:  # also refuses NaN
        raise InvalidRequestError(
            f"option {name!r} must be from {low} to {high}", suggestion=f"send {name} between {low} and {high}"
        )
    return kind(value)


def echo_options(options: dict[str, Any]) -> tuple[int, float]:
    """``(repeat, delay_s)`` from a request's options.

    Raises:
        InvalidRequestError: (422) ``repeat`` not an integer in 1..MAX_REPEAT, or ``delay_ms``
            not a number in 0..MAX_DELAY_MS.
    """
    repeat = _bounded(options, "repeat", 1, 1, MAX_REPEAT, int)
    delay_ms = _bounded(options, "delay_ms", 0, 0, MAX_DELAY_MS, float)
    return repeat, delay_ms / 1000.0


class EchoGenerator(StreamingGenerator):
    """Options: ``repeat`` (int 1..1,000,000, default 1), ``delay_ms`` (between chunks,
    0..60,000, default 0); other values are refused with 422 before any block exists."""

    description = "streams your last message back word by word (options: repeat, delay_ms)"

    supported_capabilities = {
        ConversationSupport: SupportLevel.NATIVE,
        SystemPromptSupport: SupportLevel.BEST_EFFORT,
    }

    def determine_output_block_types(
        self, request: PluginRequest[RawBlockAndTagPluginInput]
    ) -> InvocableResponse[BlockTypePluginOutput]:
        assert request.data is not None
        echo_options(request.data.options)  # refused here: before any block exists
        return InvocableResponse(data=BlockTypePluginOutput(block_types_to_create=[MimeTypes.TXT]))

    async def run(
        self, request: PluginRequest[RawBlockAndTagPluginInputWithPreallocatedBlocks]
    ) -> AsyncIterator[Any]:
        assert request.data is not None
        repeat, delay = echo_options(request.data.options)
        blocks = request.data.blocks
        requested = self.requested_capabilities(blocks)
        system = requested.get(SystemPromptSupport)
        if system is not None and system.request_level is not RequestLevel.DISABLE:
            # BEST_EFFORT: the system prompt is folded into the user's message.
            blocks = fold_system_prompt(blocks)
        text = ""
        for block in reversed(blocks):
            if block.is_text and block.chat_role in (RoleTag.USER, None):
                text = block.text
                break
        chunks = split_words(text)
        if not chunks:
            return  # nothing to repeat: no loop that yields nothing
        # asyncio's own sleep (the runtime runs on asyncio): anyio's looks the event loop
        # library up on every call, which a paced stream would pay per chunk.
        sleep = asyncio.sleep
        for _ in range(repeat):
            for chunk in chunks:
                if delay:
                    await sleep(delay)
                yield chunk
