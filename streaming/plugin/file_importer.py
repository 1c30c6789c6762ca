"""``FileImporter``: a plugin that fetches raw bytes to make a file from."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from streaming.plugin.inputs import FileImportPluginInput
from streaming.plugin.outputs import RawDataPluginOutput
from streaming.plugin.request import PluginRequest
from streaming.plugin.service import PluginService

__all__ = ["FileImporter"]


class FileImporter(PluginService[FileImportPluginInput, RawDataPluginOutput]):
    """``FileImportPluginInput{value, data, url, mimeType}`` -> ``RawDataPluginOutput{data
    (base64), mimeType, tags}`` (``POST /import``)."""

    input_type = FileImportPluginInput

    @abstractmethod
    def run(self, request: PluginRequest[FileImportPluginInput]) -> Any:
        """Return ``InvocableResponse[RawDataPluginOutput]`` (or await to it)."""
