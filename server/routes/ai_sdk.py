"""The Vercel AI SDK's chat routes: ``POST /api/chat`` (a UI message stream),
``GET /api/chat/{id}/stream`` (resume) and ``POST /api/chat/{id}/stop``.

``useChat``, ``Chat`` and ``DefaultChatTransport`` post to ``/api/chat`` by default, with
the chat's ``id``, its ``messages`` (with ``parts``), the ``trigger`` and ``messageId``;
this server also reads ``model`` (the generator), ``options`` (passed to it) and ``tools``
(tool declarations ``{name, description, parameters}``, run by the client) and
``multitask`` (what a message sent while the chat's answer streams does: ``reject``,
``interrupt``, ``rollback`` or ``enqueue``, as on ``POST /generations``). The answer is
a stream of UI message chunks as SSE ``data:`` frames ending in ``data: [DONE]``, with
``x-vercel-ai-ui-message-stream: v1`` and ``x-generation-id`` (the generation, which the
native routes also stream, resume and cancel). The chunks are the pure projection of
:mod:`streaming.dialects.ui_message`, sent by the one SSE pump (heartbeats, send timeout,
``on_disconnect``).

**One chat id is one conversation.** The chat's conversation (a file whose id is derived
from the chat id and the caller) holds the history; a request adds what is new in
``messages``: the last user message, or the outputs of the client tools the last
assistant message called. A chat the server has not seen starts from all of ``messages``.
Client tools end the generation (``finish`` with ``finishReason: "tool-calls"``); the
request carrying their outputs (``addToolOutput`` with ``sendAutomaticallyWhen``) starts
the next generation on the same conversation and continues the same assistant message (its
``start`` names that message). Tools registered on the server are offered too and run
inside the generation when the model can call tools (their parts come with their outputs,
``providerExecuted``).

``regenerate()`` (``trigger: "regenerate-message"``, the answer's ``messageId`` or none for
the last) answers the user message the request ends with again: the turns that wrote that
answer, and every turn after it, leave the conversation first (``GenerateRequest.replace``),
as the client drops them from the chat; a chat the server has not seen starts from all of
``messages``.

Errors before the stream are our JSON errors (``{"error": {code, message, suggestion}}``):
an unknown model is ``404 unknown_generator``, a body that is not JSON ``400``, one of the
wrong shape ``422``. A generation that fails or is cancelled ends its stream with
``error`` or ``abort`` and ``finish``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from streaming.server.auth import authorize_generation, new_owner
from streaming.server.context import read_json, runtime_of
from streaming.server.errors import JSONResponse
from streaming.server.frames import data_frame
from streaming.server.routes.generations import resume_cursor
from streaming.server.sse import EventStreamResponse, StreamingEndpoint, sse_response

from streaming.capabilities import (
    FunctionCallingSupport,
    FunctionCallInvocation,
    FunctionCallResult,
    Tool,
)
from streaming.dialects.ui_message import UIMessageProjection, earlier_parts
from streaming.errors import ConflictError, InvalidRequestError, NotFoundError, StreamingError
from streaming.events import Event, encode_json
from streaming.model import (
    Block,
    ChatTag,
    File,
    Generation,
    MimeTypes,
    OnDisconnect,
    Tag,
    TagKind,
    TagValueKey,
    new_id,
)
from streaming.requests import BlockInput, GenerateRequest, Multitask
from streaming.runtime import Runtime

__all__ = ["ROUTES", "ChatRequest", "UIFrames", "chat_file_id"]

#: the header that tells the AI SDK's clients the body is a UI message stream
STREAM_HEADER = (b"x-vercel-ai-ui-message-stream", b"v1")


class UIMessage(BaseModel):
    """A message of the chat as the AI SDK sends it (its parts are read by type)."""

    model_config = ConfigDict(extra="ignore")

    id: str = ""
    role: Literal["system", "user", "assistant"]
    parts: list[dict[str, Any]] = Field(default_factory=list)


class ChatRequest(BaseModel):
    """The body of ``POST /api/chat``: what ``DefaultChatTransport`` sends, plus ``model``,
    ``options`` and ``tools`` (other fields a client adds are ignored)."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=200)
    messages: list[UIMessage] = Field(min_length=1)
    trigger: Literal["submit-message", "regenerate-message"] = "submit-message"
    messageId: str | None = None  # noqa: N815 - the AI SDK's name
    model: str = Field(min_length=1, max_length=200)
    options: dict[str, Any] = Field(default_factory=dict)
    tools: list[Tool] = Field(default_factory=list)
    on_disconnect: OnDisconnect = OnDisconnect.CANCEL
    multitask: Multitask = "reject"


