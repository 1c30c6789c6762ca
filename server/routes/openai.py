"""OpenAI-compatible API: ``POST /v1/chat/completions`` and ``GET /v1/models``.

Every OpenAI SDK is a client. ``model`` names a registered generator. A request becomes
one generation of the same runtime (``runtime.start`` then ``runtime.subscribe``), so it
also shows under ``/generations/{id}`` (the id is in the ``x-generation-id`` header and in
the completion id, ``chatcmpl-<generation id>``), where it can be resumed or cancelled.

Streaming answers are ``chat.completion.chunk`` SSE frames ending in ``data: [DONE]``
(with ``stream_options.include_usage`` a last chunk carries the usage); otherwise one
``chat.completion``. Errors are OpenAI's ``{"error": {message, type, param, code}}``; a
failure after the stream started is one ``data: {"error": ...}`` frame (the SDKs raise it).

Tools follow OpenAI's semantics: tools the client declares are the client's to run. When
the model calls them, the response ends with ``finish_reason: "tool_calls"`` and the
generation ends there (``succeeded``; it runs with ``client_tools="return"``) rather than
waiting for results mid-stream. The follow-up request carries the assistant ``tool_calls`` message and the
``tool`` messages; they become invocation and result blocks of a new generation, and the
model answers from them. A tool that is also registered on the server runs server-side
inside the generation, as on ``/generations``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from streaming.server.auth import new_owner
from streaming.server.context import read_json, runtime_of

from streaming.capabilities import FunctionCallInvocation, FunctionCallResult, Tool
from streaming.errors import InvalidRequestError, StreamingError
from streaming.events import Event
from streaming.model import MimeTypes, RoleTag, Tag, TagKind
from streaming.requests import BlockInput, GenerateRequest
from streaming.runtime import Runtime

__all__ = ["ROUTES", "ChatCompletionRequest", "openai_error"]

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
]


# -- the request --


class _Function(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class _ToolSpec(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function"] = "function"
    function: _Function


class _CalledFunction(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    arguments: str = "{}"


class _ToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    type: Literal["function"] = "function"
    function: _CalledFunction


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[_ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") not in ("text", "input_text"):
                raise InvalidRequestError(
                    f"content parts of type {part.get('type')!r} are not supported",
                    code="unsupported_content",
                    details={"param": "messages"},
                )
            parts.append(str(part.get("text", "")))
        return "".join(parts)


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The body of ``POST /v1/chat/completions`` (fields not listed are ignored).

    ``options`` (send it with the SDK's ``extra_body``) goes to the generator as is.
    """

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[_Message] = Field(min_length=1)
    stream: bool = False
    stream_options: _StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    tools: list[_ToolSpec] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    n: int | None = None
    user: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    def generate_request(self) -> GenerateRequest:
        """This request as a runtime request.

        Raises:
            InvalidRequestError: a message or option the runtime cannot take.
        """
        if self.n not in (None, 1):
            raise InvalidRequestError("only n=1 is supported", details={"param": "n"})
        options = dict(self.options)
        for name in ("temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if value is not None:
                options[name] = value
        max_tokens = self.max_completion_tokens or self.max_tokens
        if max_tokens is not None:
            options["max_tokens"] = max_tokens
        tools: list[Tool | str] = []
        if self.tools and self.tool_choice != "none":
            try:
                tools = [
                    Tool(name=t.function.name, description=t.function.description, parameters=t.function.parameters)
                    for t in self.tools
                ]
            except ValidationError as exc:
                raise InvalidRequestError(
                    f"bad tool: {exc.errors()[0]['msg']}", details={"param": "tools"}
                ) from exc
            if self.tool_choice is not None:
                options["tool_choice"] = self.tool_choice
            if self.parallel_tool_calls is not None:
                options["parallel_tool_calls"] = self.parallel_tool_calls
        return GenerateRequest(
            generator=self.model,
            blocks=_blocks(self.messages),
            options=options,
            tools=tools,
            client_tools="return",
        )


def _blocks(messages: list[_Message]) -> list[BlockInput]:
    """Messages as blocks: ``tool_calls`` as invocation blocks, ``tool`` messages as results."""
    blocks: list[BlockInput] = []
    names: dict[str, str] = {}  # tool call id -> tool name
    for msg in messages:
        role = msg.role
        if role == "developer":
            role = "system"
        if role in ("tool", "function"):
            call_id = msg.tool_call_id
            name = names.get(call_id or "") or msg.name
            if name is None:
                raise InvalidRequestError(
                    f"tool message answers {call_id!r}, which no assistant tool_calls message made",
                    details={"param": "messages"},
                )
            result = FunctionCallResult(tool_name=name, result=[msg.text()], call_id=call_id)
            blocks.append(
                BlockInput(
                    text=result.model_dump_json(exclude_none=True),
                    mime_type=MimeTypes.FUNCTION_CALL_RESULT,
                    tags=[Tag.chat_role(RoleTag.TOOL)],
                )
            )
            continue
        text = msg.text()
        if text or not msg.tool_calls:
            blocks.append(BlockInput(text=text, tags=[Tag.chat_role(role)]))
        for call in msg.tool_calls or []:
            try:
                args = json.loads(call.function.arguments or "{}")
            except json.JSONDecodeError as exc:
                raise InvalidRequestError(
                    f"tool call {call.id}: arguments are not JSON", details={"param": "messages"}
                ) from exc
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


# -- errors --


_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def _error_body(status: int, message: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def openai_error(exc: StreamingError) -> JSONResponse:
    """A runtime error in OpenAI's shape (validation errors are 400, as OpenAI answers)."""
    status = 400 if exc.status == 422 else exc.status
    if exc.code == "unknown_generator":
        status = 404
    if status == 499:
        status = 409
    message = exc.message + (f" ({exc.suggestion})" if exc.suggestion else "")
    param = exc.details.get("param")
    code = "model_not_found" if exc.code == "unknown_generator" else exc.code
    return JSONResponse(_error_body(status, message, code, param if isinstance(param, str) else None), status_code=status)


def _failure_status(code: str) -> int:
    if code in ("upstream_timeout", "tool_timeout"):
        return 504
    if code.startswith("upstream"):
        return 502
    if code == "model_unavailable":
        return 503
    return 500


def _guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except StreamingError as exc:
            return openai_error(exc)

    return guarded


# -- events to chunks (sans-IO) --


class _Translator:
    """Reads a generation's events; says what to tell an OpenAI client.

    Text deltas of the assistant's text blocks become ``content``; calls of tools that are
    not the server's become ``tool_calls``.
    """

    def __init__(self, server_tools: set[str]) -> None:
        self.server_tools = server_tools
        self.text_blocks: set[str] = set()
        self.open_blocks: set[str] = set()
        self.content: list[str] = []
        self.tool_calls: list[dict[str, Any]] = []
        self.pending: set[str] = set()
        self.outcome: str | None = None  # "completed" | "failed" | "cancelled"
        self.error: dict[str, Any] = {}
        self.cancel_reason = ""
        self.usage: list[dict[str, Any]] = []
        self.max_tokens: int | None = None

    def _block(self, block: dict[str, Any]) -> None:
        mime = block.get("mime_type") or MimeTypes.TXT
        if block.get("stream_state") == "started" and mime not in (
            MimeTypes.FUNCTION_CALL_INVOCATION,
            MimeTypes.FUNCTION_CALL_RESULT,
        ):
            self.open_blocks.add(block["id"])
            if mime.startswith("text/"):
                self.text_blocks.add(block["id"])

    def feed(self, event: Event) -> list[dict[str, Any]]:
        """Deltas (OpenAI ``delta`` objects) this event adds."""
        data = event.to_dict()  # not .data: a coalesced delta's text is joined here
        kind = event.type
        out: list[dict[str, Any]] = []
        if kind == "generation.started":
            for block in data.get("blocks") or []:
                self._block(block)
        elif kind == "block.created":
            self._block(data["block"])
        elif kind == "block.delta":
            if data["block_id"] in self.text_blocks and data["text"]:
                self.content.append(data["text"])
                out.append({"content": data["text"]})
        elif kind in ("block.completed", "block.aborted"):
            self.open_blocks.discard(data["block_id"])
        elif kind == "tool.call":
            if data["tool_name"] not in self.server_tools:
                call = {
                    "index": len(self.tool_calls),
                    "id": data["call_id"],
                    "type": "function",
                    "function": {"name": data["tool_name"], "arguments": json.dumps(data["args"])},
                }
                self.tool_calls.append(call)
                self.pending.add(data["call_id"])
                out.append({"tool_calls": [call]})
        elif kind == "tool.result":
            self.pending.discard(data["call_id"])
        elif kind == "generation.completed":
            self.outcome = "completed"
            self.usage = list(data.get("usage") or [])
        elif kind == "generation.failed":
            self.outcome = "failed"
            self.error = dict(data.get("error") or {})
        elif kind == "generation.cancelled":
            self.outcome = "cancelled"
            self.cancel_reason = str(data.get("reason") or "")
        return out

    def finish_reason(self) -> str:
        if self.tool_calls:
            return "tool_calls"
        # The last round's sampled tokens reaching the limit means the answer was cut.
        sampled = [u for u in self.usage if u.get("operation_unit") == "sampled tokens"]
        limit = self.max_tokens
        if limit and sampled and int(sampled[-1].get("operation_amount", 0)) >= limit:
            return "length"
        return "stop"

    def usage_dict(self) -> dict[str, int]:
        prompt = sum(int(u.get("operation_amount", 0)) for u in self.usage if u.get("operation_unit") == "prompt tokens")
        sampled = sum(
            int(u.get("operation_amount", 0)) for u in self.usage if u.get("operation_unit") == "sampled tokens"
        )
        return {"prompt_tokens": prompt, "completion_tokens": sampled, "total_tokens": prompt + sampled}

    def failure(self) -> tuple[int, dict[str, Any]] | None:
        """The error to report, if the generation did not end well."""
        if self.outcome == "failed":
            code = str(self.error.get("code") or "generation_failed")
            message = str(self.error.get("message") or "the generation failed")
            return _failure_status(code), _error_body(_failure_status(code), message, code)
        if self.outcome == "cancelled":
            message = f"the generation was cancelled: {self.cancel_reason}"
            return 409, _error_body(409, message, "cancelled")
        return None


async def _follow(runtime: Runtime, generation_id: str, translator: _Translator, on_delta: Any) -> None:
    """Feed the generation's events to ``translator`` until it ends. With
    ``client_tools="return"`` a turn that calls client tools ends the generation
    (succeeded), so nothing is left waiting for a result that comes in the next request."""
    async with aclosing(runtime.subscribe(generation_id, 0)) as batches:
        async for batch in batches:
            for event in batch:
                for delta in translator.feed(event):
                    await on_delta(delta)


# -- routes --


async def chat_completions(request: Request) -> Response:
    body: ChatCompletionRequest = await read_json(request, ChatCompletionRequest)
    runtime = runtime_of(request)
    if body.model not in runtime.generators:
        raise InvalidRequestError(
            f"the model {body.model!r} does not exist",
            code="unknown_generator",
            details={"param": "model"},
        )
    gen_request = body.generate_request()
    generation = await runtime.start(gen_request, subscribed=True, owner=new_owner(request))
    translator = _Translator({t.name for t in runtime.tools.declarations()})
    translator.max_tokens = body.max_completion_tokens or body.max_tokens
    completion_id = f"chatcmpl-{generation.id}"
    created = int(time.time())
    headers = {"x-generation-id": generation.id}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _ChunkStream(  # type: ignore[return-value]
            runtime, generation.id, translator, completion_id, created, body.model, include_usage
        )

    async def ignore(delta: dict[str, Any]) -> None:
        return None

    await _follow(runtime, generation.id, translator, ignore)
    failure = translator.failure()
    if failure is not None:
        status, error = failure
        return JSONResponse(error, status_code=status, headers=headers)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(translator.content) if translator.content or not translator.tool_calls else None,
        "refusal": None,
    }
    if translator.tool_calls:
        message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in translator.tool_calls]
    return JSONResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [
                {"index": 0, "message": message, "finish_reason": translator.finish_reason(), "logprobs": None}
            ],
            "usage": translator.usage_dict(),
        },
        headers=headers,
    )


