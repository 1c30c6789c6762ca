"""The body of ``POST /v1/responses`` and its conversion to a runtime request.

``input`` is a string (a user message) or a list of items: messages (``role`` and
``content``, a string or ``input_text`` / ``output_text`` parts), ``function_call`` items
(an earlier call of the model) and ``function_call_output`` items (the client's result for a
call), which become blocks through the chat conversion
(:func:`streaming.server.openai.convert.message_blocks`). A ``function_call_output`` names
its call by ``call_id`` only: the tool's name comes from a ``function_call`` item of the same
input or from the conversation continued by ``previous_response_id``.

Declared tools are the client's (``client_tools="return"``): a turn that calls them ends the
response, and the client sends the outputs in its next request.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from streaming.server.openai.convert import SAMPLING_OPTIONS, message_blocks
from streaming.server.openai.schema import CalledFunction, Message, ToolCall

from streaming.capabilities import Tool
from streaming.errors import InvalidRequestError
from streaming.model import Block, OnDisconnect, Tag
from streaming.requests import BlockInput, GenerateRequest

__all__ = ["META_TAG", "ResponsesRequest", "chat_tool_choice", "generate_request", "request_meta", "stored_meta"]

#: the tag (on the last input block) that keeps what the response was asked, for replays
META_TAG = ("dialect", "openai.responses")


class ResponsesRequest(BaseModel):
    """The body of ``POST /v1/responses`` (fields not listed are ignored).

    ``options`` (send it with the SDK's ``extra_body``) goes to the generator as is.
    """

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stream: bool = False
    background: bool = False
    store: bool = True
    metadata: dict[str, Any] | None = None
    options: dict[str, Any] = Field(default_factory=dict)


def _bad(message: str, param: str = "input") -> InvalidRequestError:
    return InvalidRequestError(message, details={"param": param})


def _text(content: Any, param: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise _bad("content must be a string or a list of parts", param)
    parts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text", "text"):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise InvalidRequestError(
                f"content parts of type {kind!r} are not supported", code="unsupported_content",
                details={"param": param},
            )
        parts.append(str(part.get("text", "")))
    return "".join(parts)


def _messages(body: ResponsesRequest, known_calls: dict[str, str]) -> list[Message]:
    messages: list[Message] = []
    if body.instructions:
        messages.append(Message(role="system", content=body.instructions))
    if isinstance(body.input, str):
        return [*messages, Message(role="user", content=body.input)]
    names = dict(known_calls)
    for n, item in enumerate(body.input):
        kind = item.get("type", "message")
        where = f"input[{n}]"
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise _bad(f"{where}: role must be user, assistant, system or developer", where)
            messages.append(Message(role=role, content=_text(item.get("content"), where)))
        elif kind == "function_call":
            call_id, name = item.get("call_id"), item.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise _bad(f"{where}: a function_call needs call_id and name", where)
            names[call_id] = name
            call = ToolCall(id=call_id, function=CalledFunction(name=name, arguments=str(item.get("arguments") or "{}")))
            messages.append(Message(role="assistant", tool_calls=[call]))
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or call_id not in names:
                raise _bad(
                    f"{where}: function_call_output answers {call_id!r}, which no function_call of this "
                    "input or of the previous response made", where,
                )
            output = item.get("output")
            messages.append(
                Message(role="tool", tool_call_id=call_id, name=names[call_id], content=_text(output, where))
            )
        else:
            raise InvalidRequestError(
                f"{where}: input items of type {kind!r} are not supported", code="unsupported_content",
                details={"param": where},
            )
    return messages


def _tools(body: ResponsesRequest) -> list[Tool | str]:
    if not body.tools or body.tool_choice == "none":
        return []
    tools: list[Tool | str] = []
    for n, spec in enumerate(body.tools):
        if spec.get("type", "function") != "function":
            raise InvalidRequestError(
                f"tools[{n}]: only function tools are supported, not {spec.get('type')!r}",
                code="unsupported_content", details={"param": "tools"},
            )
        try:
            tools.append(Tool(
                name=str(spec.get("name") or ""),
                description=spec.get("description") or "",
                parameters=spec.get("parameters") or {"type": "object", "properties": {}},
            ))
        except ValidationError as exc:
            raise _bad(f"tools[{n}]: {exc.errors()[0]['msg']}", "tools") from exc
    return tools


def chat_tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    """Responses' ``{"type": "function", "name": ...}`` in the chat form the generators
    read (``{"type": "function", "function": {"name": ...}}``); strings as they are."""
    if isinstance(choice, dict) and choice.get("type") == "function" and "name" in choice:
        return {"type": "function", "function": {"name": choice["name"]}}
    return choice


def request_meta(body: ResponsesRequest) -> dict[str, Any]:
    """What the response object repeats of its request (kept for replays)."""
    return {
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "previous_response_id": body.previous_response_id,
        "tools": body.tools or [],
        "tool_choice": body.tool_choice if body.tool_choice is not None else "auto",
        "parallel_tool_calls": body.parallel_tool_calls if body.parallel_tool_calls is not None else True,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "background": body.background,
        "store": body.store,
        "metadata": body.metadata or {},
    }


def generate_request(
    body: ResponsesRequest, *, file_id: str | None = None, known_calls: dict[str, str] | None = None
) -> GenerateRequest:
    """This request as a runtime request (continuing conversation ``file_id``, whose calls
    are ``known_calls``: call id -> tool name).

    Raises:
        InvalidRequestError: an item, a tool or an option the runtime cannot take.
    """
    options = dict(body.options)
    for name in SAMPLING_OPTIONS:
        value = getattr(body, name, None)
        if value is not None:
            options[name] = value
    if body.max_output_tokens is not None:
        options["max_tokens"] = body.max_output_tokens
    tools = _tools(body)
    if tools:
        if body.tool_choice is not None:
            options["tool_choice"] = chat_tool_choice(body.tool_choice)
        if body.parallel_tool_calls is not None:
            options["parallel_tool_calls"] = body.parallel_tool_calls
    blocks: list[BlockInput] = message_blocks(_messages(body, known_calls or {}))
    if not blocks:
        raise _bad("input is empty")
    meta = Tag(kind=META_TAG[0], name=META_TAG[1], value=request_meta(body))
    blocks[-1] = blocks[-1].model_copy(update={"tags": [*blocks[-1].tags, meta]})
    return GenerateRequest(
        generator=body.model,
        blocks=blocks,
        options=options,
        tools=tools,
        file_id=file_id,
        on_disconnect=OnDisconnect.CONTINUE if body.background else OnDisconnect.CANCEL,
        client_tools="return",
    )


def stored_meta(blocks: list[Block], generation_id: str) -> dict[str, Any]:
    """The request fields kept by :func:`generate_request` on this generation's input, or
    ``{}`` (a generation started another way)."""
    for block in reversed(blocks):
        if block.request_id != generation_id:
            continue
        for tag in block.tags:
            if (tag.kind, tag.name) == META_TAG and tag.value is not None:
                return dict(tag.value)
    return {}
