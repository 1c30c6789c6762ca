"""``Generator``: a non-streaming generator; the runtime publishes each output block whole."""

from __future__ import annotations

import base64
import binascii
from abc import abstractmethod
from typing import Any

from streaming.model import Block, MimeTypes
from streaming.plugin.inputs import RawBlockAndTagPluginInput
from streaming.plugin.outputs import RawBlockAndTagPluginOutput
from streaming.plugin.request import InvocableResponse, PluginRequest
from streaming.plugin.service import PluginService
from streaming.plugin.trainable_model import TrainableModel
from streaming.plugin.trainable_service import TrainablePluginService

__all__ = ["Generator", "TrainableGenerator", "block_bytes", "is_binary_mime"]


def is_binary_mime(mime: str | None) -> bool:
    """True for MIME types whose blocks keep their bytes base64-encoded in ``text``."""
    m = (mime or MimeTypes.TXT).split(";")[0].strip().lower()
    textual = m.startswith("text/") or m.endswith(("json", "xml", "javascript")) or "+json" in m
    return not textual


def block_bytes(block: Block) -> bytes:
    """A block's content as bytes: its text as UTF-8, or, for a binary MIME type, the
    bytes its base64 ``text`` holds (text that is not base64 is served as it is)."""
    if is_binary_mime(block.mime_type):
        try:
            return base64.b64decode(block.text, validate=True)
        except (binascii.Error, ValueError):
            pass
    return block.text.encode()


class Generator(PluginService[RawBlockAndTagPluginInput, RawBlockAndTagPluginOutput]):
    """Returns all its output blocks at once (``run`` may be sync or async)."""

    input_type = RawBlockAndTagPluginInput

    @abstractmethod
    def run(self, request: PluginRequest[RawBlockAndTagPluginInput]) -> Any:
        """Return ``InvocableResponse[RawBlockAndTagPluginOutput]`` (or await to it)."""

    def run_endpoint(self, **kwargs: Any) -> InvocableResponse[RawBlockAndTagPluginOutput]:
        return super().run_endpoint(**kwargs)

    @staticmethod
    def upload_block_content_to_signed_url(block: Block, content: bytes | None = None) -> Block:
        """A block whose binary content (an image, audio) is kept once by the runtime and
        served from ``/blocks/{id}/raw`` with its MIME type, rather than inline.

        ``content`` (or, if None, the block's text as UTF-8) is stored base64-encoded in the
        block's ``text``: the convention for blocks of a binary MIME type.

        Raises:
            InvalidRequestError: the block's MIME type is textual (send its text as it is).
        """
        if not is_binary_mime(block.mime_type):
            from streaming.errors import InvalidRequestError

            raise InvalidRequestError(f"{block.mime_type} is a text type: its text is served as it is")
        data = content if content is not None else block.text.encode()
        return block.model_copy(update={"text": base64.b64encode(data).decode("ascii")})


class TrainableGenerator(
    TrainablePluginService[RawBlockAndTagPluginInput, RawBlockAndTagPluginOutput], Generator
):
    """A ``Generator`` whose ``run_with_model`` uses the instance's trained model; hosted
    like any generator (``POST /generations``, ``POST /plugins/{name}/generate``)."""

    input_type = RawBlockAndTagPluginInput

    @abstractmethod
    def run_with_model(self, request: PluginRequest[RawBlockAndTagPluginInput], model: TrainableModel[Any]) -> Any:
        """Return ``InvocableResponse[RawBlockAndTagPluginOutput]`` (or await to it)."""