class _ChunkStream:
    """The streaming answer: chunks as the generation's events arrive, until ``[DONE]``.

    The pump and a disconnect listener race in one task group; a client that goes away
    ends the subscription, and the runtime's ``on_disconnect`` policy applies.
    """

    def __init__(
        self,
        runtime: Runtime,
        generation_id: str,
        translator: _Translator,
        completion_id: str,
        created: int,
        model: str,
        include_usage: bool,
    ) -> None:
        self.runtime = runtime
        self.generation_id = generation_id
        self.translator = translator
        self.include_usage = include_usage
        self.base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        chunk: dict[str, Any] = {
            **self.base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if self.include_usage:
            chunk["usage"] = None
        return _frame(chunk)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [*SSE_HEADERS, (b"x-generation-id", self.generation_id.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})

        async def write(body: bytes) -> None:
            await send({"type": "http.response.body", "body": body, "more_body": True})

        async with anyio.create_task_group() as tg:

            async def pump() -> None:
                try:
                    await write(self._chunk({"role": "assistant", "content": ""}))

                    async def on_delta(delta: dict[str, Any]) -> None:
                        await write(self._chunk(delta))

                    await _follow(self.runtime, self.generation_id, self.translator, on_delta)
                    await write(self._ending())
                finally:
                    tg.cancel_scope.cancel()

            async def listen() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(pump)
            tg.start_soon(listen)
        with anyio.CancelScope(shield=True):
            try:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:
                pass

    def _ending(self) -> bytes:
        failure = self.translator.failure()
        if failure is not None:
            return _frame(failure[1])
        out = self._chunk({}, self.translator.finish_reason())
        if self.include_usage:
            out += _frame({**self.base, "choices": [], "usage": self.translator.usage_dict()})
        return out + b"data: [DONE]\n\n"


def _frame(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


async def models(request: Request) -> Response:
    names = runtime_of(request).generators.names()
    return JSONResponse({"object": "list", "data": [_model(n) for n in names]})


async def model(request: Request) -> Response:
    name = request.path_params["id"]
    if name not in runtime_of(request).generators:
        raise InvalidRequestError(
            f"the model {name!r} does not exist", code="unknown_generator", details={"param": "model"}
        )
    return JSONResponse(_model(name))


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "streaming"}


ROUTES = [
    Route("/v1/chat/completions", _guarded(chat_completions), methods=["POST"]),
    Route("/v1/models", _guarded(models), methods=["GET"]),
    Route("/v1/models/{id:path}", _guarded(model), methods=["GET"]),
]
