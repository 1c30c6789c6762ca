"""``echo``: streams back the last user message, one word (with its spacing) per chunk."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import anyio

from streaming.capabilities import (
    ConversationSupport,
    RequestLevel,
    SupportLevel,
    SystemPromptSupport,
)
from streaming.model import MimeTypes, RoleTag
from streaming.plugin.conversation import fold_system_prompt
from streaming.plugin.inputs import (
    RawBlockAndTagPluginInput,
    RawBlockAndTagPluginInputWithPreallocatedBlocks,
)
from streaming.plugin.outputs import BlockTypePluginOutput
from streaming.plugin.request import InvocableResponse, PluginRequest
from streaming.plugin.streaming_generator import StreamingGenerator

__all__ = ["EchoGenerator", "split_words"]

_WORD = re.compile(r"\s*\S+\s*|\s+")


def split_words(text: str) -> list[str]:
    """``"a  b c"`` -> ``["a  ", "b ", "c"]``: chunks that concatenate back to ``text``."""
    return _WORD.findall(text)


class EchoGenerator(StreamingGenerator):
    """Options: ``repeat`` (int, default 1), ``delay_ms`` (between chunks, default 0)."""

    description = "streams your last message back word by word (options: repeat, delay_ms)"

    supported_capabilities = {
        ConversationSupport: SupportLevel.NATIVE,
        SystemPromptSupport: SupportLevel.BEST_EFFORT,
    }

    def determine_output_block_types(
        self, request: PluginRequest[RawBlockAndTagPluginInput]
    ) -> InvocableResponse[BlockTypePluginOutput]:
        return InvocableResponse(data=BlockTypePluginOutput(block_types_to_create=[MimeTypes.TXT]))

    async def run(
        self, request: PluginRequest[RawBlockAndTagPluginInputWithPreallocatedBlocks]
    ) -> AsyncIterator[Any]:
        assert request.data is not None
        options = request.data.options
        repeat = int(options.get("repeat", 1))
        delay = float(options.get("delay_ms", 0)) / 1000.0
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
        for _ in range(repeat):
            for chunk in chunks:
                if delay:
                    await anyio.sleep(delay)
                yield chunk
