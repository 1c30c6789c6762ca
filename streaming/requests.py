"""Bodies the runtime accepts: starting a generation, answering a tool call."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from streaming.capabilities import Tool, is_capability_request, read_capability_requests
from streaming.errors import InvalidRequestError
from streaming.model import BOTH_SPELLINGS, Block, MimeTypes, OnDisconnect, RoleTag, Tag

__all__ = ["MULTITASK_STRATEGIES", "BlockInput", "GenerateRequest", "Message", "Multitask", "ToolResultRequest"]

#: what a request continuing a busy conversation does (``multitask``): ``reject`` it (409),
#: ``interrupt`` the generation in progress (its partial answer stays, aborted),
#: ``rollback`` it (its whole turn leaves the conversation), or ``enqueue`` the new one
#: (it waits, then runs after the ones before it, in the order they came)
Multitask = Literal["reject", "interrupt", "rollback", "enqueue"]
MULTITASK_STRATEGIES: tuple[str, ...] = ("reject", "interrupt", "rollback", "enqueue")


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: RoleTag
    content: str


class BlockInput(BaseModel):
    """An input block; its fields in either spelling (``mime_type`` or the seed's ``mimeType``)."""

    model_config = ConfigDict(extra="ignore", alias_generator=BOTH_SPELLINGS)

    text: str = ""
    mime_type: str | None = MimeTypes.TXT
    tags: list[Tag] = Field(default_factory=list)


class GenerateRequest(BaseModel):
    """The body of ``POST /generations`` (and of a WebSocket ``generate`` frame).

    Exactly one of ``prompt``, ``messages`` or ``blocks`` is the input. ``tools`` items are
    tool declarations, or names of server-side tools. A capabilities-request block among
    ``blocks`` (the seed's way to ask for capabilities) is taken out of the input and its
    capabilities added to ``capabilities``, so the runtime checks them exactly as if they
    had come in that field.
    """

    model_config = ConfigDict(extra="forbid")

    generator: str = Field(min_length=1, max_length=200)
    prompt: str | None = None
    messages: list[Message] | None = None
    blocks: list[BlockInput] | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    capabilities: list[dict[str, Any]] = Field(default_factory=list)
    tools: list[Tool | str] = Field(default_factory=list)
    file_id: str | None = None
    on_disconnect: OnDisconnect = OnDisconnect.CANCEL
    #: ``wait``: client-side tool calls are answered mid-stream (tool-results route or
    #: WebSocket frame). ``return``: the generation ends (succeeded) once the model has
    #: called client tools, and the client sends the results in its next request, as
    #: OpenAI's API does.
    client_tools: Literal["wait", "return"] = "wait"
    #: with ``file_id``, what to do while another generation is running or waiting on that
    #: conversation (see :data:`Multitask`); without, nothing is in the way
    multitask: Multitask = "reject"
    #: with ``file_id``, generations of that conversation whose turns (their inputs and
    #: outputs) leave it before this one starts: a retry of an answer, or an edited
    #: message answered again (they must have ended)
    replace: list[str] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _replace_needs_a_conversation(self) -> GenerateRequest:
        if self.replace and self.file_id is None:
            raise ValueError("'replace' takes turns out of a conversation: give its 'file_id'")
        return self

    @model_validator(mode="after")
    def _one_input(self) -> GenerateRequest:
        given = [n for n in ("prompt", "messages", "blocks") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one input: 'prompt', 'messages' or 'blocks'"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    @model_validator(mode="after")
    def _capability_blocks(self) -> GenerateRequest:
        if self.blocks is None:
            return self
        try:
            found = read_capability_requests(self.blocks)
        except InvalidRequestError as exc:
            raise ValueError(exc.message) from exc
        if found is None:
            return self
        self.blocks = [b for b in self.blocks if not is_capability_request(b)]
        named = {c.get("name") for c in self.capabilities}
        for cap in found:
            if cap.name in named:
                raise ValueError(f"capability {cap.name!r} is requested both in 'capabilities' and in a block")
        self.capabilities = [*self.capabilities, *(cap.model_dump(mode="json") for cap in found)]
        return self

    @field_validator("capabilities")
    @classmethod
    def _named(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for cap in v:
            if not isinstance(cap.get("name"), str) or not cap["name"]:
                raise ValueError("every capability needs a 'name'")
        return v

    def input_blocks(self) -> list[Block]:
        """The input as blocks, each tagged with its chat role."""
        if self.prompt is not None:
            return [Block(text=self.prompt, tags=[Tag.chat_role(RoleTag.USER)])]
        if self.messages is not None:
            return [Block(text=m.content, tags=[Tag.chat_role(m.role)]) for m in self.messages]
        assert self.blocks is not None
        return [Block(text=b.text, mime_type=b.mime_type, tags=list(b.tags)) for b in self.blocks]


class ToolResultRequest(BaseModel):
    """A client-side tool's answer: ``result`` (a string or list of strings) or ``error``."""

    model_config = ConfigDict(extra="forbid")

    call_id: str = Field(min_length=1)
    result: list[str] | str | None = None
    error: str | None = None

    @model_validator(mode="after")
    def _one(self) -> ToolResultRequest:
        if (self.result is None) == (self.error is None):
            raise ValueError("give exactly one of 'result' or 'error'")
        return self

    def items(self) -> tuple[list[str], bool]:
        if self.error is not None:
            return [self.error], True
        assert self.result is not None
        return ([self.result] if isinstance(self.result, str) else list(self.result)), False