def chat_file_id(owner: str | None, chat_id: str) -> str:
    """The conversation of a chat: derived from the caller and the chat's id, so the
    same id of two API keys are two conversations."""
    digest = hashlib.sha256(f"{owner or ''}\0{chat_id}".encode()).hexdigest()[:32]
    return f"file_chat_{digest}"


class UIFrames:
    """The projection's chunks as SSE frames (a frame projection for the pump). Each frame
    carries ``id: <seq>`` of the event it comes from; the chunks of events up to ``after``
    are not sent (the projection still reads them). ``data: [DONE]`` ends a stream whose
    generation ended."""

    def __init__(self, projection: UIMessageProjection, after: int = 0) -> None:
        self.projection = projection
        self.after = after
        #: the projection's fast path for a delta of a part already started (None: feed it)
        self.text_delta: Callable[[str, str], str | None] | None = projection.text_delta

    def opening(self) -> bytes:
        return b""

    def batch(self, events: list[Event]) -> bytes:
        feed = self.projection.feed
        fast = self.text_delta
        after = self.after
        out: list[str] = []
        for ev in events:
            if fast is not None and ev.type == "block.delta":
                js = fast(*ev.delta_json())
                if js is not None:
                    if ev.seq > after:
                        out.append(f"id: {ev.seq}\ndata: {js}\n\n")
                    continue
            chunks = feed(ev)
            if chunks and ev.seq > after:
                head = f"id: {ev.seq}\ndata: "
                out.extend(f"{head}{encode_json(c)}\n\n" for c in chunks)
        return "".join(out).encode()

    def closing(self) -> bytes:
        return b"data: [DONE]\n\n" if self.projection.ended else b""

    def refused(self, exc: StreamingError) -> bytes:
        return data_frame({"type": "error", "errorText": f"{exc.code}: {exc.message}"}) + b"data: [DONE]\n\n"


# -- messages to blocks --


def _text(part: dict[str, Any]) -> str:
    return str(part.get("text") or "")


def _tool_name(part: dict[str, Any]) -> str:
    kind = str(part.get("type"))
    return str(part.get("toolName") or "") if kind == "dynamic-tool" else kind[len("tool-") :]


def _is_tool(part: dict[str, Any]) -> bool:
    kind = str(part.get("type"))
    return kind == "dynamic-tool" or kind.startswith("tool-")


def _result_block(part: dict[str, Any], tags: list[Tag]) -> BlockInput | None:
    """The result block of a tool part that has its output (None if it has none)."""
    state = part.get("state")
    if state == "output-available":
        output = part.get("output")
        items = [output if isinstance(output, str) else json.dumps(output)]
        error = False
    elif state == "output-error":
        items, error = [str(part.get("errorText") or "error")], True
    else:
        return None
    result = FunctionCallResult(
        tool_name=_tool_name(part), result=items, call_id=str(part.get("toolCallId")), is_error=error
    )
    return BlockInput(text=result.model_dump_json(exclude_none=True), mime_type=MimeTypes.FUNCTION_CALL_RESULT, tags=tags)


def _message_blocks(message: UIMessage) -> list[BlockInput]:
    """A whole message as blocks (text, and an assistant's tool calls with their outputs)."""
    role = Tag.chat_role(message.role)
    blocks: list[BlockInput] = []
    for part in message.parts:
        kind = part.get("type")
        if kind == "text":
            blocks.append(BlockInput(text=_text(part), tags=[role]))
        elif message.role == "assistant" and _is_tool(part):
            name = _tool_name(part)
            call = FunctionCallInvocation(
                tool_name=name, args=part.get("input") or {}, call_id=str(part.get("toolCallId"))
            )
            selection = Tag(kind=TagKind.FUNCTION_SELECTION, name=name)
            blocks.append(
                BlockInput(
                    text=call.model_dump_json(exclude_none=True),
                    mime_type=MimeTypes.FUNCTION_CALL_INVOCATION,
                    tags=[role, selection],
                )
            )
            result = _result_block(part, [Tag.chat_role("tool")])
            if result is not None:
                blocks.append(result)
        elif kind == "file":
            raise InvalidRequestError(
                "file parts are not supported",
                code="unsupported_content",
                suggestion="send the message's text",
                details={"param": "messages"},
            )
        # step-start, reasoning, sources and data parts carry nothing the model reads
    return blocks


def _unanswered_calls(file: File) -> set[str]:
    """Call ids of the conversation's tool calls that have no result yet."""
    calls: set[str] = set()
    for block in file.blocks:
        try:
            if block.mime_type == MimeTypes.FUNCTION_CALL_INVOCATION:
                calls.add(str(FunctionCallInvocation.from_block(block).call_id))
            elif block.mime_type == MimeTypes.FUNCTION_CALL_RESULT:
                calls.discard(str(FunctionCallResult.from_block(block).call_id))
        except StreamingError:
            continue
    return calls


