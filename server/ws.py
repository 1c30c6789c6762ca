"""``WS /ws``: the JSON frame protocol (docs/protocol.md, "WebSocket frames").

Client to server (every frame may carry a ``ref``, echoed in the answer to that frame)::

    {"type": "generate", ...the body of POST /generations...}
    {"type": "subscribe", "generation_id", "after"}
    {"type": "unsubscribe", "generation_id"}
    {"type": "cancel", "generation_id"}
    {"type": "tool.result", "generation_id", "call_id", "result" | "error"}
    {"type": "ping"}

Server to client: every event of the generations the connection watches, as its JSON
(``Event.to_json()``, one event per frame), plus

- ``{"type": "ack", "op", "ref"?, "generation_id", ...}`` when a frame was accepted (the
  ``generate`` ack carries ``generation`` and ``blocks`` like the 201 of POST /generations
  and is sent before the generation's first event; the ``cancel`` ack carries
  ``generation``);
- ``{"type": "error", "error": {code, message, suggestion}, "ref"?, "generation_id"?}`` for a
  bad frame (not JSON, unknown type, missing field, wrong type, oversized) or a refused
  command; the connection stays open;
- ``{"type": "pong", "ref"?}`` for a ``ping`` frame (uvicorn also pings at the protocol level).

One task group per connection: the frame reader, and one task per subscription. A
connection that closes ends every subscription, so the runtime sees those subscribers
leave and applies each generation's ``on_disconnect`` policy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NoReturn

import anyio
import anyio.abc
from pydantic import ValidationError
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from streaming.server.auth import AuthConfig, authorize_generation, new_owner
from streaming.server.direct import direct_frames
from streaming.server.errors import validation_error
from streaming.server.settings import ServerSettings
from streaming.server.sse import Resume

from streaming.errors import (
    InvalidRequestError,
    MalformedRequestError,
    PayloadTooLargeError,
    StreamingError,
)
from streaming.events import Event, encode_json
from streaming.requests import GenerateRequest, ToolResultRequest
from streaming.runtime import Runtime
from streaming.textcheck import MAX_DEPTH, loads

__all__ = ["ROUTES", "WebSocketSession", "ws_endpoint"]

logger = logging.getLogger("streaming.server.ws")

#: frame types a client may send
CLIENT_FRAMES = ("generate", "subscribe", "unsubscribe", "cancel", "tool.result", "ping")


#: what a send raises once the peer is gone (Starlette: RuntimeError once the socket is closed)
_GONE = (WebSocketDisconnect, RuntimeError, OSError)


class _Closed(Exception):
    """The peer went away while we were sending."""


@dataclass
class _Subscription:
    generation_id: str
    scope: anyio.CancelScope
    #: a write-through that has to wait (the pump finishes it), and the events after it
    held: Resume | None = None
    rest: list[Event] = field(default_factory=list)
    #: what a write-through raised (the pump raises it)
    broke: BaseException | None = None


class WebSocketSession:
    """One WebSocket connection: reads frames, runs subscriptions, writes events.

    Args:
        websocket: the accepted Starlette WebSocket.
        runtime: the runtime to drive (through its public API only).
        max_frame_bytes: a frame over this size is answered with ``payload_too_large``.
        max_json_depth: a frame nested deeper is answered with ``too_deep`` (frames go
            through the same door as bodies: :func:`streaming.textcheck.loads`).
        send_timeout_s: a peer that takes longer than this to accept one frame is dropped
            (close code 1013, try again later); its generations go on under their
            ``on_disconnect`` policy, and it can resubscribe after the last seq it saw.
    """

    def __init__(
        self,
        websocket: WebSocket,
        runtime: Runtime,
        *,
        max_frame_bytes: int = 1 << 20,
        send_timeout_s: float = 30.0,
        max_json_depth: int = MAX_DEPTH,
    ) -> None:
        self.websocket = websocket
        self.runtime = runtime
        self.max_frame_bytes = max_frame_bytes
        self.max_json_depth = max_json_depth
        self.send_timeout_s = send_timeout_s
        #: the peer stopped reading and was dropped
        self.timed_out = False
        #: and its connection reset (where the server allows it: ``DirectFrames``)
        self.aborted = False
        self._send_lock = asyncio.Lock()
        #: loop time the write in progress began (None: no write waits); the watchdog drops
        #: a peer whose write has waited ``send_timeout_s``, so a send arms no timer of its own
        self._sending_since: float | None = None
        self._subs: dict[str, _Subscription] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._watching = False  # the watchdog runs (from the first write that may wait)
        self._closed = False
        #: frames written straight to the server's transport where it allows (streaming serve)
        self._direct = direct_frames(websocket.scope)

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                await self._read_frames()
                tg.cancel_scope.cancel()
        except* _Closed:
            pass
        except* WebSocketDisconnect:
            pass
        finally:
            self._closed = True
            if self.timed_out and self._direct is not None:
                # A peer that stopped reading: reset the connection rather than leave the
                # server a close that waits for it to read what is buffered.
                self._direct.abort()
                self.aborted = True
            self._direct = None  # (it holds uvicorn's protocol: not past the session)

    # -- sending --

    async def _send_text(self, text: str) -> None:
        if self._closed:
            raise _Closed
        direct = self._direct
        if direct is not None and not self._send_lock.locked() and direct.write_text(text.encode()):
            return  # (written at once: nothing for the watchdog to time)
        await self._write(partial(self.websocket.send_text, text))

    async def _write(self, sending: Callable[[], Awaitable[Any]]) -> None:
        """Await ``sending()`` under the socket's lock, timed by the watchdog."""
        try:
            async with self._send_lock:
                self._sending_since = asyncio.get_running_loop().time()
                self._watch()
                try:
                    await sending()
                finally:
                    self._sending_since = None
        except _GONE as exc:
            self._gone(exc)

    def _gone(self, exc: BaseException) -> NoReturn:
        """The peer is gone (a send failed): the whole session ends."""
        self._end()
        raise _Closed from exc

    def _watch(self) -> None:
        """Start the watchdog, once a write may have to wait (most sessions never have one
        that does: every frame goes straight to the transport)."""
        if not self._watching and self._tg is not None and not self._closed:
            self._watching = True
            self._tg.start_soon(self._watch_sends)

    async def _watch_sends(self) -> None:
        """A peer that stopped reading blocks only its own session, and only so long: drop
        it once a write has waited ``send_timeout_s`` (ending the session cancels it)."""
        loop = asyncio.get_running_loop()
        while not self._closed:
            since = self._sending_since
            now = loop.time()
            if since is not None and now - since >= self.send_timeout_s:
                self.timed_out = True
                self._end()
                return
            wait = self.send_timeout_s / 2 if since is None else since + self.send_timeout_s - now
            await asyncio.sleep(max(wait, 0.01))

    def _end(self) -> None:
        self._closed = True
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    async def _send(self, frame: dict[str, Any]) -> None:
        await self._send_text(encode_json(frame))

    async def _error(
        self, exc: StreamingError, *, ref: Any = None, generation_id: str | None = None
    ) -> None:
        frame: dict[str, Any] = {"type": "error", "error": exc.to_dict()}
        if ref is not None:
            frame["ref"] = ref
        if generation_id is not None:
            frame["generation_id"] = generation_id
        await self._send(frame)

    async def _ack(self, op: str, ref: Any, generation_id: str, **extra: Any) -> None:
        frame: dict[str, Any] = {"type": "ack", "op": op, "generation_id": generation_id}
        if ref is not None:
            frame["ref"] = ref
        frame.update(extra)
        await self._send(frame)

    # -- reading --

    async def _read_frames(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message["type"] != "websocket.receive":
                continue
            text = message.get("text")
            raw = message.get("bytes")
            ref: Any = None
            frame: dict[str, Any] | None = None
            try:
                frame = self._parse(text, raw)
                ref = frame.get("ref")
                await self._dispatch(frame)
            except StreamingError as exc:
                gen_id = frame.get("generation_id") if frame is not None else None
                await self._error(
                    exc, ref=ref, generation_id=gen_id if isinstance(gen_id, str) else None
                )
            except ValidationError as exc:
                await self._error(validation_error(exc), ref=ref)
            except (_Closed, WebSocketDisconnect):
                raise
            except Exception:
                logger.exception("unexpected error handling a WebSocket frame")
                await self._error(
                    StreamingError(
                        "the server hit an unexpected error",
                        suggestion="retry; if it persists, report it",
                    ),
                    ref=ref,
                )

    def _parse(self, text: str | None, raw: bytes | None) -> dict[str, Any]:
        """A frame as a JSON object. Raises PayloadTooLargeError, MalformedRequestError."""
        if raw is not None:
            size = len(raw)
        else:
            size = len(text or "")
            if size <= self.max_frame_bytes < size * 4:  # only count bytes when it matters
                size = len((text or "").encode("utf-8", "surrogatepass"))
        if size > self.max_frame_bytes:
            raise PayloadTooLargeError(
                f"the frame is {size} bytes, over the limit of {self.max_frame_bytes}",
                suggestion="send smaller frames",
            )
        payload = text if text is not None else (raw or b"")
        data = loads(payload, max_depth=self.max_json_depth, what="the frame")
        if not isinstance(data, dict):
            raise MalformedRequestError(
                "a frame must be a JSON object", suggestion='send {"type": ..., ...}'
            )
        return data

    async def _dispatch(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind is None:
            raise InvalidRequestError(
                "the frame has no 'type'", suggestion="one of: " + ", ".join(CLIENT_FRAMES)
            )
        if not isinstance(kind, str):
            raise InvalidRequestError("'type' must be a string")
        ref = frame.get("ref")
        if ref is not None and not isinstance(ref, (str, int)):
            raise InvalidRequestError("'ref' must be a string or an integer")
        if kind == "generate":
            await self._generate(frame, ref)
        elif kind == "subscribe":
            gen_id = _str_field(frame, "generation_id")
            after = frame.get("after", 0)
            if after is None:
                after = 0
            if isinstance(after, bool) or not isinstance(after, int) or after < 0:
                raise InvalidRequestError("'after' must be a non-negative integer seq")
            after = min(after, 2**63 - 1)  # past any log's end; fits every store
            await authorize_generation(self.websocket, self.runtime, gen_id)  # 404 first
            await self._ack("subscribe", ref, gen_id, after=after)
            self._subscribe(gen_id, after)
        elif kind == "unsubscribe":
            gen_id = _str_field(frame, "generation_id")
            sub = self._subs.pop(gen_id, None)
            if sub is not None:
                sub.scope.cancel()
            await self._ack("unsubscribe", ref, gen_id)
        elif kind == "cancel":
            gen_id = _str_field(frame, "generation_id")
            reason = frame.get("reason", "cancelled by client")
            if not isinstance(reason, str):
                raise InvalidRequestError("'reason' must be a string")
            await authorize_generation(self.websocket, self.runtime, gen_id)
            # Waiting for the cancel to take effect must not stop us reading frames.
            assert self._tg is not None
            self._tg.start_soon(self._cancel, gen_id, reason, ref)
        elif kind == "tool.result":
            gen_id = _str_field(frame, "generation_id")
            body = {k: v for k, v in frame.items() if k not in ("type", "ref", "generation_id")}
            answer = ToolResultRequest.model_validate(body)
            await authorize_generation(self.websocket, self.runtime, gen_id)
            await self.runtime.submit_tool_result(gen_id, answer)
            await self._ack("tool.result", ref, gen_id, call_id=answer.call_id)
        elif kind == "ping":
            pong: dict[str, Any] = {"type": "pong"}
            if ref is not None:
                pong["ref"] = ref
            await self._send(pong)
        else:
            raise InvalidRequestError(
                f"unknown frame type {kind!r}", suggestion="one of: " + ", ".join(CLIENT_FRAMES)
            )

    async def _generate(self, frame: dict[str, Any], ref: Any) -> None:
        owner = new_owner(self.websocket)
        body = {k: v for k, v in frame.items() if k not in ("type", "ref")}
        request = GenerateRequest.model_validate(body)
        generation = await self.runtime.start(request, subscribed=True, owner=owner)
        try:
            blocks = await self.runtime.get_generation_blocks(generation)
            extra: dict[str, Any] = {}
            auth: AuthConfig | None = getattr(self.websocket.app.state, "auth", None)
            if auth is not None and auth.enabled:
                extra["read_token"] = auth.read_token(generation.id)
            # The ack goes out before the first event, so a client can route by ref.
            await self._ack(
                "generate",
                ref,
                generation.id,
                generation=generation.public(),
                blocks=[b.model_dump(mode="json") for b in blocks],
                events_url=f"/generations/{generation.id}/events",
                **extra,
            )
        finally:
            # Subscribed even if the ack failed: then the session ends, the subscription
            # with it, and the runtime's on_disconnect policy takes over.
            self._subscribe(generation.id, 0)

    async def _cancel(self, generation_id: str, reason: str, ref: Any) -> None:
        try:
            generation = await self.runtime.cancel(generation_id, reason)
        except StreamingError as exc:
            await self._error(exc, ref=ref, generation_id=generation_id)
            return
        await self._ack("cancel", ref, generation_id, generation=generation.public())

    # -- subscriptions --

    def _subscribe(self, generation_id: str, after: int) -> None:
        old = self._subs.pop(generation_id, None)
        if old is not None:
            old.scope.cancel()
        if self._tg is None or self._closed:
            return
        sub = _Subscription(generation_id, anyio.CancelScope())
        self._subs[generation_id] = sub
        self._tg.start_soon(self._pump, sub, after)

    async def _pump(self, sub: _Subscription, after: int) -> None:
        with sub.scope:
            try:
                # (A subscription takes a sink in, whatever the facade's type says.)
                subscription: AsyncGenerator[list[Event], Any] = self.runtime.subscribe(sub.generation_id, after)
                async with aclosing(subscription) as batches:
                    # Once caught up, the subscription writes each event through
                    # (``_write_through``, where it is appended) while the socket takes it
                    # at once; the pump sends the first batch, and whatever had to wait.
                    step = batches.asend if hasattr(batches, "asend") else None
                    sink = partial(self._write_through, sub) if step is not None else None
                    batch: list[Event] | None = await anext(batches, None)
                    while batch is not None:
                        await self._settle(sub)
                        for event in batch:
                            await self._send_text(event.to_json())
                        try:
                            batch = await (step(sink) if step is not None else anext(batches))
                        except StopAsyncIteration:
                            batch = None
                    await self._settle(sub)  # (the terminal event's write may have had to wait)
            except StreamingError as exc:
                await self._error(exc, generation_id=sub.generation_id)
            finally:
                if sub.held is not None:  # (leaving with a write unfinished)
                    sub.held.coro.close()
                    sub.held = None
                if self._subs.get(sub.generation_id) is sub:
                    del self._subs[sub.generation_id]

    def _write_through(self, sub: _Subscription, events: list[Event]) -> bool:
        """The subscription's sink (called where the events are appended): send ``events``
        now, each frame straight to the transport where the server allows it
        (:class:`~streaming.server.direct.DirectFrames`), else in one step of ``send_text``.
        False hands over to the pump, which
        sends what is left: another write was in progress (nothing was sent), one has to
        wait (the pump finishes it, then the events after it), or one failed (the pump
        raises it, as a failed send)."""
        if self._closed:
            return False  # (the session is ending: nothing more goes out)
        if self._send_lock.locked() or sub.held is not None or sub.broke is not None or sub.rest:
            # Another write is in progress, or one of ours waits: these go after it (the
            # pump sends them).
            sub.rest += events
            return False
        send_text = self.websocket.send_text
        direct = self._direct
        for n, event in enumerate(events):
            if direct is not None and direct.write_text(event.to_json().encode()):
                continue  # written, without the three coroutines of an ASGI send
            try:
                writing = send_text(event.to_json()).__await__()
                waiting = writing.send(None)
            except StopIteration:
                continue  # written
            except BaseException as exc:  # (the pump raises it in its own task)
                sub.broke = exc
                return False
            sub.held = Resume(writing, waiting)
            sub.rest = events[n + 1 :]
            if self._sending_since is None:
                # (the pump finishes this write under _write, which starts the watchdog)
                self._sending_since = asyncio.get_running_loop().time()
            return False
        return True

    async def _settle(self, sub: _Subscription) -> None:
        """What the subscription's last write-through left: a write to finish and the
        events after it to send, or an error to raise (as a failed send would)."""
        if sub.broke is not None:
            broke, sub.broke = sub.broke, None
            if isinstance(broke, _GONE):
                self._gone(broke)
            raise broke
        held = sub.held
        if held is not None:
            await self._write(lambda: held)  # (if this raises, the pump's exit closes it)
            sub.held = None
        rest, sub.rest = sub.rest, []
        for event in rest:
            await self._send_text(event.to_json())


def _str_field(frame: dict[str, Any], name: str) -> str:
    value = frame.get(name)
    if value is None:
        raise InvalidRequestError(f"the frame has no {name!r}", suggestion=f"add {name!r}")
    if not isinstance(value, str) or not value:
        raise InvalidRequestError(f"{name!r} must be a non-empty string")
    return value


async def ws_endpoint(websocket: WebSocket) -> None:
    app = websocket.app
    runtime: Runtime = app.state.runtime
    settings: ServerSettings = app.state.settings
    limit = settings.ws_max_frame_bytes or settings.max_body_bytes
    await websocket.accept()
    session = WebSocketSession(
        websocket,
        runtime,
        max_frame_bytes=int(limit),
        send_timeout_s=settings.send_timeout_s,
        max_json_depth=settings.max_json_depth,
    )
    await session.run()
    if session.aborted:
        return
    if (
        websocket.application_state.name == "CONNECTED"
        and websocket.client_state.name == "CONNECTED"
    ):
        with anyio.move_on_after(1):
            try:
                await websocket.close(1013 if session.timed_out else 1000)
            except (RuntimeError, OSError):
                pass


ROUTES = [WebSocketRoute("/ws", ws_endpoint)]
