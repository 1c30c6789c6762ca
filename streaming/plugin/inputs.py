"""Plugin inputs, as the seed's ``steamship.plugin.inputs``.

Every field is read under its snake_case name or the seed's camelCase one
(``training_params`` or ``trainingParams``), as the seed's ``CamelModel`` inputs are.
"""

from __future__ import annotations

import math
import random
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from streaming.errors import InvalidRequestError
from streaming.model import BOTH_SPELLINGS, Block, File
from streaming.stores.archives import check_handle

__all__ = [
    "BlockAndTagPluginInput",
    "CheckpointParams",
    "FileImportPluginInput",
    "RawBlockAndTagPluginInput",
    "RawBlockAndTagPluginInputWithPreallocatedBlocks",
    "TrainPluginInput",
    "TrainingParameterPluginInput",
]


class _Input(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", alias_generator=BOTH_SPELLINGS)


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
    #: how the host cuts a textual import into the stored file's blocks (not in the seed)
    blockify: Literal["paragraphs", "lines", "none"] = "paragraphs"


class CheckpointParams(_Input):
    """The ``training_params`` the runtime itself reads, in either spelling."""

    #: save under this handle (``default`` if None)
    checkpoint_handle: str | None = None
    #: False: leave the ``default`` checkpoint alone
    set_as_default: bool = True

    @field_validator("checkpoint_handle")
    @classmethod
    def _safe_handle(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                check_handle(v)
            except InvalidRequestError as exc:
                raise ValueError(f"{exc.message} ({exc.suggestion})") from exc
        return v


class TrainingParameterPluginInput(_Input):
    """What a trainable plugin is asked for its training parameters with."""

    plugin_instance: str | None = None
    training_params: dict[str, Any] = Field(default_factory=dict)
    inference_params: dict[str, Any] = Field(default_factory=dict)
    training_epochs: int | None = None
    #: the fraction of the examples held out for testing, 0 <= p < 1 (0.2 holds out 20%)
    testing_holdout_percent: float | None = None
    test_split_seed: int | None = None
    file_id: str | None = None

    @field_validator("testing_holdout_percent")
    @classmethod
    def _fraction(cls, v: float | None) -> float | None:
        if v is not None and not (math.isfinite(v) and 0 <= v < 1):
            raise ValueError(
                f"testing_holdout_percent is the fraction of examples held out for testing, "
                f"at least 0 and below 1 (0.2 holds out 20%); got {v}"
            )
        return v

    @model_validator(mode="after")
    def _checkpoint_params(self) -> TrainingParameterPluginInput:
        self.checkpoint()
        return self

    def checkpoint(self) -> CheckpointParams:
        """Where the trained model is to be saved (``training_params``, either spelling).

        Raises:
            ValueError: a handle that is not a safe name, or a ``set_as_default`` that is
                not a boolean (a ``ValidationError`` when the input is validated).
        """
        try:
            return CheckpointParams.model_validate(self.training_params)
        except ValidationError as exc:
            problems = "; ".join(
                "training_params." + ".".join(str(p) for p in e.get("loc", ())) + ": " + e["msg"]
                for e in exc.errors()
            )
            raise ValueError(problems) from None

    def split(self, n: int, default_percent: float = 0.1) -> tuple[list[int], list[int]]:
        """Example indices ``0..n-1`` shuffled by ``test_split_seed`` and split into
        (trained on, held out): ``testing_holdout_percent`` (``default_percent`` if unset)
        of them held out, at least one when that is above 0 and ``n >= 2``, and never all
        of them: at least one example is always trained on.

        Raises:
            InvalidRequestError: ``n`` is 0: there is nothing to train on.
        """
        if n < 1:
            raise InvalidRequestError(
                "there are no training examples", suggestion="give a training file with examples in its blocks"
            )
        percent = default_percent if self.testing_holdout_percent is None else self.testing_holdout_percent
        order = list(range(n))
        random.Random(self.test_split_seed or 0).shuffle(order)
        held = round(n * percent)
        if percent > 0 and n >= 2:
            held = max(1, held)
        held = min(held, n - 1)
        return sorted(order[held:]), sorted(order[:held])


class TrainPluginInput(TrainingParameterPluginInput):
    """A training run's parameters, and its data."""

    #: the file named by ``file_id``, resolved by the host (the training data)
    training_file: File | None = None
