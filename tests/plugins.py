"""Generator plugins used only by the tests (registered by "tests.plugins:Name")."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import anyio.lowlevel

from streaming.model import MimeTypes, Usage
from streaming.plugin import (
    BlockTypePluginOutput,
    InvocableResponse,
    StreamCompletePluginOutput,
    StreamingGenerator,
)


def _types(request: Any) -> InvocableResponse[BlockTypePluginOutput]:
    n = int(request.data.options.get("blocks", 1))
    return InvocableResponse(data=BlockTypePluginOutput(block_types_to_create=[MimeTypes.TXT] * n))


class Counter:
    """Chunks produced per generation id, readable from the test thread."""

    lock = threading.Lock()
    produced: dict[str, int] = {}

    @classmethod
    def bump(cls, key: str) -> None:
        with cls.lock:
            cls.produced[key] = cls.produced.get(key, 0) + 1

    @classmethod
    def get(cls, key: str) -> int:
        with cls.lock:
            return cls.produced.get(key, 0)


class CountingGenerator(StreamingGenerator):
    """Streams "n " forever (or ``limit`` chunks), every ``delay_ms``; counts what it made."""

    def determine_output_block_types(self, request: Any) -> InvocableResponse[BlockTypePluginOutput]:
        return _types(request)

    async def run(self, request: Any) -> AsyncIterator[Any]:
        opts = request.data.options
        key = opts["key"]
        limit = int(opts.get("limit", 10**9))
        delay = float(opts.get("delay_ms", 2)) / 1000
        for i in range(limit):
            Counter.bump(key)
            yield f"{i} "
            await anyio.sleep(delay)


class SyncCountingGenerator(StreamingGenerator):
    """Blocking code: a plain generator the runtime iterates in a worker thread."""

    def determine_output_block_types(self, request: Any) -> InvocableResponse[BlockTypePluginOutput]:
        return _types(request)

    def run(self, request: Any) -> Iterator[Any]:
        import time

        opts = request.data.options
        key = opts["key"]
        for i in range(int(opts.get("limit", 10**9))):
            Counter.bump(key)
            yield f"{i} "
            time.sleep(float(opts.get("delay_ms", 2)) / 1000)


class BlockApiGenerator(StreamingGenerator):
    """The seed's way: a coroutine that appends through its blocks and finishes them."""

    def determine_output_block_types(self, request: Any) -> InvocableResponse[BlockTypePluginOutput]:
        return _types(request)

    async def run(self, request: Any) -> InvocableResponse[StreamCompletePluginOutput]:
        for i, block in enumerate(request.data.output_blocks):
            for word in ("block ", str(i), " ünïcødé ✓"):
                block.append_stream(word)
                await anyio.lowlevel.checkpoint()
            block.finish_stream()
        usage = [Usage(operation_unit="characters", operation_amount=30)]
        return InvocableResponse(data=StreamCompletePluginOutput(usage=usage))


class ThreadBlockApiGenerator(StreamingGenerator):
    """A plain (sync) function run in a worker thread, appending through its blocks."""

    def determine_output_block_types(self, request: Any) -> InvocableResponse[BlockTypePluginOutput]:
        return _types(request)

    def run(self, request: Any) -> None:
        import time

        opts = request.data.options
        block = request.data.output_blocks[0]
        for i in range(int(opts.get("limit", 10**9))):
            Counter.bump(opts["key"])
            block.append_stream(f"{i} ")
            time.sleep(float(opts.get("delay_ms", 2)) / 1000)
        block.finish_stream()


class RaisingGenerator(StreamingGenerator):
    """Writes ``k`` chunks to each of its blocks, then raises."""

    def determine_output_block_types(self, request: Any) -> InvocableResponse[BlockTypePluginOutput]:
        return _types(request)

    async def run(self, request: Any) -> AsyncIterator[Any]:
        k = int(request.data.options.get("k", 3))
        for i in range(k):
            for b in range(len(request.data.output_blocks)):
                yield (b, f"c{i} ")
            await anyio.lowlevel.checkpoint()
        raise ValueError("model exploded")
