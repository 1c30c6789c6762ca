"""``Generator``: a non-streaming generator; the runtime publishes each output block whole."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from streaming.plugin.inputs import RawBlockAndTagPluginInput
from streaming.plugin.outputs import RawBlockAndTagPluginOutput
from streaming.plugin.request import InvocableResponse, PluginRequest
from streaming.plugin.service import PluginService
from streaming.plugin.trainable_model import TrainableModel
from streaming.plugin.trainable_service import TrainablePluginService

__all__ = ["Generator", "TrainableGenerator"]


class Generator(PluginService[RawBlockAndTagPluginInput, RawBlockAndTagPluginOutput]):
    """Returns all its output blocks at once (``run`` may be sync or async)."""

    input_type = RawBlockAndTagPluginInput

    @abstractmethod
    def run(self, request: PluginRequest[RawBlockAndTagPluginInput]) -> Any:
        """Return ``InvocableResponse[RawBlockAndTagPluginOutput]`` (or await to it)."""

    def run_endpoint(self, **kwargs: Any) -> InvocableResponse[RawBlockAndTagPluginOutput]:
        return super().run_endpoint(**kwargs)


class TrainableGenerator(
    TrainablePluginService[RawBlockAndTagPluginInput, RawBlockAndTagPluginOutput], Generator
):
    """A ``Generator`` whose ``run_with_model`` uses the instance's trained model; hosted
    like any generator (``POST /generations``, ``POST /plugins/{name}/generate``)."""

    input_type = RawBlockAndTagPluginInput

    @abstractmethod
    def run_with_model(self, request: PluginRequest[RawBlockAndTagPluginInput], model: TrainableModel[Any]) -> Any:
        """Return ``InvocableResponse[RawBlockAndTagPluginOutput]`` (or await to it)."""
