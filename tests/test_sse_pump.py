"""The one SSE pump (server/sse.py) as an ASGI response, driven through its ASGI channels:
frames, heartbeats, a client that leaves, a client that stops reading, a refusal after the
headers, and a dialect's frames. No socket: ``receive`` and ``send`` are the ASGI calls a
server makes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from streaming.server.frames import DialectFrames
from streaming.server.openai.errors import stream_error
from streaming.server.sse import EventStreamResponse
from streaming.server.watch import ClientGone, ClientWatch

from streaming.dialects.openai_chat import ChatChunkProjection
from streaming.errors import LimitExceededError
from streaming.events import Event

pytestmark = pytest.mark.anyio

GEN = "gen_1"
WAIT_S = 10  # a bound on waits for something that should happen at once (never a timing check)


class Client:
    """The ASGI side of one response: what it was sent, and a disconnect to trigger."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.gone = asyncio.Event()
        self.wrote = asyncio.Event()
        self.stuck = False  # stop accepting writes

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if self.stuck and message.get("more_body"):
            await asyncio.Event().wait()  # never returns
        self.messages.append(message)
        self.wrote.set()

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body")

    @property
    def ended(self) -> bool:
        last = self.messages[-1]
        return last["type"] == "http.response.body" and not last.get("more_body", False)

    async def wait_for(self, data: bytes) -> None:
        async with asyncio.timeout(WAIT_S):
            while data not in self.body:
                self.wrote.clear()
                await self.wrote.wait()


def events(*texts: str, end: bool = True) -> list[Event]:
    out = [Event("generation.started", 1, GEN, {"blocks": [{"id": "b1", "mime_type": "text/plain",
                                                           "stream_state": "started"}]})]
    offset = 0
    for text in texts:
        out.append(Event.delta(len(out) + 1, GEN, "b1", offset, text))
        offset += len(text)
    if end:
        out.append(Event("block.completed", len(out) + 1, GEN, {"block_id": "b1", "length": offset}))
        out.append(Event("generation.completed", len(out) + 1, GEN, {"usage": []}))
    return out


class Batches:
    """A subscription: the given batches, then (optionally) a wait for more that never ends."""

    def __init__(self, *batches: list[Event], then_wait: bool = False, swallow_cancel: bool = False) -> None:
        self.batches = list(batches)
        self.then_wait = then_wait
        self.swallow_cancel = swallow_cancel
        self.waiting = asyncio.Event()
        self.release = asyncio.Event()
        self.closed = False
        self.cancels = 0

    async def __call__(self) -> AsyncGenerator[list[Event], None]:
        try:
            for batch in self.batches:
                yield batch
            while self.then_wait:
                self.waiting.set()
                try:
                    await self.release.wait()
                except asyncio.CancelledError:
                    self.cancels += 1
                    if not self.swallow_cancel:
                        raise
                    # Code that swallows a cancellation, as a careless store client might;
                    # it goes on to hand out one more batch.
                    self.release.set()
                self.release.clear()
                yield [Event("block.delta", 99, GEN, {"block_id": "b1", "offset": 0, "text": "late"})]
        finally:
            self.closed = True


async def serve(response: Any, client: Client) -> asyncio.Task[None]:
    return asyncio.create_task(response({"type": "http"}, client.receive, client.send))


def others() -> set[asyncio.Task[Any]]:
    """Tasks still pending besides the test's own (and the test runner's)."""
    return {
        t for t in asyncio.all_tasks()
        if t is not asyncio.current_task() and "runner" not in repr(t.get_coro()).lower()
    }


