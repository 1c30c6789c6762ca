"""The data model: blocks, tags, files and generations (JSON is snake_case).

A conversation is a :class:`File`; each message or output is a :class:`Block`; a
:class:`Generation` is one streamed run of a generator plugin (Steamship's Task).
"""

from __future__ import annotations

import os
import time
from enum import StrEnum
from typing import Any, Protocol

from pydantic import AliasChoices, AliasGenerator, BaseModel, ConfigDict, Field, PrivateAttr
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticUndefined

from streaming.wire import MimeTypes

__all__ = [
    "BOTH_SPELLINGS",
    "Block",
    "ChatTag",
    "ErrorInfo",
    "File",
    "Generation",
    "GenerationState",
    "MimeTypes",
    "OnDisconnect",
    "RoleTag",
    "StreamState",
    "Tag",
    "TagKind",
    "TagValueKey",
    "Usage",
    "new_id",
]


_NO_BLOCKS: set[str] = {"blocks"}
_set_attr = object.__setattr__


def new_id(prefix: str) -> str:
    """A fresh, URL-safe identifier such as ``gen_019ad5e2c4f1…``: 32 hex digits, the
    first 12 the milliseconds since the epoch, the other 20 random (80 bits; UUIDv7's
    layout without its version bits). Ids minted close in time sort close together, so
    a store's B-tree index takes each new row on the page the previous ones went to
    instead of a random page: in sqlite, writing a generation's records dirtied a page
    per row (16 KiB each in the WAL) with random ids."""
    return f"{prefix}_{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


#: Reads every field under its snake_case name or the seed's camelCase one (``mimeType``);
#: JSON out stays snake_case.
BOTH_SPELLINGS = AliasGenerator(validation_alias=lambda name: AliasChoices(name, to_camel(name)))


class StreamState(StrEnum):
    """The streaming state of a block; ``None`` on a block that was never streamed."""

    STARTED = "started"
    COMPLETE = "complete"
    ABORTED = "aborted"


class GenerationState(StrEnum):
    WAITING = "waiting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (
            GenerationState.SUCCEEDED,
            GenerationState.FAILED,
            GenerationState.CANCELLED,
        )


class OnDisconnect(StrEnum):
    CANCEL = "cancel"
    CONTINUE = "continue"


class TagKind:
    CHAT = "chat"
    ROLE = "role"
    FUNCTION_SELECTION = "function-selection"
    GENERATION = "generation"
    STATUS_MESSAGE = "status-message"


class ChatTag:
    """Names of tags of kind ``chat``."""

    ROLE = "role"
    MESSAGE = "message"
    CHAT_ID = "chat-id"
    MESSAGE_ID = "message-id"
    REQUEST_COMPLETE = "request-complete"


