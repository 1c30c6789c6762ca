"""``/generations``: start, read, stream (resumable), cancel, answer tool calls."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from streaming.server.auth import authorize_generation, new_owner
from streaming.server.context import auth_of, read_json, runtime_of
from streaming.server.sse import EventStreamResponse, StreamingEndpoint, sse_response

from streaming.errors import InvalidRequestError
from streaming.requests import GenerateRequest, ToolResultRequest

__all__ = ["ROUTES"]


def wants_stream(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


def resume_cursor(request: Request) -> int:
    """``?after=`` or ``Last-Event-ID``, whichever is later. Raises InvalidRequestError."""
    cursor = 0
    for raw, name in (
        (request.query_params.get("after"), "after"),
        (request.headers.get("last-event-id"), "Last-Event-ID"),
    ):
        if raw is None or raw == "":
            continue
        try:
            value = int(raw)
        except ValueError:
            raise InvalidRequestError(f"{name} must be an integer seq, got {raw!r}") from None
        if value < 0:
            raise InvalidRequestError(f"{name} must not be negative")
        cursor = max(cursor, value)
    return cursor


async def create(request: Request) -> Response | EventStreamResponse:
    owner = new_owner(request)
    body: GenerateRequest = await read_json(request, GenerateRequest)
    runtime = runtime_of(request)
    stream = wants_stream(request)
    generation = await runtime.start(body, subscribed=stream, owner=owner)
    location = f"/generations/{generation.id}"
    auth = auth_of(request)
    token = auth.read_token(generation.id) if auth.enabled else None
    if stream:
        headers = [(b"location", location.encode())]
        if token:
            headers.append((b"x-read-token", token.encode()))
        return sse_response(request, runtime.subscribe(generation.id, 0), status=201, headers=headers)
    blocks = await runtime.get_generation_blocks(generation)
    out = {
        "generation": generation.public(),
        "blocks": [b.model_dump(mode="json") for b in blocks],
        "events_url": f"{location}/events",
    }
    if token:
        # Hand this to a browser: it reaches this one generation and nothing else.
        out["read_token"] = token
    return JSONResponse(out, status_code=201, headers={"Location": location})


async def read(request: Request) -> Response:
    runtime = runtime_of(request)
    generation = await authorize_generation(request, runtime, request.path_params["id"])
    blocks = await runtime.get_generation_blocks(generation)
    return JSONResponse(
        {
            "generation": generation.public(),
            "blocks": [b.model_dump(mode="json") for b in blocks],
            "events_url": f"/generations/{generation.id}/events",
        }
    )


async def events(request: Request) -> EventStreamResponse:
    runtime = runtime_of(request)
    gen_id = request.path_params["id"]
    after = resume_cursor(request)
    await authorize_generation(request, runtime, gen_id)
    await runtime.check_subscribable(gen_id)  # 404 / 429 before the stream starts
    return sse_response(request, runtime.subscribe(gen_id, after))


async def cancel(request: Request) -> Response:
    runtime = runtime_of(request)
    await authorize_generation(request, runtime, request.path_params["id"])
    generation = await runtime.cancel(request.path_params["id"])
    return JSONResponse({"generation": generation.public()})


async def tool_results(request: Request) -> Response:
    runtime = runtime_of(request)
    await authorize_generation(request, runtime, request.path_params["id"])
    body: ToolResultRequest = await read_json(request, ToolResultRequest)
    await runtime.submit_tool_result(request.path_params["id"], body)
    return JSONResponse({"accepted": True, "call_id": body.call_id}, status_code=202)


ROUTES = [
    Route("/generations", StreamingEndpoint(create), methods=["POST"]),
    Route("/generations/{id}", read, methods=["GET"]),
    Route("/generations/{id}/events", StreamingEndpoint(events), methods=["GET"]),
    Route("/generations/{id}/cancel", cancel, methods=["POST"]),
    Route("/generations/{id}/tool-results", tool_results, methods=["POST"]),
]
