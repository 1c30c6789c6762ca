"""The plugin driver: runs one round of a plugin, whatever its shape, and applies what it
writes to the run.

The shapes a plugin's ``run`` may have:

- an **async generator**: each item it yields is applied as it comes (text, ``(index,
  text)``, a tool call, a usage, a whole block); a plugin that never awaits still lets
  others run every ``time_slice_s``;
- a **coroutine** that writes through its blocks (``block.append_stream`` /
  ``block.finish_stream``, the seed's way) and returns a response;
- a **plain generator** or **function**: blocking code, run in a worker thread (its block
  writes hop back to the loop);
- and whatever ``run`` returns: an ``InvocableResponse`` (or its data) whose blocks and
  usage are applied.

A :class:`~streaming.plugin.generator.Generator` (not streaming) gets the conversation and
returns its blocks whole.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread

from streaming.capabilities import FunctionCallInvocation
from streaming.errors import (
    GenerationCancelledError,
    LimitExceededError,
    PluginError,
    StreamingError,
)
from streaming.metrics import RuntimeMetrics
from streaming.model import Block, MimeTypes, RoleTag, Tag, TagKind, Usage, new_id
from streaming.plugin.generator import Generator
from streaming.plugin.inputs import (
    RawBlockAndTagPluginInput,
    RawBlockAndTagPluginInputWithPreallocatedBlocks,
)
from streaming.plugin.outputs import BlockTypePluginOutput, RawBlockAndTagPluginOutput
from streaming.plugin.request import InvocableResponse, PluginRequest
from streaming.plugin.streaming_generator import StreamingGenerator
from streaming.runtime.aio import TurnMark
from streaming.runtime.run import Run
from streaming.runtime.settings import RuntimeSettings

__all__ = ["PluginDriver", "block_types"]


class PluginDriver:
    """Runs plugins' rounds and applies their output to a :class:`Run`."""

    def __init__(self, settings: RuntimeSettings, metrics: RuntimeMetrics) -> None:
        self.settings = settings
        self.metrics = metrics

    async def output_types(self, plugin: StreamingGenerator, blocks: list[Block], options: dict[str, Any]) -> list[str]:
        """The blocks ``plugin`` will write next (``determine_output_block_types``).

        Raises:
            PluginError: it failed or refused.
        """
        req = PluginRequest[RawBlockAndTagPluginInput](
            data=RawBlockAndTagPluginInput(blocks=blocks, options=options), context=plugin.context
        )
        try:
            response = plugin.determine_output_block_types(req)
            if inspect.isawaitable(response):
                response = await response
        except StreamingError:
            raise
        except Exception as exc:
            raise PluginError(f"determine_output_block_types failed: {exc}") from exc
        return block_types(response)

    async def next_blocks(self, run: Run) -> list[Block]:
        """Preallocate the output blocks of the run's next round (none for a Generator)."""
        types: list[str] = []
        if isinstance(run.plugin, StreamingGenerator):
            types = await self.output_types(run.plugin, run.conversation, run.options)
        blocks = []
        for mime in types:
            block = run.new_block(mime)
            run.machine.create_block(block)
            block._writer = run
            blocks.append(block)
        return blocks

    async def run_round(self, run: Run, blocks: list[Block]) -> None:
        """Run the plugin once on ``run.conversation``, writing into ``blocks``."""
        plugin = run.plugin
        options = run.options
        if isinstance(plugin, Generator):
            req = PluginRequest[RawBlockAndTagPluginInput](
                data=RawBlockAndTagPluginInput(blocks=run.conversation, options=options),
                context=plugin.context,
            )
            self.apply_response(run, await self._call(plugin.run, req))
            return
        req2 = PluginRequest[RawBlockAndTagPluginInputWithPreallocatedBlocks](
            data=RawBlockAndTagPluginInputWithPreallocatedBlocks(
                blocks=run.conversation, options=options, output_blocks=blocks
            ),
            context=plugin.context,
        )
        # model_validate copies the blocks; give the plugin the very blocks we bound.
        assert req2.data is not None
        req2.data.output_blocks = blocks
        fn = plugin.run
        if inspect.isasyncgenfunction(fn):
            await self._drive_async(run, fn(req2), blocks)
        elif inspect.isgeneratorfunction(fn):
            await self._drive_sync(run, fn(req2), blocks)
        else:
            self.apply_response(run, await self._call(fn, req2))

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if inspect.iscoroutinefunction(fn):
            return await fn(*args)
        result = await anyio.to_thread.run_sync(fn, *args)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _drive_async(self, run: Run, agen: Any, blocks: list[Block]) -> None:
        slice_s = self.settings.time_slice_s
        clock = time.monotonic
        slice_end = clock() + slice_s
        apply = self.apply
        log = run.log
        events = log.events
        turn = TurnMark()
        turn.arm()
        armed = True
        try:
            async for item in agen:
                if len(events) >= run.sent_limit:
                    await run.reserve_ahead()  # before events pass the store's mark
                apply(run, item, blocks)
                if clock() >= slice_end:
                    # A plugin that never awaits still lets subscribers and cancels run; one
                    # that awaited in this slice (e.g. paced by a sleep) has let them. Every
                    # other slice is a short one that only arms the mark: a paced plugin,
                    # whose every chunk starts a new slice, pays the mark's loop callback
                    # every other chunk, and a busy one yields every 1.25 slices.
                    if not armed:
                        turn.arm()
                        armed = True
                        slice_end = clock() + slice_s / 4
                        continue
                    if not turn.turned:
                        await asyncio.sleep(0)
                    armed = False
                    slice_end = clock() + slice_s
        finally:
            with anyio.CancelScope(shield=True):
                await agen.aclose()

    async def _drive_sync(self, run: Run, gen: Any, blocks: list[Block]) -> None:
        done = object()

        def step() -> Any:
            return next(gen, done)

        try:
            while True:
                item = await anyio.to_thread.run_sync(step)
                if item is done:
                    return
                if run.log.last_seq >= run.sent_limit:
                    await run.reserve_ahead()
                self.apply(run, item, blocks)
        finally:
            gen.close()

    def apply(self, run: Run, item: Any, blocks: list[Block]) -> None:
        """Apply one chunk a plugin yielded."""
        if run.cancel_reason is not None:
            raise GenerationCancelledError(f"generation {run.id} was cancelled")
        if len(run.log.events) >= self.settings.max_events_per_generation:
            raise LimitExceededError(
                f"the generation reached {self.settings.max_events_per_generation} events",
                code="max_events",
            )
        run.chunks += 1
        if run.first_delta_at is None:
            run.first_delta_at = now = time.monotonic()
            self.metrics.time_to_first_delta.observe(now - run.started_at)
        if type(item) is str:
            streaming = run.machine.open  # (the per-chunk path: _first_open inlined)
            for block in blocks:
                if block.id in streaming:
                    run.write(block.id, item)
                    break
            else:
                raise PluginError("the plugin wrote text but has no open output block")
        elif isinstance(item, tuple):
            index, text = item
            run.write(blocks[index].id, text)
        elif isinstance(item, FunctionCallInvocation):
            self.add_invocation(run, item)
        elif isinstance(item, Usage):
            run.generation.usage.append(item)
        elif isinstance(item, Block):
            item.tags = item.tags or [Tag.chat_role(RoleTag.ASSISTANT)]
            run.add_whole_block(item)
        elif item is None:
            return
        else:
            raise PluginError(f"the plugin yielded a {type(item).__name__}, not a chunk")

    def apply_response(self, run: Run, result: Any) -> None:
        """Apply what a plugin's ``run`` returned: its usage and whole blocks."""
        if result is None:
            return
        data = result.checked_data() if isinstance(result, InvocableResponse) else result
        run.generation.usage.extend(getattr(data, "usage", None) or [])
        if isinstance(data, RawBlockAndTagPluginOutput):
            for block in data.blocks:
                if block.mime_type == MimeTypes.FUNCTION_CALL_INVOCATION:
                    self.add_invocation(run, FunctionCallInvocation.from_block(block))
                else:
                    fresh = Block(
                        text=block.text,
                        mime_type=block.mime_type,
                        tags=block.tags or [Tag.chat_role(RoleTag.ASSISTANT)],
                        public_data=block.public_data,
                    )
                    run.add_whole_block(fresh)

    @staticmethod
    def add_invocation(run: Run, invocation: FunctionCallInvocation) -> None:
        """A tool call the plugin made whole: its block, created and completed at once
        (completing it routes the call)."""
        invocation = invocation.model_copy(update={"call_id": invocation.call_id or new_id("call")})
        block = invocation.to_block(
            tags=[Tag.chat_role(RoleTag.ASSISTANT), Tag(kind=TagKind.FUNCTION_SELECTION, name=invocation.tool_name)]
        )
        block.file_id = run.file.id
        block.index = len(run.file.blocks)
        run.file.blocks.append(block)
        text = block.text  # created empty, then written
        run.machine.create_block(block)
        run.write(block.id, text)
        run.complete(block.id)


def block_types(response: Any) -> list[str]:
    """The mime types a ``determine_output_block_types`` response lists.

    Raises:
        PluginError: the plugin refused, or listed none.
    """
    if isinstance(response, InvocableResponse):
        response = response.checked_data("the plugin refused the request")
    if isinstance(response, BlockTypePluginOutput):
        return list(response.block_types_to_create)
    if isinstance(response, list) and all(isinstance(m, str) for m in response):
        return list(response)
    raise PluginError("determine_output_block_types returned no block types")
