"""A chat-completion request as a runtime request: messages to blocks, parameters to options.

Tools follow OpenAI's semantics: tools the client declares are the client's to run, so the
generation runs with ``client_tools="return"`` (a turn that calls them ends the generation).
An assistant message's ``tool_calls`` become invocation blocks and ``tool`` messages result
blocks, so the model answers from them.
"""

from __future__ import annotations

from pydantic import ValidationError
from streaming.server.openai.schema import ChatCompletionRequest, Message

from streaming.capabilities import FunctionCallInvocation, FunctionCallResult, Tool
from streaming.errors import InvalidRequestError, MalformedRequestError
from streaming.model import MimeTypes, RoleTag, Tag, TagKind
from streaming.requests import BlockInput, GenerateRequest
from streaming.textcheck import loads

__all__ = ["generate_request", "message_blocks", "message_text"]

#: parameters passed to the generator as options of the same name
SAMPLING_OPTIONS = ("temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty")


def generate_request(body: ChatCompletionRequest) -> GenerateRequest:
    """This request as a runtime request.

    Raises:
        InvalidRequestError: a message or option the runtime cannot take.
    """
    if body.n not in (None, 1):
        raise InvalidRequestError("only n=1 is supported", details={"param": "n"})
    options = dict(body.options)
    for name in SAMPLING_OPTIONS:
        value = getattr(body, name)
        if value is not None:
            options[name] = value
    if body.token_limit is not None:
        options["max_tokens"] = body.token_limit
    tools: list[Tool | str] = []
    if body.tools and body.tool_choice != "none":
        try:
            tools = [
                Tool(name=t.function.name, description=t.function.description, parameters=t.function.parameters)
                for t in body.tools
            ]
        except ValidationError as exc:
            raise InvalidRequestError(f"bad tool: {exc.errors()[0]['msg']}", details={"param": "tools"}) from exc
        if body.tool_choice is not None:
            options["tool_choice"] = body.tool_choice
        if body.parallel_tool_calls is not None:
            options["parallel_tool_calls"] = body.parallel_tool_calls
    return GenerateRequest(
        generator=body.model,
        blocks=message_blocks(body.messages),
        options=options,
        tools=tools,
        client_tools="return",
    )


def message_text(msg: Message) -> str:
    """The message's text. Raises InvalidRequestError for content parts that are not text."""
    if msg.content is None:
        return ""
    if isinstance(msg.content, str):
        return msg.content
    parts = []
    for part in msg.content:
        if part.get("type") not in ("text", "input_text"):
            raise InvalidRequestError(
                f"content parts of type {part.get('type')!r} are not supported",
                code="unsupported_content",
                details={"param": "messages"},
            )
        parts.append(str(part.get("text", "")))
    return "".join(parts)


def message_blocks(messages: list[Message]) -> list[BlockInput]:
    """Messages as blocks: ``tool_calls`` as invocation blocks, ``tool`` messages as results.

    Raises:
        InvalidRequestError: a tool message answers no call, or a call's arguments are not
            a JSON object.
    """
    blocks: list[BlockInput] = []
    names: dict[str, str] = {}  # tool call id -> tool name
    for msg in messages:
        role = "system" if msg.role == "developer" else msg.role
        if role in ("tool", "function"):
            call_id = msg.tool_call_id
            name = names.get(call_id or "") or msg.name
            if name is None:
                raise InvalidRequestError(
                    f"tool message answers {call_id!r}, which no assistant tool_calls message made",
                    details={"param": "messages"},
                )
            result = FunctionCallResult(tool_name=name, result=[message_text(msg)], call_id=call_id)
            blocks.append(
                BlockInput(
                    text=result.model_dump_json(exclude_none=True),
                    mime_type=MimeTypes.FUNCTION_CALL_RESULT,
                    tags=[Tag.chat_role(RoleTag.TOOL)],
                )
            )
            continue
        text = message_text(msg)
        if text or not msg.tool_calls:
            blocks.append(BlockInput(text=text, tags=[Tag.chat_role(role)]))
        for call in msg.tool_calls or []:
            try:
                # JSON in a string: through the same door as the body it came in.
                args = loads(call.function.arguments or "{}", what=f"tool call {call.id!r}: arguments")
            except MalformedRequestError as exc:
                raise MalformedRequestError(
                    exc.message, code=exc.code, suggestion=exc.suggestion, details={"param": "messages"}
                ) from None
            if not isinstance(args, dict):
                raise InvalidRequestError(
                    f"tool call {call.id}: arguments must be a JSON object", details={"param": "messages"}
                )
            names[call.id] = call.function.name
            inv = FunctionCallInvocation(tool_name=call.function.name, args=args, call_id=call.id)
            blocks.append(
                BlockInput(
                    text=inv.model_dump_json(exclude_none=True),
                    mime_type=MimeTypes.FUNCTION_CALL_INVOCATION,
                    tags=[
                        Tag.chat_role(RoleTag.ASSISTANT),
                        Tag(kind=TagKind.FUNCTION_SELECTION, name=call.function.name),
                    ],
                )
            )
    return blocks
