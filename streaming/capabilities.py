"""Plugin capabilities, as the seed's ``steamship.plugin.capabilities`` (bugs fixed).

Capabilities travel between client and plugin as blocks. A client asks for a feature at
a :class:`RequestLevel`; a plugin declares the :class:`SupportLevel` it offers; a request
the plugin cannot meet raises :class:`UnsupportedCapabilityError` before any billable work,
and otherwise the plugin answers with a :class:`CapabilityPluginResponse` saying at which
level each capability was served.

Fixed against the original: a response carries the capability's real ``name``;
``RequestedCapabilities.get(FunctionCallingSupport)`` works with a non-empty tool list;
tools carry a JSON-Schema ``parameters`` object; invocation ``args`` take any JSON value.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from enum import Enum, Flag
from typing import Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator

from streaming.errors import InvalidRequestError
from streaming.model import BOTH_SPELLINGS, Block, MimeTypes, Tag

__all__ = [
    "Capability",
    "CapabilityImpl",
    "CapabilityPluginRequest",
    "CapabilityPluginResponse",
    "ConversationSupport",
    "FunctionCallInvocation",
    "FunctionCallResult",
    "FunctionCallingSupport",
    "RequestLevel",
    "RequestedCapabilities",
    "SupportLevel",
    "SystemPromptSupport",
    "Tool",
    "UnsupportedCapabilityError",
    "is_capability_request",
    "read_capability_requests",
]


class RequestLevel(Enum):
    """How the plugin should treat a requested feature."""

    NATIVE = "native"
    BEST_EFFORT = "best-effort"
    OPTIONAL = "optional"
    DISABLE = "disable"


class SupportLevel(Flag):
    """How a plugin supports a capability (flags; NATIVE implies at least BEST_EFFORT)."""

    NATIVE = 1
    BEST_EFFORT = 2
    CAN_DISABLE = 4


class Capability(BaseModel):
    """Base class for all capabilities; unknown fields are kept (``extra = allow``)."""

    model_config = ConfigDict(extra="allow", use_enum_values=False, alias_generator=BOTH_SPELLINGS)

    NAME: ClassVar[str] = ""

    name: str = ""
    request_level: RequestLevel = RequestLevel.NATIVE

    def model_post_init(self, __context: Any) -> None:
        if not self.name and self.NAME:
            self.name = self.NAME

    class Response(BaseModel):
        """How the plugin served one capability."""

        model_config = ConfigDict(extra="allow", alias_generator=BOTH_SPELLINGS)

        name: str
        fulfilled_at: SupportLevel

        @field_validator("fulfilled_at", mode="before")
        @classmethod
        def _int_to_flag(cls, v: Any) -> Any:
            return SupportLevel(v) if isinstance(v, int) else v

    def is_plugin_support_valid(
        self, support_level: SupportLevel | None
    ) -> tuple[bool, Capability.Response | None]:
        """Whether a plugin supporting this at ``support_level`` meets the request.

        Returns the verdict and, when the capability is served, the response to report.
        """
        level = self.request_level
        name = self.name or self.NAME

        def served(at: SupportLevel) -> Capability.Response:
            return Capability.Response(name=name, fulfilled_at=at)

        if level is RequestLevel.OPTIONAL:
            if support_level is None:
                return True, None
            for flag in (SupportLevel.NATIVE, SupportLevel.BEST_EFFORT):
                if flag in support_level:
                    return True, served(flag)
            return True, None
        if level is RequestLevel.DISABLE:
            if support_level is None:
                return True, None
            if SupportLevel.CAN_DISABLE in support_level:
                return True, served(SupportLevel.CAN_DISABLE)
            return False, None
        if support_level is None:
            return False, None
        if level is RequestLevel.NATIVE:
            return (True, served(SupportLevel.NATIVE)) if SupportLevel.NATIVE in support_level else (False, None)
        # BEST_EFFORT: met by NATIVE (reported as NATIVE) or BEST_EFFORT.
        if SupportLevel.NATIVE in support_level:
            return True, served(SupportLevel.NATIVE)
        if SupportLevel.BEST_EFFORT in support_level:
            return True, served(SupportLevel.BEST_EFFORT)
        return False, None


class CapabilityImpl(Capability):
    """A concrete capability: its fields are exactly those it declares."""

    model_config = ConfigDict(extra="forbid", alias_generator=BOTH_SPELLINGS)


class ConversationSupport(CapabilityImpl):
    """History comes across as other input blocks tagged with the ``chat`` tag kind."""

    NAME: ClassVar[str] = "steamship.conversation_support"


class SystemPromptSupport(CapabilityImpl):
    """A system prompt separate from the prompt, in a block with role ``system``.

    NATIVE: the model takes it first-class. BEST_EFFORT: folded into the prompt.
    """

    NAME: ClassVar[str] = "steamship.system_prompt_support"
    request_level: RequestLevel = RequestLevel.BEST_EFFORT


class Tool(BaseModel):
    """A function the model may call; ``parameters`` is a JSON Schema object."""

    model_config = ConfigDict(extra="ignore", alias_generator=BOTH_SPELLINGS)

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, v: dict[str, Any]) -> dict[str, Any]:
        if v.get("type", "object") != "object":
            raise ValueError("tool parameters must be a JSON Schema of type 'object'")
        return v


class FunctionCallInvocation(BaseModel):
    """A plugin's request to call a tool; answered by a FunctionCallResult next round."""

    model_config = ConfigDict(alias_generator=BOTH_SPELLINGS)

    MIME_TYPE: ClassVar[str] = MimeTypes.FUNCTION_CALL_INVOCATION

    tool_name: str
    args: dict[str, Any] = Field(default_factory=dict)
    call_id: str | None = None

    def to_block(self, tags: list[Tag] | None = None) -> Block:
        return Block(
            text=self.model_dump_json(exclude_none=True),
            mime_type=self.MIME_TYPE,
            tags=list(tags or []),
        )

    @classmethod
    def from_block(cls, block: Block) -> FunctionCallInvocation:
        """Raises InvalidRequestError if the block's text is not an invocation."""
        return _parse(cls, block.text)


