"""The body of ``POST /v1/messages`` and its conversion to a runtime request.

``messages`` alternate ``user`` and ``assistant``; a content is a string or a list of
blocks: ``text``, ``tool_use`` (an earlier call of the model, in an assistant message) and
``tool_result`` (the client's result for a call, in a user message: it becomes a tool result
block, role ``tool``). They become blocks through the chat conversion
(:func:`streaming.server.openai.convert.message_blocks`); ``system`` becomes a system block.

Declared tools are the client's (``client_tools="return"``): a turn that calls them ends the
message with ``stop_reason: "tool_use"``, and the client sends the results in its next
request.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from streaming.server.openai.convert import message_blocks
from streaming.server.openai.schema import CalledFunction, Message, ToolCall

from streaming.capabilities import FunctionCallResult, Tool
from streaming.errors import InvalidRequestError
from streaming.model import Block, MimeTypes, Tag
from streaming.requests import BlockInput, GenerateRequest

__all__ = ["META_TAG", "MessagesRequest", "generate_request", "stored_max_tokens"]

#: the tag (on the last input block) that keeps the request's max_tokens, for replays
META_TAG = ("dialect", "anthropic.messages")


class InputMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[dict[str, Any]]


class ToolSpec(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class MessagesRequest(BaseModel):
    """The body of ``POST /v1/messages`` (fields not listed are ignored).

    ``options`` (send it with the SDK's ``extra_body``) goes to the generator as is.
    """

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[InputMessage] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    tools: list[ToolSpec] | None = None
    tool_choice: dict[str, Any] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    stream: bool = False
    metadata: dict[str, Any] | None = None
    options: dict[str, Any] = Field(default_factory=dict)


def _bad(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, details={"param": param})


def _unsupported(kind: Any, where: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"{where}: content blocks of type {kind!r} are not supported", code="unsupported_content",
        details={"param": where},
    )


def _text_of(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _unsupported(block.get("type") if isinstance(block, dict) else block, where)
        parts.append(str(block.get("text", "")))
    return "".join(parts)


def _messages(body: MessagesRequest) -> tuple[list[Message], set[str]]:
    """The chat messages, and the ids of calls whose result is an error."""
    messages: list[Message] = []
    errors: set[str] = set()
    if body.system:
        messages.append(Message(role="system", content=_text_of(body.system, "system")))
    for n, msg in enumerate(body.messages):
        where = f"messages[{n}]"
        if msg.role not in ("user", "assistant"):
            raise _bad(f"{where}: role must be user or assistant", where)
        if isinstance(msg.content, str):
            messages.append(Message(role=msg.role, content=msg.content))  # type: ignore[arg-type]
            continue
        text: list[str] = []
        calls: list[ToolCall] = []
        for block in msg.content:
            kind = block.get("type")
            if kind == "text":
                text.append(str(block.get("text", "")))
            elif kind == "tool_use" and msg.role == "assistant":
                if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                    raise _bad(f"{where}: a tool_use block needs id and name", where)
                arguments = json.dumps(block.get("input") or {})
                calls.append(ToolCall(id=block["id"], function=CalledFunction(name=block["name"], arguments=arguments)))
            elif kind == "tool_result" and msg.role == "user":
                call_id = block.get("tool_use_id")
                if not isinstance(call_id, str):
                    raise _bad(f"{where}: a tool_result block needs tool_use_id", where)
                if block.get("is_error"):
                    errors.add(call_id)
                content = block.get("content")
                messages.append(Message(role="tool", tool_call_id=call_id, content=_text_of(content or "", where)))
            else:
                raise _unsupported(kind, where)
        if text or calls:
            messages.append(Message(role=msg.role, content="".join(text), tool_calls=calls or None))  # type: ignore[arg-type]
    return messages, errors


def _tool_choice(choice: dict[str, Any] | None) -> str | dict[str, Any] | None:
    """Anthropic's ``tool_choice`` as the generators read it (OpenAI's chat form)."""
    kind = (choice or {}).get("type")
    if kind == "any":
        return "required"
    if kind == "tool" and choice and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    return kind if kind in ("auto", "none") else None


def generate_request(body: MessagesRequest) -> GenerateRequest:
    """This request as a runtime request.

    Raises:
        InvalidRequestError: a message, block or tool the runtime cannot take.
    """
    options = dict(body.options)
    options["max_tokens"] = body.max_tokens
    for name in ("temperature", "top_p", "top_k"):
        value = getattr(body, name)
        if value is not None:
            options[name] = value
    if body.stop_sequences:
        options["stop"] = body.stop_sequences
    choice = _tool_choice(body.tool_choice)
    tools: list[Tool | str] = []
    if body.tools and choice != "none":
        try:
            tools = [Tool(name=t.name, description=t.description, parameters=t.input_schema) for t in body.tools]
        except ValidationError as exc:
            raise _bad(f"bad tool: {exc.errors()[0]['msg']}", "tools") from exc
        if choice is not None:
            options["tool_choice"] = choice
    messages, errors = _messages(body)
    blocks: list[BlockInput] = message_blocks(messages)
    if errors:
        blocks = [_mark_error(b, errors) for b in blocks]
    if not blocks:
        raise _bad("messages are empty", "messages")
    meta = Tag(kind=META_TAG[0], name=META_TAG[1], value={"max_tokens": body.max_tokens})
    blocks[-1] = blocks[-1].model_copy(update={"tags": [*blocks[-1].tags, meta]})
    return GenerateRequest(generator=body.model, blocks=blocks, options=options, tools=tools, client_tools="return")


def _mark_error(block: BlockInput, errors: set[str]) -> BlockInput:
    """A result block of a call whose ``tool_result`` said ``is_error``, marked so."""
    if block.mime_type != MimeTypes.FUNCTION_CALL_RESULT:
        return block
    result = FunctionCallResult.model_validate_json(block.text)
    if result.call_id not in errors:
        return block
    result.is_error = True
    return block.model_copy(update={"text": result.model_dump_json(exclude_none=True)})


def stored_max_tokens(blocks: list[Block], generation_id: str) -> int | None:
    """The ``max_tokens`` kept by :func:`generate_request` on this generation's input."""
    for block in reversed(blocks):
        if block.request_id != generation_id:
            continue
        for tag in block.tags:
            if (tag.kind, tag.name) == META_TAG and tag.value is not None:
                value = tag.value.get("max_tokens")
                return int(value) if isinstance(value, int) else None
    return None
