"""``streaming chat [URL] [--generator NAME]``: a terminal chat over the WebSocket client.

Each message continues one conversation (a file on the server); the answer's tokens are
printed as they arrive, tool calls and their results as their own lines. Ctrl-C stops the
current answer (the generation is cancelled) and the chat goes on; ``/quit`` or Ctrl-D
leaves. ``/help`` lists the other commands.
"""

from __future__ import annotations

import json
import signal
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import anyio
import anyio.abc
from streaming.client.client import GenerationStream, ToolHandler
from streaming.client.ws import WebSocketClient
from websockets.exceptions import WebSocketException

from streaming.wire import Event, MimeTypes, StreamingError

__all__ = ["CLIENT_TOOLS", "ChatSession", "run_chat"]

PROMPT = "you> "
ANSWER = "bot> "

HELP = """commands:
  /new               start a new conversation
  /generator NAME    talk to another generator
  /options JSON      options passed to the generator with each message ({} to clear)
  /tools on|off      offer the client-side tools (get_time) to the generator
  /info              show the generator and the conversation id
  /quit              leave (Ctrl-D too); Ctrl-C stops the current answer"""


def get_time(args: dict[str, Any]) -> str:
    """The current UTC time, ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")


#: client-side tools the chat can offer: declaration and handler
CLIENT_TOOLS: dict[str, tuple[dict[str, Any], ToolHandler]] = {
    "get_time": (
        {
            "name": "get_time",
            "description": "The current date and time (UTC, ISO 8601).",
            "parameters": {"type": "object", "properties": {}},
        },
        get_time,
    ),
}


class ChatSession:
    """The state of one terminal chat; :meth:`run` is the loop."""

    def __init__(
        self,
        client: WebSocketClient,
        generator: str,
        *,
        options: dict[str, Any] | None = None,
        tools: bool = False,
        out: TextIO | None = None,
    ) -> None:
        self.client = client
        self.generator = generator
        self.options: dict[str, Any] = dict(options or {})
        self.tools = tools
        self.out = out or sys.stdout
        self.file_id: str | None = None
        self.current: GenerationStream | None = None
        self._stopping = False

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    # -- Ctrl-C --

    async def watch_interrupts(self, tg: anyio.abc.TaskGroup) -> None:
        with anyio.open_signal_receiver(signal.SIGINT) as signals:
            async for _ in signals:
                current = self.current
                if current is not None and not current.finished:
                    if not self._stopping:
                        self._stopping = True
                        tg.start_soon(self._cancel, current)
                else:
                    self.write("\n(Ctrl-C stops an answer; /quit leaves)\n" + PROMPT)

    async def _cancel(self, gen: GenerationStream) -> None:
        try:
            await self.client.cancel(gen.id)
        except (StreamingError, OSError) as exc:
            self.write(f"\n[could not cancel: {exc}]\n")

    # -- the loop --

    async def run(self) -> int:
        self.write(
            f"Chatting with {self.generator!r} at {self.client.base_url}. "
            "Ctrl-C stops an answer, /quit leaves, /help lists commands.\n"
        )
        problem = await self.check_generator(self.generator)
        if problem is not None:
            self.write(f"({problem}; pick one with /generator NAME)\n")
        while True:
            try:
                line = await anyio.to_thread.run_sync(input, PROMPT, abandon_on_cancel=True)
            except EOFError:
                self.write("\n")
                return 0
            if not line.strip():
                continue
            if line.strip().startswith("/"):
                if not await self.command(line.strip()):
                    return 0
                continue
            await self.ask(line)

    async def check_generator(self, name: str) -> str | None:
        """Why ``name`` cannot answer here (unknown, or not ready), or None when it can."""
        try:
            details = (await self.client._json("GET", "/generators")).get("details") or []
        except (StreamingError, OSError) as exc:
            return f"cannot list the server's generators: {_describe(exc)}"
        ready = [d["name"] for d in details if d.get("chat")]
        found = next((d for d in details if d.get("name") == name), None)
        if found is None:
            return f"no generator named {name!r}; these answer: {', '.join(ready) or 'none'}"
        if not found.get("chat"):
            return f"{name!r} cannot answer a chat: {found.get('reason')}; these can: {', '.join(ready) or 'none'}"
        return None

    async def command(self, line: str) -> bool:
        """Run a ``/command``; False to leave."""
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        if name in ("/quit", "/exit", "/q"):
            return False
        if name == "/help":
            self.write(HELP + "\n")
        elif name == "/new":
            self.file_id = None
            self.write("(new conversation)\n")
        elif name == "/generator" and arg:
            problem = await self.check_generator(arg)
            if problem is not None:
                self.write(f"({problem}; still talking to {self.generator!r})\n")
                return True
            self.generator = arg
            self.file_id = None
            self.write(f"(now talking to {arg!r}, new conversation)\n")
        elif name == "/options":
            try:
                value = json.loads(arg or "{}")
            except ValueError as exc:
                self.write(f"(not JSON: {exc})\n")
                return True
            if not isinstance(value, dict):
                self.write("(options must be a JSON object)\n")
                return True
            self.options = value
            self.write(f"(options: {json.dumps(self.options)})\n")
        elif name == "/tools" and arg in ("on", "off"):
            self.tools = arg == "on"
            self.write(
                f"(client-side tools {'on: ' + ', '.join(CLIENT_TOOLS) if self.tools else 'off'})\n"
            )
        elif name == "/info":
            self.write(
                f"(generator {self.generator}; conversation {self.file_id or '(none yet)'}; "
                f"options {json.dumps(self.options)}; tools {'on' if self.tools else 'off'})\n"
            )
        else:
            self.write(f"(unknown command {name}; /help lists them)\n")
        return True

    async def ask(self, text: str) -> None:
        try:
            gen = await self.client.generate(
                self.generator,
                prompt=text,
                file_id=self.file_id,
                options=self.options or None,
                tools=[decl for decl, _ in CLIENT_TOOLS.values()] if self.tools else None,
                tool_handlers={name: handler for name, (_, handler) in CLIENT_TOOLS.items()}
                if self.tools
                else None,
            )
        except (StreamingError, OSError) as exc:
            self.write(f"[error: {_describe(exc)}]\n")
            return
        self.file_id = gen.file_id or self.file_id
        self.current = gen
        self._stopping = False
        try:
            await self._render(gen)
        except (StreamingError, OSError) as exc:
            self.write(f"\n[error: {_describe(exc)}]\n")
        finally:
            self.current = None

    async def _render(self, gen: GenerationStream) -> None:
        mime: dict[str, str | None] = {b.id: b.mime_type for b in gen.block_streams()}
        at_line_start = True  # the cursor is at the start of a line
        prefixed = False  # "bot> " is printed for the text being written
        # "[aborted: why]" lines wait for the next event: when it is the terminal event
        # giving the same reason (a cancel, a failure), one line says it.
        held: list[tuple[str, str]] = []
        async for event in gen:
            data = event.data
            kind = event.type
            if held and kind != "block.aborted" and not event.terminal:
                for held_line, _ in held:
                    self.write(("" if at_line_start else "\n") + held_line + "\n")
                    at_line_start = True
                held.clear()
                prefixed = False
            if kind == "generation.started":
                mime.update({b["id"]: b.get("mime_type") for b in data["blocks"]})
            elif kind == "block.created":
                mime[data["block"]["id"]] = data["block"].get("mime_type")
            elif kind == "block.delta":
                text = data["text"]
                if text and (mime.get(data["block_id"]) or "").startswith("text/"):
                    if not prefixed:
                        self.write(("" if at_line_start else "\n") + ANSWER)
                        prefixed = True
                    self.write(text)
                    at_line_start = text.endswith("\n")
            else:
                line = _event_line(event, mime)
                if line is None:
                    continue
                if kind == "block.aborted":
                    held.append((line, str(data.get("reason") or "")))
                    continue
                lines = [held_line for held_line, why in held if not (event.terminal and why and why in line)]
                held.clear()
                for text in [*lines, line]:
                    self.write(("" if at_line_start else "\n") + text + "\n")
                    at_line_start = True
                prefixed = False
        for held_line, _ in held:
            self.write(("" if at_line_start else "\n") + held_line + "\n")
            at_line_start = True
        if not at_line_start:
            self.write("\n")


def _event_line(event: Event, mime: dict[str, str | None]) -> str | None:
    data = event.data
    kind = event.type
    if kind == "tool.call":
        return f"  [tool call] {data['tool_name']}({json.dumps(data.get('args') or {})})"
    if kind == "tool.result":
        label = "tool error" if data.get("is_error") else "tool result"
        return f"  [{label}] {data['tool_name']} -> {'; '.join(data.get('result') or [])}"
    if kind == "block.aborted":
        if mime.get(data["block_id"]) == MimeTypes.FUNCTION_CALL_RESULT:
            return None
        return f"[aborted: {data.get('reason') or 'no reason'}]"
    if kind == "generation.cancelled":
        return f"[cancelled: {data.get('reason') or 'cancelled'}]"
    if kind == "generation.failed":
        err = data.get("error") or {}
        hint = f" ({err['suggestion']})" if err.get("suggestion") else ""
        return f"[failed: {err.get('code', 'error')}: {err.get('message', '')}{hint}]"
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, StreamingError):
        return f"{exc.code}: {exc.message}" + (f" ({exc.suggestion})" if exc.suggestion else "")
    return str(exc) or type(exc).__name__


async def _main(url: str, generator: str, options: dict[str, Any] | None, tools: bool) -> int:
    client = WebSocketClient(url)
    try:
        await client.__aenter__()
    except (OSError, WebSocketException) as exc:
        print(f"streaming chat: cannot connect to {url}: {exc}", file=sys.stderr)
        return 2
    try:
        session = ChatSession(client, generator, options=options, tools=tools)
        async with anyio.create_task_group() as tg:
            tg.start_soon(session.watch_interrupts, tg)
            code = await session.run()
            tg.cancel_scope.cancel()
        return code
    finally:
        await client.aclose()


def run_chat(
    url: str = "http://127.0.0.1:8000",
    generator: str = "echo",
    *,
    options: dict[str, Any] | None = None,
    tools: bool = False,
) -> int:
    """Chat with the server at ``url`` in this terminal; the exit status."""
    return anyio.run(_main, url, generator, options, tools)
