"""``Generator``: a non-streaming generator; the runtime publishes each output block whole."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from streaming.plugin.inputs import RawBlockAndTagPluginInput
from streaming.plugin.outputs import RawBlockAndTagPluginOutput
from streaming.plugin.request import InvocableResponse, PluginRequest
from streaming.plugin.service import PluginService

__all__ = ["Generator"]


class Generator(PluginService[RawBlockAndTagPluginInput, RawBlockAndTagPluginOutput]):
    """Returns all its output blocks at once (``run`` may be sync or async)."""

    input_type = RawBlockAndTagPluginInput

    @abstractmethod
    def run(self, request: PluginRequest[RawBlockAndTagPluginInput]) -> Any:
        """Return ``InvocableResponse[RawBlockAndTagPluginOutput]`` (or await to it)."""

    def run_endpoint(self, **kwargs: Any) -> InvocableResponse[RawBlockAndTagPluginOutput]:
        return super().run_endpoint(**kwargs)
