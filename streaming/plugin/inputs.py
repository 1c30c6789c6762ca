"""Plugin inputs, as the seed's ``steamship.plugin.inputs``."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from streaming.model import Block, File

__all__ = [
    "BlockAndTagPluginInput",
    "FileImportPluginInput",
    "RawBlockAndTagPluginInput",
    "RawBlockAndTagPluginInputWithPreallocatedBlocks",
    "TrainPluginInput",
    "TrainingParameterPluginInput",
]


class _Input(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class RawBlockAndTagPluginInput(_Input):
    blocks: list[Block] = Field(default_factory=list)
    options: dict[str, Any] = Field(default_factory=dict)


class RawBlockAndTagPluginInputWithPreallocatedBlocks(RawBlockAndTagPluginInput):
    """The input of a streaming run: the conversation plus its preallocated output blocks."""

    output_blocks: list[Block] = Field(default_factory=list)


class BlockAndTagPluginInput(_Input):
    file: File


class FileImportPluginInput(_Input):
    value: str | None = None
    data: str | None = None
    url: str | None = None
    mime_type: str | None = Field(
        default=None,
        validation_alias=AliasChoices("mime_type", "mimeType"),
        serialization_alias="mimeType",
    )


class TrainingParameterPluginInput(_Input):
    """What a trainable plugin is asked for its training parameters with."""

    plugin_instance: str | None = None
    training_params: dict[str, Any] = Field(default_factory=dict)
    inference_params: dict[str, Any] = Field(default_factory=dict)
    training_epochs: int | None = None
    testing_holdout_percent: float | None = None
    test_split_seed: int | None = None
    file_id: str | None = None


class TrainPluginInput(TrainingParameterPluginInput):
    """A training run's parameters, and its data."""

    #: the file named by ``file_id``, resolved by the host (the training data)
    training_file: File | None = None