class RoleTag(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    AGENT = "agent"
    FUNCTION = "function"
    TOOL = "tool"
    LLM = "llm"


class TagValueKey:
    STRING_VALUE = "string-value"
    NUMBER_VALUE = "number-value"
    BOOL_VALUE = "bool-value"
    VECTOR_VALUE = "vector-value"
    VALUE = "value"
    SCORE = "score"
    TIMESTAMP_VALUE = "timestamp-value"


class Tag(BaseModel):
    """A tag on a block or file; ``start_idx`` inclusive, ``end_idx`` exclusive."""

    model_config = ConfigDict(extra="ignore", alias_generator=BOTH_SPELLINGS)

    kind: str
    name: str | None = None
    value: dict[str, Any] | None = None
    start_idx: int | None = None
    end_idx: int | None = None

    @classmethod
    def chat_role(cls, role: str) -> Tag:
        return cls(kind=TagKind.CHAT, name=ChatTag.ROLE, value={TagValueKey.STRING_VALUE: role})


class BlockWriter(Protocol):
    """What a block bound to a running generation writes through (the runtime)."""

    def append(self, block_id: str, text: str) -> None: ...

    def complete(self, block_id: str) -> None: ...

    def abort(self, block_id: str, reason: str) -> None: ...


class Block(BaseModel):
    """A unit of content in a file. Output blocks are streamed while ``started``."""

    model_config = ConfigDict(extra="ignore", alias_generator=BOTH_SPELLINGS)

    id: str = Field(default_factory=lambda: new_id("blk"))
    file_id: str | None = None
    index: int | None = None
    mime_type: str | None = MimeTypes.TXT
    text: str = ""
    tags: list[Tag] = Field(default_factory=list)
    stream_state: StreamState | None = None
    request_id: str | None = None
    public_data: bool = False

    _writer: BlockWriter | None = PrivateAttr(default=None)

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Block:
        # A copy is a snapshot: it never writes into the running generation.
        priv = self.__pydantic_private__
        if not priv or priv.get("_writer") is None:
            return super().__deepcopy__(memo)
        writer = priv["_writer"]
        priv["_writer"] = None
        try:
            return super().__deepcopy__(memo)
        finally:
            priv["_writer"] = writer

    def __copy__(self) -> Block:
        # Field by field, as pydantic's own copy does without its generic steps (a turn
        # copies every block of its conversation several times); a copy is a snapshot: it
        # never writes into the running generation.
        cls = type(self)
        copy = cls.__new__(cls)
        _set_attr(copy, "__dict__", self.__dict__.copy())
        _set_attr(copy, "__pydantic_fields_set__", set(self.__pydantic_fields_set__))
        extra = self.__pydantic_extra__
        _set_attr(copy, "__pydantic_extra__", None if extra is None else dict(extra))
        priv = self.__pydantic_private__
        if priv is not None:
            priv = {k: v for k, v in priv.items() if k != "_writer" and v is not PydanticUndefined}
            priv["_writer"] = None
        _set_attr(copy, "__pydantic_private__", priv)
        return copy

    def snapshot(self) -> Block:
        """A cheap independent copy (tags are never changed in place, so they are shared)."""
        copy = self.__copy__()
        copy.__dict__["tags"] = list(self.tags)
        copy.__pydantic_fields_set__.add("tags")
        return copy

    @property
    def chat_role(self) -> str | None:
        """The value of this block's ``chat``/``role`` tag, if it has one."""
        for tag in self.tags:
            if tag.kind == TagKind.CHAT and tag.name == ChatTag.ROLE and tag.value:
                role = tag.value.get(TagValueKey.STRING_VALUE)
                return str(role) if role is not None else None
            if tag.kind == TagKind.ROLE and tag.name:
                return tag.name
        return None

    @property
    def is_text(self) -> bool:
        return (self.mime_type or MimeTypes.TXT).startswith("text/")

    # -- streaming into a preallocated block (the seed's append_stream / finish_stream) --

    def _bound(self) -> BlockWriter:
        if self._writer is None:
            from streaming.errors import ConflictError

            raise ConflictError(
                f"block {self.id} is not open for streaming",
                suggestion="only blocks preallocated for a running generation can be streamed",
            )
        return self._writer

    def append_stream(self, text: str) -> None:
        """Append ``text`` to this started block.

        Raises:
            IllegalTransitionError: the block is no longer ``started``.
            GenerationCancelledError: its generation was cancelled; stop writing.
        """
        self._bound().append(self.id, text)

    def finish_stream(self) -> None:
        """Mark this block ``complete``. Raises IllegalTransitionError if not started."""
        self._bound().complete(self.id)

    def abort_stream(self, reason: str = "aborted by plugin") -> None:
        """Mark this block ``aborted``. Raises IllegalTransitionError if not started."""
        self._bound().abort(self.id, reason)


class File(BaseModel):
    """A conversation: an ordered list of blocks."""

    model_config = ConfigDict(extra="ignore", alias_generator=BOTH_SPELLINGS)

    id: str = Field(default_factory=lambda: new_id("file"))
    handle: str | None = None
    mime_type: str | None = None
    blocks: list[Block] = Field(default_factory=list)
    tags: list[Tag] = Field(default_factory=list)
    #: who created it (a digest of the API key); kept out of what clients see
    owner: str | None = None

    def snapshot(self) -> File:
        """A cheap independent copy of the file and its blocks."""
        return self.model_copy(update={"blocks": [b.snapshot() for b in self.blocks], "tags": list(self.tags)})

    def meta_json(self) -> str:
        """The file as JSON without its blocks (a store keeps them apart, by id); read back
        with ``File.model_validate_json``, it has none."""
        return self.model_dump_json(exclude=_NO_BLOCKS)


class Usage(BaseModel):
    """A usage report, as the seed's ``UsageReport``."""

    operation_type: str = "run"
    operation_unit: str = "characters"
    operation_amount: float = 0
    audit_id: str | None = None


class ErrorInfo(BaseModel):
    code: str
    message: str
    suggestion: str | None = None


class Generation(BaseModel):
    """One streamed run of a generator (the seed's Task)."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(default_factory=lambda: new_id("gen"))
    state: GenerationState = GenerationState.WAITING
    file_id: str | None = None
    generator: str
    output_block_ids: list[str] = Field(default_factory=list)
    error: ErrorInfo | None = None
    usage: list[Usage] = Field(default_factory=list)
    created_at: float = Field(default_factory=time.time)
    finished_at: float | None = None
    on_disconnect: OnDisconnect = OnDisconnect.CANCEL
    last_seq: int = 0
    #: who created it (a digest of the API key, never the key); kept out of public()
    owner: str | None = None

    def snapshot(self) -> Generation:
        """A cheap independent copy (its lists copied; their items are never changed)."""
        return self.model_copy(
            update={"output_block_ids": list(self.output_block_ids), "usage": list(self.usage)}
        )

    def public(self) -> dict[str, Any]:
        """The JSON clients see (no owner)."""
        return self.model_dump(mode="json", exclude={"owner"})
