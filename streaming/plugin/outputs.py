"""Plugin outputs, as the seed's ``steamship.plugin.outputs``."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from streaming.model import Block, File, Tag, Usage

__all__ = [
    "BlockAndTagPluginOutput",
    "BlockTypePluginOutput",
    "EmbeddedItemsPluginOutput",
    "RawBlockAndTagPluginOutput",
    "RawDataPluginOutput",
    "StreamCompletePluginOutput",
    "TrainPluginOutput",
    "TrainingParameterPluginOutput",
]


class _Output(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class BlockTypePluginOutput(_Output):
    """MIME types of the blocks a streaming plugin will write, one block each."""

    block_types_to_create: list[str] = Field(
        validation_alias=AliasChoices("block_types_to_create", "blockTypesToCreate"),
        serialization_alias="blockTypesToCreate",
    )


class StreamCompletePluginOutput(_Output):
    usage: list[Usage] = Field(default_factory=list)


class RawBlockAndTagPluginOutput(_Output):
    blocks: list[Block] = Field(default_factory=list)
    usage: list[Usage] = Field(default_factory=list)


class BlockAndTagPluginOutput(_Output):
    file: File
    usage: list[Usage] = Field(default_factory=list)


class EmbeddedItemsPluginOutput(_Output):
    embeddings: list[list[float]]
    usage: list[Usage] = Field(default_factory=list)


class RawDataPluginOutput(_Output):
    data: str | None = None  # base64
    mime_type: str | None = Field(
        default=None,
        validation_alias=AliasChoices("mime_type", "mimeType"),
        serialization_alias="mimeType",
    )
    tags: list[Tag] = Field(default_factory=list)
    #: the file the host stored the import in (set by the host, not the plugin)
    file_id: str | None = None


class TrainPluginOutput(_Output):
    archive_path: str | None = None
    inference_params: dict[str, Any] = Field(default_factory=dict)
    training_progress: dict[str, Any] = Field(default_factory=dict)
    training_results: dict[str, Any] = Field(default_factory=dict)


class TrainingParameterPluginOutput(_Output):
    training_epochs: int | None = None
    testing_holdout_percent: float | None = None
    test_split_seed: int | None = None
    training_params: dict[str, Any] = Field(default_factory=dict)
    inference_params: dict[str, Any] = Field(default_factory=dict)
