"""The lean load client: the same few lines of parsing for every server.

Each stream is one HTTP/1.1 request on its own connection (``Connection: close``, so the
end of the response is the end of the stream) driven by an :class:`asyncio.Protocol`. The
client never decodes SSE or JSON: it counts chunks by scanning the bytes for the chunk text
(every server streams the same chunk, ``"tok "``, and nothing else in any response contains
it), and SSE events by scanning for ``data:``. A coalesced event of ours that carries five
chunks therefore counts as five chunks and one event, and the floor's and LangServe's one
event per chunk count the same way. A scan keeps the last few bytes of the previous read so
a pattern split across two reads is still counted once.

Times are ``time.perf_counter()`` seconds taken in ``data_received``: the moment the bytes
reached the client, which is what a user would see.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, cast

__all__ = ["CHUNK", "Request", "StreamResult", "open_idle", "run_streams"]

#: the chunk every server streams (our echo generator with prompt "tok " yields exactly this)
CHUNK = b"tok "
_EVENT = b"data:"


@dataclass(frozen=True)
class Request:
    """One raw HTTP request to send (``body`` JSON-encoded when given)."""

    host: str
    port: int
    method: str
    path: str
    body: Any = None

    def encode(self) -> bytes:
        payload = b"" if self.body is None else json.dumps(self.body).encode()
        head = (
            f"{self.method} {self.path} HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\n"
            "Accept: text/event-stream\r\n"
            "Connection: close\r\n"
        )
        if self.body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        return head.encode() + b"\r\n" + payload


@dataclass
class StreamResult:
    """What one stream delivered, with its timings (perf_counter seconds)."""

    status: int = 0
    chunks: int = 0
    events: int = 0
    sent_at: float = 0.0
    headers_at: float = 0.0
    first_chunk_at: float = 0.0
    last_chunk_at: float = 0.0
    ended_at: float = 0.0
    gaps: list[float] = field(default_factory=list)
    error: str | None = None
    #: the raw response body (chunked framing included), kept only when asked for
    body: bytearray | None = None

    @property
    def ttfc(self) -> float | None:
        """Seconds from the request to the first chunk, if one came."""
        return self.first_chunk_at - self.sent_at if self.chunks else None


class _StreamProtocol(asyncio.Protocol):
    """One request, one response, counted as the bytes arrive."""

    def __init__(self, request: bytes, *, record_gaps: bool, keep_body: bool = False) -> None:
        self.request = request
        self.record_gaps = record_gaps
        self.result = StreamResult(body=bytearray() if keep_body else None)
        self.done: asyncio.Future[StreamResult] = asyncio.get_running_loop().create_future()
        self.headers_seen: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._head = b""
        self._in_body = False
        self._tail_chunk = b""
        self._tail_event = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike
        self.transport = cast(asyncio.Transport, transport)
        self.result.sent_at = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if not self._in_body:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self._head[:end], self._head[end + 4 :]
            self._head = b""
            self._in_body = True
            try:
                self.result.status = int(head.split(b" ", 2)[1])
            except (IndexError, ValueError):
                self.result.error = f"bad status line {head[:40]!r}"
            self.result.headers_at = now
            if not self.headers_seen.done():
                self.headers_seen.set_result(None)
            if not data:
                return
        if self.result.body is not None:
            self.result.body += data
        buf = self._tail_chunk + data
        n = buf.count(CHUNK)
        self._tail_chunk = buf[-3:]
        ebuf = self._tail_event + data
        self.result.events += ebuf.count(_EVENT)
        self._tail_event = ebuf[-4:]
        if n:
            r = self.result
            if r.chunks == 0:
                r.first_chunk_at = now
            elif self.record_gaps:
                r.gaps.append(now - r.last_chunk_at)
            r.chunks += n
            r.last_chunk_at = now

    def connection_lost(self, exc: Exception | None) -> None:
        self.result.ended_at = time.perf_counter()
        if exc is not None and self.result.error is None:
            self.result.error = f"{type(exc).__name__}: {exc}"
        if not self.headers_seen.done():
            self.headers_seen.set_result(None)
        if not self.done.done():
            self.done.set_result(self.result)


async def _open(request: Request, *, record_gaps: bool, keep_body: bool = False) -> _StreamProtocol:
    loop = asyncio.get_running_loop()
    raw = request.encode()
    _, proto = await loop.create_connection(
        lambda: _StreamProtocol(raw, record_gaps=record_gaps, keep_body=keep_body),
        request.host,
        request.port,
    )
    return proto


async def run_streams(
    requests: list[Request],
    *,
    record_gaps: bool = True,
    keep_body: bool = False,
    connect_concurrency: int = 256,
    timeout_s: float = 300.0,
) -> list[StreamResult]:
    """Open every request at once (at most ``connect_concurrency`` connects in flight) and
    wait until every response has ended. A stream that fails carries its ``error``."""
    sem = asyncio.Semaphore(connect_concurrency)

    async def one(req: Request) -> StreamResult:
        async with sem:
            try:
                proto = await _open(req, record_gaps=record_gaps, keep_body=keep_body)
            except OSError as exc:
                return StreamResult(error=f"connect: {exc}")
        return await proto.done

    try:
        return await asyncio.wait_for(asyncio.gather(*(one(r) for r in requests)), timeout_s)
    except TimeoutError:
        return [StreamResult(error=f"timed out after {timeout_s:g}s") for _ in requests]


async def open_idle(
    requests: list[Request], *, connect_concurrency: int = 256, timeout_s: float = 120.0
) -> tuple[list[asyncio.Transport], list[StreamResult]]:
    """Open every request and wait for its response headers; leave the streams open.

    Returns the transports of the streams that opened (close them when done) and every
    stream's result so far (``error`` says why one did not open)."""
    sem = asyncio.Semaphore(connect_concurrency)
    opened: list[asyncio.Transport] = []

    async def one(req: Request) -> StreamResult:
        async with sem:
            try:
                proto = await _open(req, record_gaps=False)
            except OSError as exc:
                return StreamResult(error=f"connect: {exc}")
            await proto.headers_seen
        if proto.transport is not None and not proto.done.done():
            opened.append(proto.transport)
        elif proto.result.error is None:
            proto.result.error = "closed before it was idle"
        return proto.result

    deadline = time.perf_counter() + timeout_s
    tasks = [asyncio.ensure_future(one(r)) for r in requests]
    await asyncio.wait(tasks, timeout=max(0.0, deadline - time.perf_counter()))
    results: list[StreamResult] = []
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is None:
            results.append(task.result())
        else:
            task.cancel()
            results.append(StreamResult(error="did not open in time"))
    return opened, results
