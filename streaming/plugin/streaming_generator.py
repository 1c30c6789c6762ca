"""``StreamingGenerator``: a plugin that streams text into blocks preallocated for it.

The runtime first asks :meth:`StreamingGenerator.determine_output_block_types` which
blocks the plugin will write (one per MIME type), creates them in state ``started``, then
calls :meth:`StreamingGenerator.run` with those blocks in ``request.data.output_blocks``.
``run`` may be written any of these ways:

- an async generator yielding chunks (the usual way)::

      async def run(self, request):
          async for token in model.stream(...):
              yield token                    # appended to the first open output block

- a coroutine that appends through the blocks themselves
  (``block.append_stream(text)``, ``block.finish_stream()``) and returns an
  ``InvocableResponse[StreamCompletePluginOutput]``;
- a plain generator or plain function, for blocking code: run in a worker thread.

A yielded chunk is a ``str`` (to the first open output block), ``(index, str)`` (to
``output_blocks[index]``), a :class:`~streaming.capabilities.FunctionCallInvocation`
(a tool call, answered in the next round) or a :class:`~streaming.model.Usage`.
"""

from __future__ import annotations

import inspect
from abc import abstractmethod
from collections.abc import AsyncIterator
from typing import Any

from streaming.model import Block, StreamState
from streaming.plugin.inputs import (
    RawBlockAndTagPluginInput,
    RawBlockAndTagPluginInputWithPreallocatedBlocks,
)
from streaming.plugin.outputs import BlockTypePluginOutput, StreamCompletePluginOutput
from streaming.plugin.request import InvocableResponse, PluginRequest
from streaming.plugin.service import PluginService
from streaming.plugin.trainable_model import TrainableModel
from streaming.plugin.trainable_service import TrainablePluginService

__all__ = ["StreamingGenerator", "TrainableStreamingGenerator"]


class StreamingGenerator(
    PluginService[RawBlockAndTagPluginInputWithPreallocatedBlocks, StreamCompletePluginOutput]
):
    """Base class of streaming generator plugins."""

    input_type = RawBlockAndTagPluginInputWithPreallocatedBlocks

    @abstractmethod
    def determine_output_block_types(
        self, request: PluginRequest[RawBlockAndTagPluginInput]
    ) -> InvocableResponse[BlockTypePluginOutput]:
        """The MIME types of the blocks ``run`` will write, in order (may be async)."""

    @abstractmethod
    def run(self, request: PluginRequest[RawBlockAndTagPluginInputWithPreallocatedBlocks]) -> Any:
        """Stream the output; see the module docstring for the shapes it may take."""

    def determine_output_block_types_endpoint(self, **kwargs: Any) -> Any:
        request = PluginRequest[RawBlockAndTagPluginInput].model_validate(kwargs)
        return self.determine_output_block_types(request)

    def abort_open_block_streams(self, blocks: list[Block], reason: str = "aborted by plugin") -> None:
        """Abort every block of ``blocks`` that is still ``started``."""
        for block in blocks:
            if block.stream_state is StreamState.STARTED:
                block.abort_stream(reason)


class TrainableStreamingGenerator(
    TrainablePluginService[RawBlockAndTagPluginInputWithPreallocatedBlocks, StreamCompletePluginOutput],
    StreamingGenerator,
):
    """A streaming generator whose ``run_with_model`` streams with the instance's trained
    model. ``run_with_model`` takes the shapes ``StreamingGenerator.run`` takes (an async
    generator of chunks, usually)."""

    input_type = RawBlockAndTagPluginInputWithPreallocatedBlocks

    async def run(  # type: ignore[override]
        self, request: PluginRequest[RawBlockAndTagPluginInputWithPreallocatedBlocks]
    ) -> AsyncIterator[Any]:
        """Load the default checkpoint, then stream what ``run_with_model`` yields."""
        model = await self.load_model(request)
        result = self.run_with_model(request, model)
        if inspect.isasyncgen(result):
            async for item in result:
                yield item
        elif inspect.isgenerator(result):
            for item in result:
                yield item
        elif inspect.isawaitable(result):
            await result

    @abstractmethod
    def run_with_model(
        self, request: PluginRequest[RawBlockAndTagPluginInputWithPreallocatedBlocks], model: TrainableModel[Any]
    ) -> Any:
        """Stream the output with ``model`` (an async generator of chunks, usually)."""
