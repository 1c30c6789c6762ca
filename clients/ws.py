"""The Python client over WebSocket: the same generation objects as the SSE client::

    async with WebSocketClient("http://127.0.0.1:8000") as client:
        gen = await client.generate("echo", prompt="hello")
        async for block in gen.blocks():
            async for text in block:
                print(text, end="")

One socket carries every generation of the client (frames are routed by
``generation_id``); commands (``generate``, ``cancel``, ``tool.result``, ``subscribe``) are
matched to their ``ack`` or ``error`` by ``ref``. When the socket drops the client
reconnects by itself and re-subscribes each generation after the last ``seq`` it saw, so
every event reaches the caller exactly once. Reads that have no WebSocket frame
(``get_generation``, ``get_block``, ``get_file``) go over HTTP as in
:class:`~streaming.client.client.StreamingClient`, which this class extends;
:class:`~streaming.client.client.GenerationStream` and ``BlockStream`` are shared as they are.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import httpx
from streaming.client.client import StreamingClient
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from streaming.wire import Event, StreamingError, ToolCallConflictError, error_from_dict

__all__ = ["WebSocketClient", "ws_url_of"]

logger = logging.getLogger("streaming.clients.ws")


def ws_url_of(base_url: str) -> str:
    """``http://host:port[/prefix]`` -> ``ws://host:port[/prefix]/ws`` (https -> wss)."""
    url = base_url.rstrip("/")
    if url.startswith("https://"):
        url = "wss://" + url[len("https://") :]
    elif url.startswith("http://"):
        url = "ws://" + url[len("http://") :]
    return url if url.endswith("/ws") else url + "/ws"


class ConnectionLostError(ConnectionError):
    """The socket dropped before the server answered a command that is unsafe to resend."""


