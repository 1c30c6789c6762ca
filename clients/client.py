"""The async Python client::

    async with StreamingClient("http://127.0.0.1:8000") as client:
        gen = await client.generate(generator="echo", prompt="hello")
        async for block in gen.blocks():
            async for text in block:
                print(text, end="")

Every event reaches the caller exactly once: when the connection drops mid-stream the
client reconnects by itself with ``Last-Event-ID`` (bounded retries with backoff) and the
server replays what was missed.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx

from streaming import wire
from streaming.wire import BlockState, Event, EventDecoder, GenerationFold

__all__ = [
    "BlockStream",
    "GenerationStream",
    "StreamingClient",
    "error_from_dict",
    "error_from_response",
]

ToolHandler = Callable[[dict[str, Any]], Any]

error_from_dict = wire.error_from_dict


def error_from_response(response: httpx.Response) -> wire.StreamingError:
    """The server's JSON error as the matching exception of :mod:`streaming.wire`."""
    try:
        body = response.json()["error"]
        if not isinstance(body, dict) or "code" not in body or "message" not in body:
            raise TypeError
    except (ValueError, KeyError, TypeError):
        body = {"code": "http_error", "message": f"HTTP {response.status_code}"}
    return wire.error_from_dict(body, response.status_code)


class StreamingClient:
    """Talks to a streaming server over HTTP and SSE.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000``.
        max_retries: reconnect attempts in a row before a stream gives up.
        backoff_s: first retry delay; doubled each failed attempt (capped at 5 s).
        headers: sent with every request (an ``Authorization`` header, say).
    """

    def __init__(
        self,
        base_url: str,
        *,
        max_retries: int = 8,
        backoff_s: float = 0.1,
        timeout_s: float = 30.0,
        headers: dict[str, str] | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, read=None),
        )

    async def __aenter__(self) -> StreamingClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self.http.aclose()

    async def _json(self, method: str, url: str, **kwargs: Any) -> Any:
        response = await self.http.request(method, url, **kwargs)
        if response.status_code >= 400:
            raise error_from_response(response)
        return response.json()

    async def generate(
        self,
        generator: str,
        *,
        prompt: str | None = None,
        messages: list[dict[str, str]] | None = None,
        blocks: list[dict[str, Any]] | None = None,
        options: dict[str, Any] | None = None,
        capabilities: list[dict[str, Any]] | None = None,
        tools: list[dict[str, Any] | str] | None = None,
        file_id: str | None = None,
        on_disconnect: str | None = None,
        tool_handlers: dict[str, ToolHandler] | None = None,
        multitask: str | None = None,
    ) -> GenerationStream:
        """Start a generation and return its stream (not yet connected).

        ``multitask`` says what to do when ``file_id``'s conversation already has a
        generation running: ``reject`` (the server's default: a ConflictError),
        ``interrupt``, ``rollback`` or ``enqueue``.

        Raises:
            StreamingError: the server refused it (see :mod:`streaming.wire`).
        """
        body: dict[str, Any] = {"generator": generator}
        for key, value in (
            ("prompt", prompt),
            ("messages", messages),
            ("blocks", blocks),
            ("options", options),
            ("capabilities", capabilities),
            ("tools", tools),
            ("file_id", file_id),
            ("on_disconnect", on_disconnect),
            ("multitask", multitask),
        ):
            if value is not None:
                body[key] = value
        data = await self._start(body)
        stream = GenerationStream(self, data["generation"], data.get("blocks", []))
        for name, handler in (tool_handlers or {}).items():
            stream.on_tool_call(name, handler)
        return stream

    async def _start(self, body: dict[str, Any]) -> dict[str, Any]:
        """Send the body of ``POST /generations``; the answer (``generation``, ``blocks``).

        The transport hook of :meth:`generate` (the WebSocket client sends a frame instead).
        """
        data: dict[str, Any] = await self._json("POST", "/generations", json=body)
        return data

    async def attach(self, generation_id: str, after: int = 0) -> GenerationStream:
        """A stream of an existing generation, from event ``after`` on."""
        data = await self.get_generation(generation_id)
        return GenerationStream(self, data["generation"], data.get("blocks", []), after=after)

    async def get_generation(self, generation_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", f"/generations/{generation_id}")
        return result

    async def get_block(self, block_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", f"/blocks/{block_id}")
        return result

    async def get_file(self, file_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", f"/files/{file_id}")
        return result

    async def cancel(self, generation_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("POST", f"/generations/{generation_id}/cancel")
        return result["generation"]  # type: ignore[no-any-return]

    async def submit_tool_result(
        self,
        generation_id: str,
        call_id: str,
        result: list[str] | str | None = None,
        *,
        error: str | None = None,
    ) -> None:
        body: dict[str, Any] = {"call_id": call_id}
        if error is not None:
            body["error"] = error
        else:
            body["result"] = result if result is not None else []
        await self._json("POST", f"/generations/{generation_id}/tool-results", json=body)

    async def iter_events(self, generation_id: str, after: int = 0) -> AsyncIterator[Event]:
        """Every event after ``after`` exactly once, reconnecting as needed.

        Raises:
            StreamingError: the server refused the stream (unknown id, …).
            httpx.TransportError: the server stayed unreachable past ``max_retries``.
        """
        last = after
        failures = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last:
                headers["Last-Event-ID"] = str(last)
            progressed = False
            try:
                async with self.http.stream(
                    "GET", f"/generations/{generation_id}/events", params={"after": last}, headers=headers
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise error_from_response(response)
                    decoder = EventDecoder()
                    async for chunk in response.aiter_bytes():
                        for event in decoder.decode(chunk):
                            if event.seq <= last:
                                continue  # already seen: never twice
                            last = event.seq
                            progressed = True
                            yield event
                            if event.terminal:
                                return
                    decoder.flush()  # raises the error frame of a stream refused late
            except (httpx.TransportError, httpx.RemoteProtocolError):
                pass
            # The stream ended without its terminal event: reconnect and resume, unless
            # the generation is over and we have everything (a cursor past its end).
            if not progressed:
                try:
                    gen = (await self.get_generation(generation_id))["generation"]
                except (httpx.TransportError, wire.StreamingError):
                    gen = {}
                if gen.get("state") in ("succeeded", "failed", "cancelled") and last >= int(
                    gen.get("last_seq") or 0
                ):
                    return
            failures = 0 if progressed else failures + 1
            if failures > self.max_retries:
                raise httpx.ReadError(
                    f"gave up on generation {generation_id} after {self.max_retries} reconnects"
                )
            await anyio.sleep(min(5.0, self.backoff_s * (2 ** max(0, failures - 1))))


class BlockStream:
    """One block of a generation: iterate it for its text as it streams.

    A view of the block's :class:`~streaming.wire.BlockState` in the generation's fold.
    """

    def __init__(self, owner: GenerationStream, state: BlockState) -> None:
        self._owner = owner
        self._state = state
        self.id: str = state.id
        self._read = 0  # parts of the text handed out by iteration

    @property
    def block(self) -> dict[str, Any]:
        return self._state.block

    @property
    def mime_type(self) -> str | None:
        return self._state.mime_type

    @property
    def state(self) -> str:
        """``started``, ``complete`` or ``aborted``."""
        return self._state.stream_state

    @property
    def text(self) -> str:
        """The text received so far."""
        return self._state.text

    @property
    def done(self) -> bool:
        return self._state.done

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[str]:
        while True:
            parts = self._state.parts
            if self._read < len(parts):
                chunk = "".join(parts[self._read :])
                self._read = len(parts)
                yield chunk
                continue
            if self.done or self._owner.finished:
                return
            if not await self._owner._pump():
                return


class GenerationStream:
    """A generation as the client sees it: events, blocks, text, cancel, tool handlers.

    Its state is a :class:`~streaming.wire.GenerationFold` of the events read so far
    (``fold``), started from the blocks the server described.
    """

    def __init__(
        self,
        client: StreamingClient,
        generation: dict[str, Any],
        blocks: list[dict[str, Any]],
        *,
        after: int = 0,
    ):
        self.client = client
        self.id: str = generation["id"]
        self.fold = GenerationFold(self.id, generation=generation, blocks=blocks, after=after)
        self.events: list[Event] = []
        self._streams: dict[str, BlockStream] = {}
        self._source: AsyncIterator[Event] | None = None
        self._handlers: dict[str, ToolHandler] = {}

    @property
    def generation(self) -> dict[str, Any]:
        return self.fold.generation

    @property
    def file_id(self) -> str | None:
        value = self.fold.generation.get("file_id")
        return str(value) if value is not None else None

    @property
    def state(self) -> str:
        """``running`` (or ``waiting``) until the terminal event: then ``succeeded``,
        ``failed`` or ``cancelled``."""
        return self.fold.state

    @property
    def error(self) -> dict[str, Any] | None:
        """``{code, message, suggestion}`` of a failed generation."""
        return self.fold.error

    @property
    def last_seq(self) -> int:
        return self.fold.last_seq

    # -- tool handlers --

    def on_tool_call(self, name: str, handler: ToolHandler) -> None:
        """Answer client-side calls of tool ``name`` with ``handler(args)`` (sync or async).

        The handler's return value (a string, a list of strings, or anything JSON) is the
        result; an exception it raises is sent as the tool's error.
        """
        self._handlers[name] = handler

    async def _answer(self, call: wire.ToolCall) -> None:
        handler = self._handlers.get(call.tool_name)
        if handler is None or not call.client_side:
            return
        try:
            value = handler(call.args or {})
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:
            try:
                await self.client.submit_tool_result(self.id, call.call_id, error=f"{type(exc).__name__}: {exc}")
            except wire.ConflictError:
                pass
            return
        if isinstance(value, str):
            result: list[str] = [value]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            result = value
        else:
            result = [json.dumps(value)]
        try:
            await self.client.submit_tool_result(self.id, call.call_id, result)
        except wire.ConflictError:
            pass  # answered elsewhere (another tab, a cancel): the stream says what happened

    # -- events --

    @property
    def finished(self) -> bool:
        return self.fold.finished

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iter_events()

    async def _iter_events(self) -> AsyncIterator[Event]:
        index = 0
        while True:
            while index < len(self.events):
                yield self.events[index]
                index += 1
            if self.finished:
                return
            if not await self._pump():
                while index < len(self.events):
                    yield self.events[index]
                    index += 1
                return

    async def _pump(self) -> bool:
        """Read one more event from the server; False at the end."""
        if self.finished:
            return False
        if self._source is None:
            self._source = self.client.iter_events(self.id, self.last_seq)
        try:
            event = await self._source.__anext__()
        except StopAsyncIteration:
            return False
        # Usually just this event; more when it fills a gap (or crosses a declared loss)
        # before events held back.
        for applied in self.fold.apply(event):
            assert isinstance(applied, wire.Event)
            self.events.append(applied)
            if applied.type == wire.EventType.TOOL_CALL:
                await self._answer(self.fold.tool_calls[applied.data["call_id"]])
        if event.terminal:
            # Close the HTTP stream now, not when the generator is collected.
            await self._source.aclose()  # type: ignore[attr-defined]
        return True

    def _stream(self, block_id: str) -> BlockStream:
        stream = self._streams.get(block_id)
        if stream is None:
            stream = self._streams[block_id] = BlockStream(self, self.fold.blocks[block_id])
        return stream

    async def blocks(self) -> AsyncIterator[BlockStream]:
        """Each block (preallocated or created mid-stream) in creation order."""
        index = 0
        order = self.fold.order
        while True:
            while index < len(order):
                yield self._stream(order[index])
                index += 1
            if self.finished or not await self._pump():
                while index < len(order):
                    yield self._stream(order[index])
                    index += 1
                return

    async def wait(self) -> GenerationStream:
        """Read to the end (answering tool calls on the way)."""
        while await self._pump():
            pass
        return self

    async def text(self) -> str:
        """The text of every ``text/*`` block, in order, once the generation has ended.

        Raises:
            GenerationFailedError: the generation failed (its code is the error's code).
            GenerationCancelledError: it was cancelled.
        """
        await self.wait()
        if self.state == "failed":
            err = self.error or {}
            raise wire.GenerationFailedError(
                err.get("message", "generation failed"),
                code=err.get("code", "generation_failed"),
                suggestion=err.get("suggestion"),
            )
        if self.state == "cancelled":
            raise wire.GenerationCancelledError(f"generation {self.id} was cancelled")
        return self.fold.text()

    def block_streams(self) -> list[BlockStream]:
        return [self._stream(bid) for bid in self.fold.order]

    async def cancel(self) -> dict[str, Any]:
        return await self.client.cancel(self.id)

    async def submit_tool_result(self, call_id: str, result: Any = None, *, error: str | None = None) -> None:
        await self.client.submit_tool_result(self.id, call_id, result, error=error)

    async def aclose(self) -> None:
        if self._source is not None:
            await self._source.aclose()  # type: ignore[attr-defined]
