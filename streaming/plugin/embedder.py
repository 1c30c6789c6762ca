"""``Embedder``: a plugin that turns a file's blocks into vectors."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from streaming.plugin.inputs import BlockAndTagPluginInput
from streaming.plugin.outputs import EmbeddedItemsPluginOutput
from streaming.plugin.request import PluginRequest
from streaming.plugin.service import PluginService

__all__ = ["Embedder"]


class Embedder(PluginService[BlockAndTagPluginInput, EmbeddedItemsPluginOutput]):
    """``BlockAndTagPluginInput{file}`` -> ``EmbeddedItemsPluginOutput{embeddings}``, one
    vector per block in order (``POST /tag``, as in the seed)."""

    input_type = BlockAndTagPluginInput

    @abstractmethod
    def run(self, request: PluginRequest[BlockAndTagPluginInput]) -> Any:
        """Return ``InvocableResponse[EmbeddedItemsPluginOutput]`` (or await to it)."""
