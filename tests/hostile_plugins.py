"""Plugins that misbehave on purpose (fair loop, bounded output, surrogates); registered
by "tests.hostile_plugins:Name"."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from streaming.model import MimeTypes
from streaming.plugin import BlockTypePluginOutput, InvocableResponse, StreamingGenerator


class _OneText(StreamingGenerator):
    """``options.blocks`` text blocks (default 1)."""

    def determine_output_block_types(self, request: Any) -> InvocableResponse[BlockTypePluginOutput]:
        n = int(request.data.options.get("blocks", 1))
        return InvocableResponse(data=BlockTypePluginOutput(block_types_to_create=[MimeTypes.TXT] * n))


class Spinner(_OneText):
    """Yields empty chunks forever and never awaits."""

    async def run(self, request: Any) -> AsyncIterator[Any]:
        while True:
            yield ""


class Flood(_OneText):
    """Yields ``options.word`` (default "x "; ``size`` makes it that many "w") forever,
    into each of its blocks in turn, and never awaits."""

    async def run(self, request: Any) -> AsyncIterator[Any]:
        options = request.data.options
        word = options.get("word", "x ")
        size = int(options.get("size", 0))
        if size:
            word = "w" * (size - 1) + " "
        n = int(options.get("blocks", 1))
        i = 0
        while True:
            yield (i % n, word)
            i += 1


class SyncSpinner(_OneText):
    """Blocking code: a plain generator yielding empty chunks forever."""

    def run(self, request: Any) -> Iterator[Any]:
        while True:
            yield ""


class Writer(_OneText):
    """A coroutine writing through its block without ever awaiting, until stopped."""

    async def run(self, request: Any) -> None:
        block = request.data.output_blocks[0]
        size = int(request.data.options.get("size", 1024))
        word = "w" * size
        while True:
            block.append_stream(word)


class Exhausted(_OneText):
    """Writes a little, then runs out of memory (a MemoryError from the plugin)."""

    async def run(self, request: Any) -> AsyncIterator[Any]:
        yield "before "
        raise MemoryError()


class Surrogate(_OneText):
    """Emits text with lone surrogates (as a broken decoder might)."""

    async def run(self, request: Any) -> AsyncIterator[Any]:
        yield "a\ud800b "
        yield "\udfff"
        yield " end"
