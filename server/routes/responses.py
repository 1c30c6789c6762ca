"""OpenAI Responses API: ``POST /v1/responses``, ``GET /v1/responses/{id}`` (and its stream,
``?stream=true[&starting_after=N]``), ``POST /v1/responses/{id}/cancel``.

A response is one generation of the same runtime: its id is ``resp_<generation id>`` (the
generation's id is also in the ``x-generation-id`` header), so it can be read, resumed and
cancelled under ``/generations/{id}`` too, and any generation, however it was started, can
be read, streamed and cancelled here. Streams go through the one SSE pump (heartbeats, send
timeout, disconnects) with the pure projection of :mod:`streaming.dialects.responses`; a
replay runs the projection over the whole log and leaves out the events up to
``starting_after``, so every ``sequence_number`` is the one the first stream had.

``previous_response_id`` continues that response's conversation (one generation at a time
per conversation, as everywhere); ``function_call_output`` items answer its client-side
calls. ``background: true`` answers at once (``in_progress``) and the generation runs
whoever listens; otherwise a dropped stream is a disconnect (``on_disconnect``: cancelled
after the grace period). A body field ``multitask`` (the SDK's ``extra_body``) says what a
request continuing a conversation that is busy does, as on ``POST /generations``. Errors are OpenAI's shape (:mod:`streaming.server.openai.errors`).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from streaming.server.auth import authorize_generation, new_owner
from streaming.server.context import read_json, runtime_of
from streaming.server.errors import JSONResponse
from streaming.server.frames import DialectFrames
from streaming.server.openai.errors import failure_error, openai_error, stream_error
from streaming.server.openai.responses import (
    ResponsesRequest,
    generate_request,
    request_meta,
    stored_meta,
)
from streaming.server.routes.dialect_helpers import CLIENT_CLOSED, follow, guarded
from streaming.server.sse import EventStreamResponse, StreamingEndpoint, sse_response
from streaming.server.watch import ClientGone, ClientWatch

from streaming.capabilities import FunctionCallInvocation
from streaming.dialects import Failure
from streaming.dialects.responses import ResponsesProjection
from streaming.errors import InvalidRequestError, NotFoundError, StreamingError
from streaming.model import Generation, MimeTypes
from streaming.requests import Multitask
from streaming.runtime import Runtime

__all__ = ["ROUTES", "ResponsesFrames"]


def _nested(problem: Failure | StreamingError) -> dict[str, Any]:
    """A failure or a refusal as the ``error`` object of an ``error`` event."""
    error: dict[str, Any] = stream_error(problem)["error"]
    return error


class ResponsesFrames(DialectFrames):
    """Named SSE events (``event: response.output_text.delta``) of a
    :class:`ResponsesProjection`, which numbers and ends the stream itself: a failure's
    ``error`` and ``response.failed`` come from the projection, with their sequence
    numbers; there is no ``[DONE]``."""

    def __init__(self, projection: ResponsesProjection) -> None:
        super().__init__(projection, error=_nested, done=None, event_names=True)
        self.responses = projection

    def closing(self) -> bytes:
        return self.frames(self.projection.close())

    def refused(self, exc: StreamingError) -> bytes:
        return self.frames(self.responses.error_event(exc.code, exc.message, _nested(exc)))


class _Body(ResponsesRequest):
    """OpenAI's body, and ``multitask``."""

    multitask: Multitask = "reject"


def _generation_id(response_id: str) -> str:
    if not response_id.startswith("resp_") or len(response_id) <= 5:
        raise NotFoundError(f"no response {response_id!r}", suggestion="response ids look like resp_gen_…")
    return response_id.removeprefix("resp_")


def _projection(generation: Generation, meta: dict[str, Any], after: int = -1) -> ResponsesProjection:
    return ResponsesProjection(
        response_id=f"resp_{generation.id}",
        model=generation.generator,
        created_at=int(generation.created_at),
        after=after,
        max_output_tokens=meta.get("max_output_tokens"),
        describe=_nested,
        fields=meta,
    )


def _headers(generation: Generation) -> dict[str, str]:
    return {"x-generation-id": generation.id}


