"""Write-through: once a subscriber has caught up, the SSE pump's events are framed and
written where the generation appends them (server/sse.py, streaming/runtime/subscriptions.py).

Driven through the ASGI channels of a real :class:`EventStreamResponse` on an in-process
runtime: which task wrote each event, a write that has to wait (handed back to the request's
task and finished there), a burst (still coalesced), a send that raises, a client that
leaves. Every stream is decoded and checked whole: gapless seqs, exact text, one terminal
event.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from streaming.server.sse import EventStreamResponse

from streaming.events import Event
from streaming.requests import GenerateRequest
from streaming.wire import EventDecoder, GenerationFold

pytestmark = pytest.mark.anyio

WAIT_S = 20  # a bound on the whole stream (never a timing check)


class Client:
    """The server side of one response's ASGI channels, recording which task wrote what.

    ``hold_every``: every n-th body write waits (as a server's send does when the client's
    buffer is full) until the loop has run a few turns. ``fail_at``: the n-th body write
    raises OSError (the connection broke).
    """

    def __init__(self, *, hold_every: int = 0, fail_at: int = 0, hold_if: bytes = b"") -> None:
        self.hold_every = hold_every
        self.hold_if = hold_if
        self.fail_at = fail_at
        self.bodies: list[bytes] = []
        self.writers: list[asyncio.Task[Any] | None] = []
        self.held = 0
        self.gone = asyncio.Event()
        self.ended = False

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] != "http.response.body":
            return
        if not message.get("more_body", False):
            self.ended = True
            return
        n = len(self.bodies) + 1
        if self.fail_at and n == self.fail_at:
            raise OSError("connection reset")
        if (self.hold_every and n % self.hold_every == 0) or (self.hold_if and self.hold_if in message["body"]):
            self.held += 1
            for _ in range(3):
                await asyncio.sleep(0)
        self.bodies.append(message["body"])
        self.writers.append(asyncio.current_task())

    def events(self) -> list[Event]:
        decoder = EventDecoder()
        out = [ev for body in self.bodies for ev in decoder.decode(body)]
        return out + decoder.flush()


async def stream(runtime: Any, request: GenerateRequest, client: Client) -> tuple[asyncio.Task[Any], Any]:
    gen = await runtime.start(request, subscribed=True)
    response = EventStreamResponse(runtime.subscribe(gen.id, 0))
    task = asyncio.create_task(response({"type": "http"}, client.receive, client.send))
    return task, gen


def check_whole(events: list[Event], text: str) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    fold = GenerationFold(strict=True).apply_all(events)
    fold.check_complete()
    assert events[-1].type == "generation.completed"
    assert fold.text() == text


def counting(n: int, delay_ms: float) -> GenerateRequest:
    return GenerateRequest(generator="counting", prompt="x", options={"key": f"wt{n}-{delay_ms}", "limit": n, "delay_ms": delay_ms})


def counted(n: int) -> str:
    return "".join(f"{i} " for i in range(n))


async def test_paced_events_are_written_by_the_generation_not_the_request(make_runtime) -> None:
    runtime = await make_runtime(store=None)
    client = Client()
    task, gen = await stream(runtime, counting(20, 5), client)
    async with asyncio.timeout(WAIT_S):
        await task
    events = client.events()
    check_whole(events, counted(20))
    # Paced chunks are written where they are appended: in the generation's own task.
    deltas = [w for body, w in zip(client.bodies, client.writers, strict=True) if b"block.delta" in body]
    assert len(deltas) >= 15
    assert sum(w is not task for w in deltas) >= len(deltas) - 2
    assert runtime.stats().subscribers == 0
    assert client.ended


async def test_a_write_that_has_to_wait_is_finished_by_the_request_in_order(make_runtime) -> None:
    runtime = await make_runtime(store=None)
    client = Client(hold_every=3)
    task, gen = await stream(runtime, counting(30, 2), client)
    async with asyncio.timeout(WAIT_S):
        await task
    check_whole(client.events(), counted(30))
    assert client.held >= 5
    # A held write started in the generation's task; the request's task finished it, and
    # wrote through again afterwards.
    writers = set(map(id, client.writers))
    assert id(task) in writers and len(writers) >= 2
    assert client.ended and runtime.stats().subscribers == 0


async def test_a_burst_is_coalesced_as_before(make_runtime) -> None:
    runtime = await make_runtime(store=None)
    client = Client()
    task, gen = await stream(runtime, GenerateRequest(generator="echo", prompt="tok ", options={"repeat": 5000}), client)
    async with asyncio.timeout(WAIT_S):
        await task
    events = client.events()
    check_whole(events, "tok " * 5000)
    deltas = [e for e in events if e.type == "block.delta"]
    assert len(deltas) < 1000  # 5,000 chunks written without a pause: far fewer events


async def test_a_send_that_raises_mid_stream_ends_the_response_and_frees_the_subscription(make_runtime) -> None:
    runtime = await make_runtime(store=None)
    client = Client(fail_at=6)
    request = counting(40, 3).model_copy(update={"on_disconnect": "continue"})
    task, gen = await stream(runtime, request, client)
    async with asyncio.timeout(WAIT_S):
        await task  # no exception escapes the response
    assert len(client.bodies) == 5
    assert runtime.stats().subscribers == 0
    # The generation goes on; a new subscriber replays it whole.
    replay = [e async for e in runtime.events(gen.id)]
    check_whole(replay, counted(40))


async def test_a_client_that_leaves_during_write_through_is_let_go(make_runtime) -> None:
    runtime = await make_runtime(store=None, disconnect_grace_s=0.05)
    client = Client()
    task, gen = await stream(runtime, counting(10**6, 5), client)
    async with asyncio.timeout(WAIT_S):
        while len(client.bodies) < 5:
            await asyncio.sleep(0.01)
        client.gone.set()
        await task
        written = len(client.bodies)
        while (await runtime.get_generation(gen.id)).state.value == "running":
            await asyncio.sleep(0.01)
    assert (await runtime.get_generation(gen.id)).state.value == "cancelled"
    assert runtime.stats().subscribers == 0
    assert len(client.bodies) == written  # nothing written after the client left


async def test_a_terminal_event_whose_write_has_to_wait_still_reaches_the_client(make_runtime) -> None:
    runtime = await make_runtime(store=None)
    client = Client(hold_if=b"generation.completed")
    task, gen = await stream(runtime, counting(10, 2), client)
    async with asyncio.timeout(WAIT_S):
        await task
    assert client.held == 1
    check_whole(client.events(), counted(10))
    assert client.ended and runtime.stats().subscribers == 0