async def test_native_frames_then_the_end() -> None:
    client = Client()
    evs = events("Hello ", "world")
    stream = Batches(evs[:2], evs[2:])
    response = EventStreamResponse(stream(), status=201, headers=[(b"location", b"/generations/gen_1")])
    async with asyncio.timeout(WAIT_S):
        await response({"type": "http"}, client.receive, client.send)
    start = client.messages[0]
    assert start["status"] == 201
    assert (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
    assert (b"location", b"/generations/gen_1") in start["headers"]
    assert client.body == b"".join(e.to_sse() for e in evs)
    assert client.ended and stream.closed
    assert not others()  # the listener has ended too


async def test_a_quiet_stream_gets_heartbeats() -> None:
    client = Client()
    stream = Batches(events(end=False), then_wait=True)
    task = await serve(EventStreamResponse(stream(), heartbeat_s=0.01), client)
    await client.wait_for(b": ping\n\n")
    stream.batches.clear()
    client.gone.set()
    async with asyncio.timeout(WAIT_S):
        await task
    assert stream.closed and not others()


async def test_a_client_that_leaves_stops_the_pump_with_one_cancel() -> None:
    client = Client()
    stream = Batches(events("first ", end=False), then_wait=True)
    task = await serve(EventStreamResponse(stream()), client)
    async with asyncio.timeout(WAIT_S):
        await stream.waiting.wait()
    client.gone.set()
    async with asyncio.timeout(WAIT_S):
        await task  # the request's task ends normally: a disconnect is not an error
    assert stream.cancels == 1 and stream.closed
    assert b"late" not in client.body
    assert not task.cancelled() and not others()


async def test_a_swallowed_cancel_stops_the_pump_at_its_next_batch() -> None:
    client = Client()
    stream = Batches(events("first ", end=False), then_wait=True, swallow_cancel=True)
    task = await serve(EventStreamResponse(stream()), client)
    async with asyncio.timeout(WAIT_S):
        await stream.waiting.wait()
    client.gone.set()
    async with asyncio.timeout(WAIT_S):
        await task
    # Cancelled once; the batch it handed out anyway was not sent, and it was closed.
    assert stream.cancels == 1 and stream.closed
    assert b"late" not in client.body
    assert not others()


async def test_a_client_that_stops_reading_is_dropped() -> None:
    client = Client()
    client.stuck = True
    stream = Batches(events("never read"), then_wait=True)
    response = EventStreamResponse(stream(), send_timeout_s=0.05)
    async with asyncio.timeout(WAIT_S):
        await response({"type": "http"}, client.receive, client.send)
    assert response.timed_out and stream.closed
    assert not others()


async def test_a_client_that_stops_reading_between_heartbeats_is_dropped_and_a_reader_is_not() -> None:
    # The listener keeps the send timeout: it wakes for heartbeats meanwhile, finds the
    # pump's write still waiting, and drops the client once the timeout has passed.
    client = Client()
    client.stuck = True
    stream = Batches(events("never read"), then_wait=True)
    response = EventStreamResponse(stream(), heartbeat_s=0.01, send_timeout_s=0.1)
    async with asyncio.timeout(WAIT_S):
        await response({"type": "http"}, client.receive, client.send)
    assert response.timed_out and stream.closed
    # A client that reads gets its heartbeats and is never dropped.
    reader = Client()
    quiet = Batches(events("a"), then_wait=True)
    response = EventStreamResponse(quiet(), heartbeat_s=0.01, send_timeout_s=0.1)
    task = asyncio.get_running_loop().create_task(response({"type": "http"}, reader.receive, reader.send))
    await reader.wait_for(b": ping\n\n: ping\n\n")
    reader.gone.set()
    async with asyncio.timeout(WAIT_S):
        await task
    assert not response.timed_out and quiet.closed
    assert not others()


async def test_a_refusal_after_the_headers_is_an_error_frame() -> None:
    async def refused() -> AsyncGenerator[list[Event], None]:
        raise LimitExceededError("too many subscribers")
        yield []

    client = Client()
    async with asyncio.timeout(WAIT_S):
        await EventStreamResponse(refused())({"type": "http"}, client.receive, client.send)
    name, data = client.body.decode().strip().split("\n")
    assert name == "event: error"
    assert json.loads(data.removeprefix("data: "))["error"]["code"] == "limit_exceeded"
    assert client.ended


async def test_a_dialect_streams_through_the_same_pump() -> None:
    client = Client()
    projection = ChatChunkProjection(completion_id="chatcmpl-gen_1", created=1, model="m")
    stream = Batches(events("Hi", " there"))
    frames = DialectFrames(projection, error=stream_error)
    async with asyncio.timeout(WAIT_S):
        await EventStreamResponse(stream(), frames=frames)({"type": "http"}, client.receive, client.send)
    lines = [line for line in client.body.decode().split("\n\n") if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["", "Hi", " there", None]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_a_failed_generation_ends_a_dialect_stream_with_its_error() -> None:
    client = Client()
    projection = ChatChunkProjection(completion_id="chatcmpl-gen_1", created=1, model="m")
    evs = events("partial", end=False)
    evs.append(Event("generation.failed", len(evs) + 1, GEN,
                     {"error": {"code": "invalid_request", "message": "nothing to answer"}}))
    frames = DialectFrames(projection, error=stream_error)
    async with asyncio.timeout(WAIT_S):
        await EventStreamResponse(Batches(evs)(), frames=frames)({"type": "http"}, client.receive, client.send)
    last = client.body.decode().strip().split("\n\n")[-1]
    error = json.loads(last.removeprefix("data: "))["error"]
    assert (error["code"], error["type"], error["message"]) == ("invalid_request", "invalid_request_error",
                                                                "nothing to answer")
    assert b"[DONE]" not in client.body


class Steps:
    """A dialect whose stream events are named by their ``type`` (as OpenAI Responses' are)."""

    def __init__(self) -> None:
        self.failure = None

    def open(self) -> list[dict[str, Any]]:
        return [{"type": "response.created"}]

    def feed(self, event: Event) -> list[dict[str, Any]]:
        return [{"type": "response.output_text.delta", "delta": event.data["text"]}] if event.type == "block.delta" else []

    def close(self) -> list[dict[str, Any]]:
        return [{"type": "response.completed"}]


def test_named_dialect_frames() -> None:
    frames = DialectFrames(Steps(), error=stream_error, done=None, event_names=True)
    body = frames.opening() + frames.batch(events("Hi")) + frames.closing()
    assert body.decode().split("\n\n")[:-1] == [
        'event: response.created\ndata: {"type":"response.created"}',
        'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"Hi"}',
        'event: response.completed\ndata: {"type":"response.completed"}',
    ]


async def test_a_watch_returns_the_work_or_says_the_client_left() -> None:
    client = Client()

    async def work() -> str:
        return "done"

    assert await ClientWatch().watch(client.receive, work()) == "done"
    assert not others()

    started = asyncio.Event()
    finished: list[str] = []

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            finished.append("cleaned up")

    watch = ClientWatch()

    async def leave() -> None:
        await started.wait()
        client.gone.set()

    leaver = asyncio.create_task(leave())
    with pytest.raises(ClientGone):
        async with asyncio.timeout(WAIT_S):
            await watch.watch(client.receive, forever())
    await leaver
    assert watch.left and finished == ["cleaned up"]
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0  # the listener's cancel was taken back
    assert not others()


async def test_a_watch_lets_the_server_cancel_the_request() -> None:
    client = Client()
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(ClientWatch().watch(client.receive, forever()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert not others()


def test_a_long_body_goes_out_in_pieces_that_end_where_frames_end() -> None:
    from streaming.server.sse import pieces

    body = b"".join(b"id: %d\ndata: %s\n\n" % (i, b"x" * (i % 50)) for i in range(5000))
    out = list(pieces(body, 1000))
    assert b"".join(out) == body and len(out) > 100
    assert all(p.endswith(b"\n\n") and len(p) <= 1000 for p in out)
    # A frame longer than a piece goes whole; a body that does not end a frame loses nothing.
    long = b"data: " + b"y" * 5000 + b"\n\n"
    assert list(pieces(long + b"data: z\n\n", 1000)) == [long, b"data: z\n\n"]
    odd = b"data: a\n\n" + b"no end " * 300
    assert b"".join(pieces(odd, 100)) == odd