@dataclass
class _Sub:
    """Events of one generation after ``start``, routed from the socket to its readers.

    Seqs are gapless, so the event with seq ``n`` is ``events[n - start - 1]``: each
    reader keeps its own cursor, and a later reader can start anywhere after ``start``.
    """

    generation_id: str
    start: int
    events: list[Event] = field(default_factory=list)
    error: BaseException | None = None
    changed: anyio.Event = field(default_factory=anyio.Event)
    readers: int = 0
    #: a subscription restarted from an earlier cursor replaces this one
    replaced_by: _Sub | None = None

    @property
    def last_seq(self) -> int:
        return self.start + len(self.events)

    def wake(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


@dataclass
class _Pending:
    done: anyio.Event = field(default_factory=anyio.Event)
    frame: dict[str, Any] | None = None
    lost: bool = False


class WebSocketClient(StreamingClient):
    """Talks to a streaming server over one WebSocket (plus HTTP for plain reads).

    Use it as an async context manager: it owns the socket's reader task.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000``.
        ws_url: the socket (default: ``base_url`` with a ``ws`` scheme, path ``/ws``).
        max_retries: reconnect attempts in a row before the client gives up.
        backoff_s: first retry delay; doubled each failed attempt (capped at 5 s).
        ping_interval_s: protocol-level keepalive pings (``None``: off).
        max_frame_bytes: biggest frame accepted from the server.
    """

    def __init__(
        self,
        base_url: str,
        *,
        ws_url: str | None = None,
        max_retries: int = 8,
        backoff_s: float = 0.1,
        timeout_s: float = 30.0,
        ping_interval_s: float | None = 20.0,
        max_frame_bytes: int = 1 << 24,
        headers: dict[str, str] | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(
            base_url,
            max_retries=max_retries,
            backoff_s=backoff_s,
            timeout_s=timeout_s,
            headers=headers,
            http=http,
        )
        self.ws_url = ws_url or ws_url_of(self.base_url)
        self.timeout_s = timeout_s
        self.ping_interval_s = ping_interval_s
        self.max_frame_bytes = max_frame_bytes
        self._headers = headers
        self._ws: ClientConnection | None = None
        self._ws_gone = anyio.Event()  # set when the current socket is gone
        self._connected = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self._subs: dict[str, _Sub] = {}
        self._pending: dict[str, _Pending] = {}
        self._refs = itertools.count(1)
        self._closing = False
        self._broken: BaseException | None = None
        #: times the socket was re-established after a drop
        self.reconnects = 0

    # -- lifecycle --

    async def __aenter__(self) -> WebSocketClient:
        """Connect. Raises OSError / websockets errors if the server is unreachable."""
        try:
            ws = await self._connect()
        except BaseException:
            await super().aclose()
            raise
        self._ws = ws
        self._ws_gone = anyio.Event()
        self._connected.set()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._run, ws)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closing = True
        if self._tg is not None:
            tg, self._tg = self._tg, None
            if self._ws is not None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                    await self._ws.close()
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
        await super().aclose()

    @property
    def connection(self) -> ClientConnection | None:
        """The current socket (``None`` while reconnecting)."""
        return self._ws

    async def _connect(self) -> ClientConnection:
        return await connect(
            self.ws_url,
            max_size=self.max_frame_bytes,
            ping_interval=self.ping_interval_s,
            additional_headers=self._headers,
            open_timeout=self.timeout_s,
        )

    async def _run(self, first_ws: ClientConnection) -> None:
        first = True
        failures = 0
        while not self._closing:
            try:
                ws = first_ws if first else await self._connect()
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
                failures += 1
                if failures > self.max_retries:
                    self._give_up(exc)
                    return
                await anyio.sleep(min(5.0, self.backoff_s * (2 ** (failures - 1))))
                continue
            failures = 0
            if not first:
                self._ws = ws
                self._ws_gone = anyio.Event()
            gone = self._ws_gone
            if not first:
                self.reconnects += 1
            try:
                for sub in list(self._subs.values()):
                    # Resume each generation right after what its reader has seen.
                    await ws.send(
                        json.dumps(
                            {
                                "type": "subscribe",
                                "generation_id": sub.generation_id,
                                "after": sub.last_seq,
                            }
                        )
                    )
                self._connected.set()
                first = False
                async for message in ws:
                    self._on_frame(message)
            except ConnectionClosed:
                pass
            finally:
                self._ws = None
                gone.set()
                self._connected = anyio.Event()
                for pending in self._pending.values():
                    pending.lost = True
                    pending.done.set()
            if not self._closing:
                await anyio.sleep(self.backoff_s)

    def _give_up(self, exc: BaseException) -> None:
        self._broken = exc
        for sub in self._subs.values():
            sub.error = exc
            sub.wake()
        for pending in self._pending.values():
            pending.lost = True
            pending.done.set()
        self._connected.set()  # wake waiters so they see _broken

    # -- frames in --

    def _on_frame(self, message: str | bytes) -> None:
        try:
            frame = json.loads(message)
        except ValueError:
            logger.warning("ignoring a frame that is not JSON")
            return
        if not isinstance(frame, dict):
            return
        kind = frame.get("type")
        ref = frame.get("ref")
        if "seq" in frame and "generation_id" in frame:
            sub = self._subs.get(frame["generation_id"])
            if sub is None:
                return
            event = Event.from_dict(frame)
            if event.seq != sub.last_seq + 1:
                return  # replayed after a resubscribe: never twice
            sub.events.append(event)
            sub.wake()
            return
        if kind == "ack" and frame.get("op") == "generate":
            # Route the generation's events (which follow this ack) before anyone asks.
            self._new_sub(frame["generation_id"], 0)
        pending = self._pending.get(str(ref)) if ref is not None else None
        if pending is not None:
            pending.frame = frame
            pending.done.set()
            return
        if kind == "error":
            gen_id = frame.get("generation_id")
            sub = self._subs.get(gen_id) if isinstance(gen_id, str) else None
            if sub is not None:
                sub.error = error_from_dict(frame.get("error") or {})
                sub.wake()
            else:
                logger.warning("server error frame: %s", frame.get("error"))

    def _new_sub(self, generation_id: str, after: int) -> _Sub:
        old = self._subs.get(generation_id)
        if old is not None and old.start <= after:
            return old
        sub = _Sub(generation_id, after)
        self._subs[generation_id] = sub
        if old is not None:
            old.replaced_by = sub
            old.wake()
        return sub

    # -- commands --

    async def _send_frame(self, frame: dict[str, Any]) -> None:
        while True:
            if self._broken is not None:
                raise ConnectionLostError(f"the WebSocket to {self.ws_url} is gone: {self._broken}")
            ws, gone = self._ws, self._ws_gone
            if ws is None:
                with anyio.fail_after(self.timeout_s):
                    await self._connected.wait()
                continue
            try:
                await ws.send(json.dumps(frame))
                return
            except ConnectionClosed:
                # The reader notices the drop and reconnects; send again after that.
                with anyio.fail_after(self.timeout_s):
                    await gone.wait()

    async def _request(self, frame: dict[str, Any], *, resend: bool = True) -> dict[str, Any]:
        """Send a command; its ``ack`` (or ``pong``).

        Raises:
            StreamingError: the server answered with an ``error`` frame.
            ConnectionLostError: the socket dropped and the command is unsafe to resend.
        """
        ref = f"c{next(self._refs)}"
        frame = {**frame, "ref": ref}
        attempts = 0
        try:
            while True:
                attempts += 1
                pending = _Pending()
                self._pending[ref] = pending
                await self._send_frame(frame)
                with anyio.fail_after(self.timeout_s):
                    await pending.done.wait()
                if not pending.lost:
                    break
                if not resend or self._broken is not None:
                    raise ConnectionLostError(
                        f"the WebSocket dropped before the server answered {frame['type']!r}"
                    )
        finally:
            self._pending.pop(ref, None)
        answer = pending.frame or {}
        if answer.get("type") == "error":
            error = error_from_dict(answer.get("error") or {})
            if attempts > 1 and isinstance(error, ToolCallConflictError):
                return {}  # our first attempt got through before the drop
            raise error
        return answer

    async def ping(self) -> None:
        """A ``ping`` frame, answered by ``pong``."""
        await self._request({"type": "ping"})

    async def _start(self, body: dict[str, Any]) -> dict[str, Any]:
        """A ``generate`` frame; its ack (``generation``, ``blocks``), sent before any event.

        Raises:
            StreamingError: the server refused it.
            ConnectionLostError: the socket dropped before the server answered (not resent:
                the generation may have started).
        """
        return await self._request({"type": "generate", **body}, resend=False)

    async def cancel(self, generation_id: str) -> dict[str, Any]:
        ack = await self._request({"type": "cancel", "generation_id": generation_id})
        generation: dict[str, Any] = ack.get("generation") or await self.get_generation(
            generation_id
        )
        return generation

    async def submit_tool_result(
        self,
        generation_id: str,
        call_id: str,
        result: list[str] | str | None = None,
        *,
        error: str | None = None,
    ) -> None:
        frame: dict[str, Any] = {
            "type": "tool.result",
            "generation_id": generation_id,
            "call_id": call_id,
        }
        if error is not None:
            frame["error"] = error
        else:
            frame["result"] = result if result is not None else []
        await self._request(frame)

    async def iter_events(self, generation_id: str, after: int = 0) -> AsyncIterator[Event]:
        """Every event after ``after`` exactly once, across reconnects.

        Raises:
            StreamingError: the server refused the subscription (unknown id, …).
            ConnectionLostError: the server stayed unreachable past ``max_retries``.
        """
        sub = self._subs.get(generation_id)
        if sub is None or sub.start > after:
            sub = self._new_sub(generation_id, after)
            try:
                await self._request(
                    {"type": "subscribe", "generation_id": generation_id, "after": after}
                )
            except BaseException:
                if self._subs.get(generation_id) is sub:
                    del self._subs[generation_id]
                raise
        sub.readers += 1
        finished = False
        try:
            while True:
                while sub.replaced_by is not None:
                    sub.readers -= 1
                    sub = sub.replaced_by
                    sub.readers += 1
                index = after - sub.start
                if index < len(sub.events):
                    event = sub.events[index]
                    after = event.seq
                    yield event
                    if event.terminal:
                        finished = True
                        return
                    continue
                if sub.error is not None:
                    if isinstance(sub.error, StreamingError):
                        raise sub.error
                    raise ConnectionLostError(str(sub.error)) from sub.error
                await sub.changed.wait()
        finally:
            sub.readers -= 1
            if sub.readers == 0 and self._subs.get(generation_id) is sub:
                del self._subs[generation_id]
                if not finished and self._ws is not None and not self._closing:
                    with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                        try:
                            await self._ws.send(
                                json.dumps({"type": "unsubscribe", "generation_id": generation_id})
                            )
                        except ConnectionClosed:
                            pass