class FunctionCallResult(BaseModel):
    """The result of a tool call: text items, or ``Block(<id>)`` references."""

    model_config = ConfigDict(alias_generator=BOTH_SPELLINGS)

    MIME_TYPE: ClassVar[str] = MimeTypes.FUNCTION_CALL_RESULT

    tool_name: str
    result: list[str] = Field(default_factory=list)
    call_id: str | None = None
    is_error: bool = False

    def to_block(self, tags: list[Tag] | None = None) -> Block:
        return Block(
            text=self.model_dump_json(exclude_none=True),
            mime_type=self.MIME_TYPE,
            tags=list(tags or []),
        )

    @classmethod
    def from_block(cls, block: Block) -> FunctionCallResult:
        return _parse(cls, block.text)

    def result_items(self, blocks: Mapping[str, Block] | None = None) -> Iterable[str | Block]:
        """Each item as text, or the Block it names when ``blocks`` knows it."""
        for item in self.result:
            if item.startswith("Block(") and item.endswith(")") and blocks is not None:
                found = blocks.get(item[6:-1])
                if found is not None:
                    yield found
                    continue
            yield item


class FunctionCallingSupport(CapabilityImpl):
    """The plugin can call functions; the tool list comes with the request."""

    NAME: ClassVar[str] = "steamship.function_calling_support"
    FunctionCallInvocation: ClassVar[type[FunctionCallInvocation]] = FunctionCallInvocation
    FunctionCallResult: ClassVar[type[FunctionCallResult]] = FunctionCallResult

    functions: list[Tool] = Field(default_factory=list)


M = TypeVar("M", bound=BaseModel)


def _parse(cls: type[M], text: str) -> M:
    try:
        return cls.model_validate_json(text)
    except ValidationError as exc:
        raise InvalidRequestError(f"not a valid {cls.__name__}: {exc.errors()[0]['msg']}") from exc


class UnsupportedCapabilityError(InvalidRequestError):
    """Raised when a capability is requested at a level the plugin does not support."""

    code = "unsupported_capability"

    def __init__(self, unsupported_capabilities: list[Capability]) -> None:
        self.unsupported_capabilities = unsupported_capabilities
        names = [
            f"{c.name} ({c.request_level.value})" for c in unsupported_capabilities
        ]
        super().__init__(
            "the generator does not support: " + ", ".join(names),
            suggestion="request these capabilities as 'optional', or pick another generator",
            details={
                "unsupported_capabilities": [
                    {"name": c.name, "request_level": c.request_level.value}
                    for c in unsupported_capabilities
                ]
            },
        )


class CapabilityPluginRequest(BaseModel):
    """The text of a capabilities-request block."""

    model_config = ConfigDict(alias_generator=BOTH_SPELLINGS)

    requested_capabilities: list[SerializeAsAny[Capability]]

    def to_block(self) -> Block:
        return Block(
            text=self.model_dump_json(),
            mime_type=MimeTypes.STEAMSHIP_PLUGIN_CAPABILITIES_REQUEST,
        )

    @classmethod
    def from_block(cls, block: Block) -> CapabilityPluginRequest:
        return _parse(cls, block.text)


