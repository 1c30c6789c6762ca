"""Anthropic Messages API: ``POST /v1/messages``, and ``GET /v1/messages/{id}`` (the message
as it stands, or with ``?stream=true`` its event stream, resumable).

A message is one generation of the same runtime: its id is ``msg_<generation id>`` (the
generation's id is also in the ``x-generation-id`` header), so it can be read, resumed and
cancelled under ``/generations/{id}`` too, and any generation, however it was started, can
be read here. Streams go through the one SSE pump (send timeout, disconnects: a dropped
stream is cancelled after the grace period) with the pure projection of
:mod:`streaming.dialects.anthropic`; each frame's SSE ``id`` is its cursor in that
projection, so ``GET /v1/messages/{id}?stream=true`` with ``Last-Event-ID`` (or
``?after=``) replays exactly what followed it, and the heartbeat is Anthropic's ``ping``
event. A body field ``multitask`` is taken as on ``POST /generations``; a message starts a
conversation of its own, so nothing is ever in its way. Errors are Anthropic's shape (:mod:`streaming.server.anthropic.errors`); any
``anthropic-version`` is accepted.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from streaming.server.anthropic.errors import (
    anthropic_error,
    failure_error,
    failure_object,
    stream_error,
)
from streaming.server.anthropic.messages import MessagesRequest, generate_request, stored_max_tokens
from streaming.server.auth import authorize_generation, new_owner
from streaming.server.context import read_json, runtime_of, settings_of
from streaming.server.errors import JSONResponse
from streaming.server.frames import DialectFrames
from streaming.server.routes.dialect_helpers import CLIENT_CLOSED, follow, guarded
from streaming.server.routes.generations import resume_cursor
from streaming.server.sse import EventStreamResponse, StreamingEndpoint
from streaming.server.watch import ClientGone, ClientWatch

from streaming.dialects import Failure
from streaming.dialects.anthropic import MessagesProjection
from streaming.errors import NotFoundError, StreamingError
from streaming.events import Event, encode_json
from streaming.model import Generation
from streaming.requests import Multitask
from streaming.runtime import Runtime

__all__ = ["ROUTES", "MessagesFrames", "PingingStream"]

PING = b'event: ping\ndata: {"type":"ping"}\n\n'



class MessagesFrames(DialectFrames):
    """Named SSE events of a :class:`MessagesProjection`, each with its cursor as ``id``;
    the projection ends the stream itself (``message_stop``, or one ``error`` event)."""

    def __init__(self, projection: MessagesProjection) -> None:
        super().__init__(projection, error=self._error, done=None, event_names=True)
        self.next_id = projection.after + 1

    @staticmethod
    def _error(problem: Failure | StreamingError) -> dict[str, Any]:
        if isinstance(problem, Failure):
            return {"type": "error", "error": failure_object(problem)}
        return stream_error(problem)

    def frame_json(self, kind: str | None, js: str) -> str:
        number = self.next_id
        self.next_id += 1
        return f"id: {number}\nevent: {kind}\ndata: {js}\n\n"

    def closing(self) -> bytes:
        return self.frames(self.projection.close())

    def refused(self, exc: StreamingError) -> bytes:
        # Not an event of the projection: no cursor.
        return f"event: error\ndata: {encode_json(stream_error(exc))}\n\n".encode()


class PingingStream(EventStreamResponse):
    """The SSE pump with Anthropic's heartbeat: a ``ping`` event rather than a comment."""

    __slots__ = ()
    heartbeat = PING


def _stream(request: Request, batches: AsyncGenerator[list[Event], None], projection: MessagesProjection,
            generation: Generation) -> PingingStream:
    settings = settings_of(request)
    return PingingStream(
        batches,
        frames=MessagesFrames(projection),
        heartbeat_s=settings.heartbeat_s,
        send_timeout_s=settings.send_timeout_s,
        headers=[(b"x-generation-id", generation.id.encode())],
    )


class _Body(MessagesRequest):
    """Anthropic's body, and ``multitask``."""

    multitask: Multitask = "reject"


def _projection(generation: Generation, max_tokens: int | None, after: int = -1) -> MessagesProjection:
    return MessagesProjection(
        message_id=f"msg_{generation.id}",
        model=generation.generator,
        max_tokens=max_tokens,
        after=after,
        describe=failure_object,
    )


def _headers(generation: Generation) -> dict[str, str]:
    return {"x-generation-id": generation.id}


async def create(request: Request) -> Response | EventStreamResponse:
    body: _Body = await read_json(request, _Body)
    runtime = runtime_of(request)
    owner = new_owner(request)
    runtime.generators.get(body.model)  # an unknown model is refused before anything else
    runtime_request = generate_request(body)
    runtime_request.multitask = body.multitask
    generation = await runtime.start(runtime_request, subscribed=True, owner=owner)
    projection = _projection(generation, body.max_tokens)
    batches = runtime.subscribe(generation.id, 0)
    if body.stream:
        return _stream(request, batches, projection, generation)
    watch = ClientWatch()
    try:
        await watch.watch(request.receive, follow(batches, projection, watch))
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED)
    if projection.failure is not None:
        status, error = failure_error(projection.failure)
        return JSONResponse(error, status_code=status, headers=_headers(generation))
    return JSONResponse(projection.message(), headers=_headers(generation))



def _generation_id(message_id: str) -> str:
    if not message_id.startswith("msg_") or len(message_id) <= 4:
        raise NotFoundError(f"no message {message_id!r}", suggestion="message ids look like msg_gen_…")
    return message_id.removeprefix("msg_")


async def read(request: Request) -> Response | EventStreamResponse:
    runtime: Runtime = runtime_of(request)
    generation = await authorize_generation(request, runtime, _generation_id(request.path_params["id"]))
    max_tokens = None
    if generation.file_id is not None:
        max_tokens = stored_max_tokens((await runtime.get_file(generation.file_id)).blocks, generation.id)
    if request.query_params.get("stream", "").lower() in ("true", "1"):
        # The cursor is the last event id seen; the events after it come again.
        after = resume_cursor(request) if _has_cursor(request) else -1
        await runtime.check_subscribable(generation.id)  # 404 / 429 before the stream starts
        projection = _projection(generation, max_tokens, after)
        return _stream(request, runtime.subscribe(generation.id, 0), projection, generation)
    projection = _projection(generation, max_tokens)
    await follow(runtime.subscribe(generation.id, 0), projection, until=generation.last_seq)
    return JSONResponse(projection.message(), headers=_headers(generation))


def _has_cursor(request: Request) -> bool:
    return bool(request.query_params.get("after") or request.headers.get("last-event-id"))


ROUTES = [
    Route("/v1/messages", StreamingEndpoint(guarded(create, anthropic_error)), methods=["POST"]),
    Route("/v1/messages/{id}", StreamingEndpoint(guarded(read, anthropic_error)), methods=["GET"]),
]