async def _calls_of(runtime: Runtime, file_id: str | None) -> dict[str, str]:
    """The tool calls made in a conversation: call id -> tool name."""
    if file_id is None:
        return {}
    calls = {}
    for block in (await runtime.get_file(file_id)).blocks:
        if block.mime_type == MimeTypes.FUNCTION_CALL_INVOCATION:
            call = FunctionCallInvocation.from_block(block)
            if call.call_id:
                calls[call.call_id] = call.tool_name
    return calls


async def create(request: Request) -> Response | EventStreamResponse:
    body: _Body = await read_json(request, _Body)
    runtime = runtime_of(request)
    owner = new_owner(request)
    runtime.generators.get(body.model)  # an unknown model is refused before anything else
    file_id = None
    if body.previous_response_id is not None:
        try:
            previous = await authorize_generation(request, runtime, _generation_id(body.previous_response_id))
        except NotFoundError:
            raise InvalidRequestError(
                f"no response {body.previous_response_id!r}", code="not_found",
                details={"param": "previous_response_id"},
            ) from None
        file_id = previous.file_id
    runtime_request = generate_request(body, file_id=file_id, known_calls=await _calls_of(runtime, file_id))
    runtime_request.multitask = body.multitask
    subscribed = body.stream or not body.background
    generation = await runtime.start(runtime_request, subscribed=subscribed, owner=owner)
    projection = _projection(generation, request_meta(body))
    if body.stream:
        batches = runtime.subscribe(generation.id, 0)
        headers = [(b"x-generation-id", generation.id.encode())]
        return sse_response(request, batches, frames=ResponsesFrames(projection), headers=headers)
    if body.background:
        return JSONResponse(projection.response(), headers=_headers(generation))
    watch = ClientWatch()
    try:
        await watch.watch(request.receive, follow(runtime.subscribe(generation.id, 0), projection, watch))
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED)
    failure = projection.failure
    if failure is not None and failure.outcome == "failed":
        status, error = failure_error(failure)
        return JSONResponse(error, status_code=status, headers=_headers(generation))
    return JSONResponse(projection.response(), headers=_headers(generation))


async def _found(request: Request) -> tuple[Runtime, Generation, dict[str, Any]]:
    runtime = runtime_of(request)
    generation = await authorize_generation(request, runtime, _generation_id(request.path_params["id"]))
    meta: dict[str, Any] = {}
    if generation.file_id is not None:
        meta = stored_meta((await runtime.get_file(generation.file_id)).blocks, generation.id)
    return runtime, generation, meta


async def _snapshot(runtime: Runtime, generation: Generation, meta: dict[str, Any]) -> dict[str, Any]:
    """The response object of ``generation`` as its log stands now."""
    projection = _projection(generation, meta)
    projection.open()
    await follow(runtime.subscribe(generation.id, 0), projection, until=generation.last_seq)
    return projection.response()


def _starting_after(request: Request) -> int:
    raw = request.query_params.get("starting_after")
    if raw is None or raw == "":
        return -1
    try:
        return max(int(raw), -1)
    except ValueError:
        raise InvalidRequestError(
            f"starting_after must be an integer, got {raw!r}", details={"param": "starting_after"}
        ) from None


async def retrieve(request: Request) -> Response | EventStreamResponse:
    runtime, generation, meta = await _found(request)
    if request.query_params.get("stream", "").lower() in ("true", "1"):
        after = _starting_after(request)
        await runtime.check_subscribable(generation.id)  # 404 / 429 before the stream starts
        projection = _projection(generation, meta, after)
        headers = [(b"x-generation-id", generation.id.encode())]
        return sse_response(
            request, runtime.subscribe(generation.id, 0), frames=ResponsesFrames(projection), headers=headers
        )
    return JSONResponse(await _snapshot(runtime, generation, meta), headers=_headers(generation))


async def cancel(request: Request) -> Response:
    runtime, generation, meta = await _found(request)
    generation = await runtime.cancel(generation.id, "cancelled by client (POST /v1/responses/{id}/cancel)")
    return JSONResponse(await _snapshot(runtime, generation, meta), headers=_headers(generation))


ROUTES = [
    Route("/v1/responses", StreamingEndpoint(guarded(create, openai_error)), methods=["POST"]),
    Route("/v1/responses/{id}", StreamingEndpoint(guarded(retrieve, openai_error)), methods=["GET"]),
    Route("/v1/responses/{id}/cancel", guarded(cancel, openai_error), methods=["POST"]),
]
