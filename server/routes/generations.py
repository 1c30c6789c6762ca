"""``/generations``: start, read, stream (resumable), cancel, answer tool calls."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from streaming.server.auth import authorize_generation, new_owner
from streaming.server.context import auth_of, read_json, runtime_of
from streaming.server.errors import JSONResponse
from streaming.server.sse import EventStreamResponse, StreamingEndpoint, sse_response

from streaming.errors import InvalidRequestError
from streaming.requests import GenerateRequest, ToolResultRequest

__all__ = ["MAX_SEQ", "ROUTES"]

#: a cursor above this is past the end of any log (and fits every store's integers)
MAX_SEQ = 2**63 - 1


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def wants_stream(request: Request) -> bool:
    """Whether ``Accept`` prefers the event stream to JSON, by q-value: the stream only
    when ``text/event-stream`` is named with a q above 0 and at least that of JSON (named,
    ``application/*`` or ``*/*``); ``q=0`` means not acceptable."""
    accept = request.headers.get("accept", "")
    if "text/event-stream" not in accept.lower():
        return False
    stream = 0.0
    json_q: dict[str, float] = {}
    for item in accept.split(","):
        media, *params = item.split(";")
        media = media.strip().lower()
        q = _quality(params)
        if media == "text/event-stream":
            stream = max(stream, q)
        elif media in ("application/json", "application/*", "*/*"):
            json_q[media] = max(json_q.get(media, 0.0), q)
    # The most specific range that names JSON decides its q.
    best_json = next((json_q[m] for m in ("application/json", "application/*", "*/*") if m in json_q), 0.0)
    return stream > 0.0 and stream >= best_json


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
            if len(raw) > 40:
                raise ValueError
            value = int(raw)
        except ValueError:
            raise InvalidRequestError(f"{name} must be an integer seq, got {raw[:40]!r}") from None
        if value < 0:
            raise InvalidRequestError(f"{name} must not be negative")
        cursor = max(cursor, value)
    # Past any log's end is past any log's end: a store need not hold the number.
    return min(cursor, MAX_SEQ)


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