class CapabilityPluginResponse(BaseModel):
    """The text of a capabilities-response block."""

    model_config = ConfigDict(alias_generator=BOTH_SPELLINGS)

    capability_responses: list[SerializeAsAny[Capability.Response]]

    def to_block(self) -> Block:
        return Block(
            text=json.dumps(self.model_dump(mode="json")),
            mime_type=MimeTypes.STEAMSHIP_PLUGIN_CAPABILITIES_RESPONSE,
        )

    @classmethod
    def from_block(cls, block: Block) -> CapabilityPluginResponse:
        return _parse(cls, block.text)


class _TextBlock(Protocol):
    text: str
    mime_type: str | None


def is_capability_request(block: _TextBlock) -> bool:
    """Whether ``block`` is a capabilities-request block (the seed's way to ask)."""
    return block.mime_type == MimeTypes.STEAMSHIP_PLUGIN_CAPABILITIES_REQUEST


def read_capability_requests(blocks: Iterable[_TextBlock]) -> list[Capability] | None:
    """Every capability the capabilities-request blocks among ``blocks`` ask for, in order;
    None if there is no such block.

    The one reader of capability blocks: a plugin's :meth:`RequestedCapabilities.extract_from_blocks`
    and the runtime's request normalisation (``GenerateRequest``) both go through it.

    Raises:
        InvalidRequestError: a block's text is not a capabilities request, a capability has
            no name, or one is asked for twice.
    """
    found: list[Capability] | None = None
    for block in blocks:
        if not is_capability_request(block):
            continue
        found = found if found is not None else []
        for cap in _parse(CapabilityPluginRequest, block.text).requested_capabilities:
            if not cap.name:
                raise InvalidRequestError("every requested capability needs a 'name'")
            if any(c.name == cap.name for c in found):
                raise InvalidRequestError(f"capability {cap.name!r} is requested twice")
            found.append(cap)
    return found


CapabilityType = TypeVar("CapabilityType", bound=CapabilityImpl)


class RequestedCapabilities:
    """The capabilities a request asked for, checked against what a plugin supports.

    Args:
        supported_levels: for each capability class the plugin supports, at which level.
    """

    def __init__(self, supported_levels: Mapping[type[CapabilityImpl], SupportLevel]) -> None:
        self.supported_levels = dict(supported_levels)
        self._by_name: dict[str, type[CapabilityImpl]] = {t.NAME: t for t in supported_levels}
        self.requested: dict[str, Capability] = {}
        self.response: CapabilityPluginResponse | None = None

    def load_requests(self, request: CapabilityPluginRequest) -> CapabilityPluginResponse:
        """Check every request; return how each is served.

        Raises:
            UnsupportedCapabilityError: listing every capability the plugin cannot serve
                at the requested level.
        """
        unsupported: list[Capability] = []
        responses: list[Capability.Response] = []
        for cap in request.requested_capabilities:
            typ = self._by_name.get(cap.name)
            level = self.supported_levels.get(typ) if typ is not None else None
            ok, response = cap.is_plugin_support_valid(level)
            if not ok:
                unsupported.append(cap)
                continue
            self.requested[cap.name] = cap
            if response is not None:
                responses.append(response)
        if unsupported:
            raise UnsupportedCapabilityError(unsupported)
        self.response = CapabilityPluginResponse(capability_responses=responses)
        return self.response

    def extract_from_blocks(self, blocks: Iterable[Block]) -> CapabilityPluginResponse | None:
        """Load the first capabilities-request block among ``blocks`` (as the seed does: the
        runtime puts the request's one block first); None if there is none (an older
        client: the plugin serves its legacy behaviour).

        Raises:
            UnsupportedCapabilityError: as :meth:`load_requests`.
            InvalidRequestError: as :func:`read_capability_requests`.
        """
        first = next((b for b in blocks if is_capability_request(b)), None)
        caps = read_capability_requests([first] if first is not None else [])
        if caps is None:
            return None
        return self.load_requests(CapabilityPluginRequest(requested_capabilities=caps))

    def get(
        self, typ: type[CapabilityType], default: CapabilityType | None = None
    ) -> CapabilityType | None:
        """The request for ``typ`` as an instance of ``typ``, or ``default``.

        Raises:
            InvalidRequestError: the request's fields do not fit ``typ``.
        """
        cap = self.requested.get(typ.NAME)
        if cap is None:
            return default
        if isinstance(cap, typ):
            return cap
        try:
            return typ.model_validate(cap.model_dump())
        except ValidationError as exc:
            raise InvalidRequestError(f"capability {typ.NAME} is malformed: {exc.errors()[0]['msg']}") from exc