def _new_input(body: ChatRequest, file: File | None) -> tuple[list[BlockInput], bool]:
    """What this request adds to the conversation, and whether it continues the last
    assistant message (the outputs of its client tools).

    Raises:
        InvalidRequestError: nothing new to answer.
    """
    last = body.messages[-1]
    if file is None:
        blocks = [b for m in body.messages for b in _message_blocks(m)]
        if blocks:
            return blocks, last.role == "assistant"
    elif last.role == "user":
        blocks = _message_blocks(last)
        if blocks:
            return blocks, False
    elif last.role == "assistant":
        open_calls = _unanswered_calls(file)
        tool = Tag.chat_role("tool")
        results = [
            r
            for part in last.parts
            if _is_tool(part) and str(part.get("toolCallId")) in open_calls
            for r in [_result_block(part, [tool])]
            if r is not None
        ]
        if results:
            return results, True
    raise InvalidRequestError(
        "the last message adds nothing to answer: send a user message, or the outputs of the last message's tool calls",
        details={"param": "messages"},
    )


def _regenerated(body: ChatRequest, file: File) -> tuple[list[BlockInput], list[str]]:
    """What a ``regenerate-message`` request answers again: the last user message it sends
    (the client drops the answer, and anything after it, before it asks), and the
    generations whose turns it replaces: those that wrote the assistant message
    ``messageId`` (the last one if none is named), its question with them, and every turn
    after it (the client keeps only the messages before that answer).

    Raises:
        InvalidRequestError: no such message in the chat, or the request ends with no user
            message to answer.
    """
    message_id = body.messageId
    if message_id is None:
        message_id = next((m for b in reversed(file.blocks) if (m := _message_tag_of(b)) is not None), None)
    answering = set() if message_id is None else {
        b.request_id for b in file.blocks if b.request_id and _message_tag_of(b) == message_id
    }
    # The client keeps only the messages before that answer: so does the conversation.
    first = next((i for i, b in enumerate(file.blocks) if b.request_id in answering), len(file.blocks))
    replaced = sorted({b.request_id for b in file.blocks[first:] if b.request_id})
    if not replaced:
        named = f" {message_id!r}" if message_id is not None else ""
        raise InvalidRequestError(
            f"chat {body.id!r} has no assistant message{named} to regenerate",
            suggestion="name an assistant message of this chat in messageId",
            details={"param": "messageId"},
        )
    last = body.messages[-1]
    blocks = _message_blocks(last) if last.role == "user" else []
    if not blocks:
        raise InvalidRequestError(
            "a regenerate request ends with the user message to answer again",
            details={"param": "messages"},
        )
    return blocks, replaced


def _message_tag(message_id: str) -> Tag:
    return Tag(kind=TagKind.CHAT, name=ChatTag.MESSAGE_ID, value={TagValueKey.STRING_VALUE: message_id})


def _message_tag_of(block: Block) -> str | None:
    for tag in block.tags:
        if tag.kind == TagKind.CHAT and tag.name == ChatTag.MESSAGE_ID and tag.value:
            return str(tag.value.get(TagValueKey.STRING_VALUE))
    return None


def _message_of(blocks: list[Block], generation_id: str) -> tuple[str | None, list[dict[str, Any]]]:
    """The assistant message a generation of this route answers (a tag on its inputs), and
    the chunks of the parts that message had before it (earlier generations' outputs, and
    the client's tool outputs it was started with)."""
    message_id = next(
        (m for b in blocks if b.request_id == generation_id and (m := _message_tag_of(b)) is not None), None
    )
    if message_id is None:
        return None, []
    inputs = {b.id for b in blocks if _message_tag_of(b) == message_id}
    generations = {b.request_id for b in blocks if b.id in inputs}
    earlier = [
        b.model_dump(mode="json")
        for b in blocks
        if b.request_id in generations
        and b.chat_role not in ("user", "system")
        and (b.request_id != generation_id or b.id in inputs)  # (its outputs come from its log)
    ]
    return message_id, earlier_parts(earlier, inputs)


# -- routes --


async def _chat_file(runtime: Runtime, file_id: str) -> File | None:
    try:
        return await runtime.get_file(file_id)
    except NotFoundError:
        return None


_starting: set[str] = set()  # chats (conversations) a request of this process is starting


