"""``Tagger`` and ``TrainableTagger``: plugins that tag a file's blocks."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from streaming.plugin.inputs import BlockAndTagPluginInput
from streaming.plugin.outputs import BlockAndTagPluginOutput
from streaming.plugin.request import PluginRequest
from streaming.plugin.service import PluginService
from streaming.plugin.trainable_model import TrainableModel
from streaming.plugin.trainable_service import TrainablePluginService

__all__ = ["Tagger", "TrainableTagger"]


class Tagger(PluginService[BlockAndTagPluginInput, BlockAndTagPluginOutput]):
    """Tags a file: ``BlockAndTagPluginInput{file}`` -> ``BlockAndTagPluginOutput{file}``
    (``POST /tag``). ``run`` may be sync (run in a worker thread) or async."""

    input_type = BlockAndTagPluginInput

    @abstractmethod
    def run(self, request: PluginRequest[BlockAndTagPluginInput]) -> Any:
        """Return ``InvocableResponse[BlockAndTagPluginOutput]`` (or await to it)."""


class TrainableTagger(TrainablePluginService[BlockAndTagPluginInput, BlockAndTagPluginOutput]):
    """A tagger whose ``run_with_model`` uses the instance's trained model."""

    input_type = BlockAndTagPluginInput

    @abstractmethod
    def run_with_model(self, request: PluginRequest[BlockAndTagPluginInput], model: TrainableModel[Any]) -> Any:
        """Return ``InvocableResponse[BlockAndTagPluginOutput]`` (or await to it)."""
