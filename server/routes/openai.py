"""OpenAI-compatible API: ``POST /v1/chat/completions`` and ``GET /v1/models``.

Every OpenAI SDK is a client. ``model`` names a registered generator. A request becomes
one generation of the same runtime (``runtime.start`` then ``runtime.subscribe``), so it
also shows under ``/generations/{id}`` (the id is in the ``x-generation-id`` header and in
the completion id, ``chatcmpl-<generation id>``), where it can be resumed or cancelled.

Streaming answers are ``chat.completion.chunk`` SSE frames ending in ``data: [DONE]``
(with ``stream_options.include_usage`` a last chunk carries the usage), sent by the same
pump as every other stream (heartbeats, send timeout, disconnects); otherwise one
``chat.completion``, and a client that leaves before it is ready is a disconnect like any
other (the generation's ``on_disconnect`` applies). Errors are OpenAI's ``{"error":
{message, type, param, code}}``; a generation that fails is answered with the status of its
error code (a request the model cannot answer is a 400 with the reason), or, once the
stream started, one ``data: {"error": ...}`` frame (the SDKs raise it).

Tools follow OpenAI's semantics (see :mod:`streaming.server.openai.convert`): when the
model calls the client's tools, the response ends with ``finish_reason: "tool_calls"`` and
the generation ends there. A tool that is also registered on the server runs server-side
inside the generation, as on ``/generations``.

The pieces: request bodies in :mod:`streaming.server.openai.schema`, conversion in
:mod:`streaming.server.openai.convert`, error shaping in :mod:`streaming.server.openai.errors`,
and the projection of events to chunks in :mod:`streaming.dialects.openai_chat`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from streaming.server.auth import new_owner
from streaming.server.context import read_json, runtime_of
from streaming.server.errors import JSONResponse
from streaming.server.frames import DialectFrames
from streaming.server.openai.convert import generate_request
from streaming.server.openai.errors import failure_error, openai_error, stream_error
from streaming.server.openai.schema import ChatCompletionRequest
from streaming.server.sse import EventStreamResponse, StreamingEndpoint, sse_response
from streaming.server.watch import ClientGone, ClientWatch

from streaming.dialects.openai_chat import ChatChunkProjection
from streaming.errors import InvalidRequestError, StreamingError
from streaming.events import Event

__all__ = ["ROUTES"]

Handler = Callable[[Request], Awaitable[Any]]

#: what a client that left is "answered" (nobody reads it; nginx's code for it)
CLIENT_CLOSED = 499


def _guarded(handler: Handler) -> Handler:
    """Errors raised before the response starts, in OpenAI's shape."""

    async def guarded(request: Request) -> Any:
        try:
            return await handler(request)
        except StreamingError as exc:
            return openai_error(exc)

    guarded.__name__ = handler.__name__
    return guarded


def _unknown_model(name: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"the model {name!r} does not exist", code="unknown_generator", details={"param": "model"}
    )


async def chat_completions(request: Request) -> Response | EventStreamResponse:
    body: ChatCompletionRequest = await read_json(request, ChatCompletionRequest)
    runtime = runtime_of(request)
    if body.model not in runtime.generators:
        raise _unknown_model(body.model)
    generation = await runtime.start(generate_request(body), subscribed=True, owner=new_owner(request))
    projection = ChatChunkProjection(
        completion_id=f"chatcmpl-{generation.id}",
        created=int(time.time()),
        model=body.model,
        server_tools={t.name for t in runtime.tools.declarations()},
        include_usage=body.include_usage,
        max_tokens=body.token_limit,
    )
    batches = runtime.subscribe(generation.id, 0)
    if body.stream:
        frames = DialectFrames(projection, error=stream_error)
        return sse_response(request, batches, frames=frames, headers=[(b"x-generation-id", generation.id.encode())])
    watch = ClientWatch()
    try:
        await watch.watch(request.receive, _follow(batches, projection, watch))
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED)
    headers = {"x-generation-id": generation.id}
    if projection.failure is not None:
        status, error = failure_error(projection.failure)
        return JSONResponse(error, status_code=status, headers=headers)
    return JSONResponse(projection.completion(), headers=headers)


async def _follow(
    batches: AsyncGenerator[list[Event], None], projection: ChatChunkProjection, watch: ClientWatch
) -> None:
    """Feed the generation's events to ``projection`` until it ends. With
    ``client_tools="return"`` a turn that calls client tools ends the generation
    (succeeded), so nothing is left waiting for a result that comes in the next request."""
    async with aclosing(batches) as events:
        async for batch in events:
            for event in batch:
                projection.deltas(event)
            if watch.left:
                return  # a cancellation was swallowed under us: stop here


async def models(request: Request) -> Response:
    names = runtime_of(request).generators.names()
    return JSONResponse({"object": "list", "data": [_model(n) for n in names]})


async def model(request: Request) -> Response:
    name = request.path_params["id"]
    if name not in runtime_of(request).generators:
        raise _unknown_model(name)
    return JSONResponse(_model(name))


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "streaming"}


ROUTES = [
    Route("/v1/chat/completions", StreamingEndpoint(_guarded(chat_completions)), methods=["POST"]),
    Route("/v1/models", _guarded(models), methods=["GET"]),
    Route("/v1/models/{id:path}", _guarded(model), methods=["GET"]),
]