async def chat(request: Request) -> Response | EventStreamResponse:
    owner = new_owner(request)
    body: ChatRequest = await read_json(request, ChatRequest)
    runtime = runtime_of(request)
    if body.model not in runtime.generators:
        raise NotFoundError(
            f"no model {body.model!r}",
            code="unknown_generator",
            suggestion=f"one of: {', '.join(runtime.generators.names())}",
        )
    file_id = chat_file_id(owner, body.id)
    # From reading the conversation to the generation's claim on it, one request per chat
    # (no await between this check and the mark): two first requests of a chat must not
    # both create its conversation.
    if file_id in _starting:
        raise ConflictError(f"chat {body.id!r} has a request starting", suggestion="wait for it to finish")
    _starting.add(file_id)
    try:
        generation, message_id = await _start(runtime, body, owner, file_id)
    finally:
        _starting.discard(file_id)
    return _stream(request, runtime, generation, message_id, body.options, 0)


async def _start(runtime: Runtime, body: ChatRequest, owner: str | None, file_id: str) -> tuple[Generation, str]:
    """Start the generation that answers this request (in the chat's conversation); return
    it and the assistant message it writes."""
    file = await _chat_file(runtime, file_id)
    replace: list[str] = []
    if body.trigger == "regenerate-message" and file is not None:
        blocks, replace = _regenerated(body, file)
        continues = False
    else:  # (a chat this server has not seen starts from all its messages, whatever the trigger)
        blocks, continues = _new_input(body, file)
    message_id = (body.messageId or body.messages[-1].id or new_id("msg")) if continues else new_id("msg")
    tag = _message_tag(message_id)
    for block in blocks:
        block.tags.append(tag)
    if file is None:
        await runtime.store.put_file(File(id=file_id, owner=owner))
    server_tools: list[str] = []
    if FunctionCallingSupport in runtime.generators.get(body.model).supported_capabilities:
        # The server's tools, offered to a model that can call tools (a client's tool of
        # the same name is the client's).
        server_tools = [t.name for t in runtime.tools.declarations() if t.name not in {c.name for c in body.tools}]
    generate = GenerateRequest(
        generator=body.model,
        blocks=blocks,
        options=body.options,
        tools=[*body.tools, *server_tools],
        file_id=file_id,
        on_disconnect=body.on_disconnect,
        client_tools="return",
        multitask=body.multitask,
        replace=replace,
    )
    return await runtime.start(generate, subscribed=True, owner=owner), message_id


def _stream(
    request: Request,
    runtime: Runtime,
    generation: Generation,
    message_id: str,
    options: dict[str, Any],
    after: int,
    earlier: list[dict[str, Any]] | None = None,
) -> EventStreamResponse:
    limit = options.get("max_tokens")
    projection = UIMessageProjection(
        message_id=message_id, max_tokens=limit if isinstance(limit, int) else None, earlier=earlier
    )
    headers = [STREAM_HEADER, (b"x-generation-id", generation.id.encode())]
    frames = UIFrames(projection, after)
    return sse_response(request, runtime.subscribe(generation.id, 0), frames=frames, headers=headers)


async def _running(request: Request, runtime: Runtime) -> tuple[Generation, str, list[dict[str, Any]]] | None:
    """The chat's running generation, the message it answers and that message's earlier
    parts, if one runs."""
    file = await _chat_file(runtime, chat_file_id(new_owner(request), request.path_params["id"]))
    if file is None:
        return None
    ids = [b.request_id for b in file.blocks if b.request_id]
    if not ids:
        return None
    generation = await authorize_generation(request, runtime, ids[-1])
    if generation.state.finished:
        return None
    message_id, earlier = _message_of(file.blocks, generation.id)
    return generation, message_id or f"msg_{generation.id}", earlier


async def resume(request: Request) -> Response | EventStreamResponse:
    runtime = runtime_of(request)
    after = resume_cursor(request)
    found = await _running(request, runtime)
    if found is None:
        return Response(status_code=204)
    generation, message_id, earlier = found
    await runtime.check_subscribable(generation.id)
    # From its start, the stream rebuilds the whole message (the AI SDK's clients start it
    # afresh at `start`): the parts of the generations before this one come first.
    return _stream(request, runtime, generation, message_id, {}, after, earlier)


async def stop(request: Request) -> Response:
    runtime = runtime_of(request)
    found = await _running(request, runtime)
    if found is None:
        return Response(status_code=204)
    generation = await runtime.cancel(found[0].id, "stopped by the client")
    return JSONResponse({"generation": generation.public()})


ROUTES = [
    Route("/api/chat", StreamingEndpoint(chat), methods=["POST"]),
    Route("/api/chat/{id}/stream", StreamingEndpoint(resume), methods=["GET"]),
    Route("/api/chat/{id}/stop", stop, methods=["POST"]),
]
