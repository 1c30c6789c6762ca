"""``openai``: streams from any OpenAI-compatible ``/v1/chat/completions`` upstream.

Works with OpenAI, vLLM, Ollama, llama.cpp's server, TGI: anything that speaks the chat
completions API with ``stream: true``. The conversation (system prompt, history, tool
calls and results) is sent as OpenAI messages, the offered tools as ``tools``; text
deltas stream into the output block, tool-call deltas are reassembled into
:class:`~streaming.capabilities.FunctionCallInvocation` blocks, and the upstream's usage
becomes ``prompt tokens`` / ``sampled tokens`` reports.

Where the upstream is, and who we are to it, is server configuration, never a request's:
``base_url`` (``OPENAI_BASE_URL``, default ``https://api.openai.com/v1``), ``api_key``
(``OPENAI_API_KEY``) and ``model`` (``OPENAI_MODEL``) come from the generator's config,
else the environment. (A request that could choose the URL could send the server's key
anywhere.) Request options: ``model``, ``max_tokens``, ``temperature``, ``top_p``,
``stop``, ``seed``, ``presence_penalty``, ``frequency_penalty``, ``tool_choice``,
``include_usage`` (default true), ``timeout_s`` (longest wait for the next byte, default
60), ``connect_timeout_s`` (10).

Failures raise (the runtime ends the generation ``failed`` with the code)::

    UpstreamError                 upstream_error         the upstream answered an error
    ├── UpstreamUnavailableError  upstream_unavailable   cannot connect
    ├── UpstreamTimeoutError      upstream_timeout       no byte within timeout_s
    └── UpstreamDisconnectedError upstream_disconnected  the stream ended before it was done

A cancel closes the upstream request (the HTTP stream is closed in a ``finally``).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from streaming.capabilities import (
    ConversationSupport,
    FunctionCallingSupport,
    FunctionCallInvocation,
    FunctionCallResult,
    SupportLevel,
    SystemPromptSupport,
    Tool,
)
from streaming.errors import InvalidRequestError, PluginError, StreamingError
from streaming.model import Block, MimeTypes, RoleTag, Usage
from streaming.plugin.inputs import (
    RawBlockAndTagPluginInput,
    RawBlockAndTagPluginInputWithPreallocatedBlocks,
)
from streaming.plugin.outputs import BlockTypePluginOutput
from streaming.plugin.request import InvocableResponse, PluginRequest
from streaming.plugin.streaming_generator import StreamingGenerator

__all__ = [
    "OpenAIGenerator",
    "UpstreamDisconnectedError",
    "UpstreamError",
    "UpstreamTimeoutError",
    "UpstreamUnavailableError",
    "openai_messages",
    "openai_tools",
]

DEFAULT_BASE_URL = "https://api.openai.com/v1"

#: request options passed through to the upstream as they are
PASSTHROUGH = (
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
)


class UpstreamError(StreamingError):
    """The upstream answered with an error (or something that is not chat completions)."""

    code = "upstream_error"
    status = 502


class UpstreamUnavailableError(UpstreamError):
    """The upstream could not be reached."""

    code = "upstream_unavailable"


class UpstreamTimeoutError(UpstreamError):
    """The upstream sent nothing within the timeout."""

    code = "upstream_timeout"
    status = 504


class UpstreamDisconnectedError(UpstreamError):
    """The upstream's stream broke off before it said it was done."""

    code = "upstream_disconnected"


# -- the conversation in OpenAI's shape --


def openai_tools(tools: list[Tool]) -> list[dict[str, Any]]:
    """Tools as OpenAI's ``tools`` list."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


def openai_messages(blocks: list[Block]) -> list[dict[str, Any]]:
    """The conversation as OpenAI chat messages.

    Consecutive invocation blocks become one assistant message with ``tool_calls`` (joined
    to the assistant text just before them); a result block becomes a ``tool`` message.
    Capability blocks and empty assistant texts are left out.
    """
    messages: list[dict[str, Any]] = []
    unnamed = 0
    pending_ids: dict[str, list[str]] = {}  # tool name -> call ids without a result yet
    for block in blocks:
        mime = block.mime_type or MimeTypes.TXT
        if mime == MimeTypes.FUNCTION_CALL_INVOCATION:
            inv = FunctionCallInvocation.from_block(block)
            call_id = inv.call_id
            if call_id is None:
                unnamed += 1
                call_id = f"call_{unnamed}"
            pending_ids.setdefault(inv.tool_name, []).append(call_id)
            call = {
                "id": call_id,
                "type": "function",
                "function": {"name": inv.tool_name, "arguments": json.dumps(inv.args)},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif mime == MimeTypes.FUNCTION_CALL_RESULT:
            res = FunctionCallResult.from_block(block)
            call_id = res.call_id
            waiting = pending_ids.get(res.tool_name) or []
            if call_id is None or call_id not in waiting:
                call_id = waiting[0] if waiting else (call_id or f"call_{res.tool_name}")
            if call_id in waiting:
                waiting.remove(call_id)
            content = "\n".join(res.result)
            if res.is_error:
                content = f"error: {content}"
            messages.append({"role": "tool", "tool_call_id": call_id, "content": content})
        elif mime.startswith("text/"):
            role = block.chat_role or RoleTag.USER.value
            if role in (RoleTag.AGENT, RoleTag.LLM):
                role = RoleTag.ASSISTANT.value
            if role == RoleTag.ASSISTANT and not block.text:
                continue
            if role in (RoleTag.TOOL, RoleTag.FUNCTION):  # a tool's text without a call: as user
                role = RoleTag.USER.value
            messages.append({"role": str(role), "content": block.text})
    return messages


# -- the stream --


@dataclass
class _ToolCallParts:
    id: str | None = None
    name: str = ""
    arguments: str = ""


class OpenAIGenerator(StreamingGenerator):
    """The ``openai`` generator: an OpenAI-compatible upstream, streamed."""

    supported_capabilities = {
        SystemPromptSupport: SupportLevel.NATIVE,
        ConversationSupport: SupportLevel.NATIVE,
        FunctionCallingSupport: SupportLevel.NATIVE,
    }

    description = "an OpenAI-compatible upstream (OPENAI_BASE_URL, OPENAI_MODEL, OPENAI_API_KEY), streamed"

    def chat_unavailable_reason(self) -> str | None:
        if not self._setting("model", "OPENAI_MODEL"):
            return "no upstream configured: set OPENAI_MODEL and OPENAI_BASE_URL (or OPENAI_API_KEY)"
        if self.base_url == DEFAULT_BASE_URL and not self._setting("api_key", "OPENAI_API_KEY"):
            return "no API key: set OPENAI_API_KEY, or OPENAI_BASE_URL for a local server"
        return None

    def _setting(self, name: str, env: str, default: str | None = None) -> str | None:
        value = self.config.get(name)
        if value is None:
            value = os.environ.get(env) or default
        return None if value is None else str(value)

    @property
    def base_url(self) -> str:
        return (self._setting("base_url", "OPENAI_BASE_URL", DEFAULT_BASE_URL) or DEFAULT_BASE_URL).rstrip("/")

    def determine_output_block_types(
        self, request: PluginRequest[RawBlockAndTagPluginInput]
    ) -> InvocableResponse[BlockTypePluginOutput]:
        assert request.data is not None
        self._model(request.data.options)
        if self.base_url == DEFAULT_BASE_URL and not self._setting("api_key", "OPENAI_API_KEY"):
            raise InvalidRequestError(
                "the openai generator has no API key",
                code="upstream_not_configured",
                suggestion="set OPENAI_API_KEY, or OPENAI_BASE_URL for a local server",
            )
        return InvocableResponse(data=BlockTypePluginOutput(block_types_to_create=[MimeTypes.TXT]))

    def _model(self, options: dict[str, Any]) -> str:
        model = options.get("model") or self._setting("model", "OPENAI_MODEL")
        if not model or not isinstance(model, str):
            raise InvalidRequestError(
                "no upstream model",
                code="upstream_not_configured",
                suggestion="pass the 'model' option or set OPENAI_MODEL",
            )
        return model

    def _body(self, request: RawBlockAndTagPluginInputWithPreallocatedBlocks) -> dict[str, Any]:
        options = request.options
        body: dict[str, Any] = {
            "model": self._model(options),
            "messages": openai_messages(request.blocks),
            "stream": True,
        }
        if options.get("include_usage", self.config.get("include_usage", True)):
            body["stream_options"] = {"include_usage": True}
        fc = self.requested_capabilities(request.blocks).get(FunctionCallingSupport)
        if fc is not None and fc.functions:
            body["tools"] = openai_tools(list(fc.functions))
        for name in PASSTHROUGH:
            if name in options:
                body[name] = options[name]
        if "tools" not in body:
            body.pop("tool_choice", None)
            body.pop("parallel_tool_calls", None)
        if not body["messages"]:
            raise InvalidRequestError("the conversation is empty")
        return body

    def _timeout(self, options: dict[str, Any]) -> httpx.Timeout:
        try:
            read = float(options.get("timeout_s", self.config.get("timeout_s", 60.0)))
            connect = float(options.get("connect_timeout_s", self.config.get("connect_timeout_s", 10.0)))
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError(f"bad timeout option: {exc}") from exc
        return httpx.Timeout(read, connect=connect)

    async def run(
        self, request: PluginRequest[RawBlockAndTagPluginInputWithPreallocatedBlocks]
    ) -> AsyncIterator[Any]:
        assert request.data is not None
        body = self._body(request.data)
        headers = {"Accept": "text/event-stream"}
        api_key = self._setting("api_key", "OPENAI_API_KEY")
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        known_ids = _known_call_ids(request.data.blocks)
        url = f"{self.base_url}/chat/completions"
        calls: dict[int, _ToolCallParts] = {}
        finished = False
        try:
            async with httpx.AsyncClient(timeout=self._timeout(request.data.options)) as client:
                async with client.stream("POST", url, json=body, headers=headers) as response:
                    if response.status_code >= 400:
                        raise await _status_error(response)
                    async for line in response.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            finished = True
                            break
                        chunk = _parse_chunk(data)
                        for item in _chunk_items(chunk, calls):
                            if item is _FINISHED:
                                finished = True
                            else:
                                yield item
        except httpx.TimeoutException as exc:
            raise UpstreamTimeoutError(
                f"the upstream at {self.base_url} sent nothing in time ({type(exc).__name__})",
                suggestion="retry, or raise the timeout_s option",
            ) from exc
        except httpx.ConnectError as exc:
            raise UpstreamUnavailableError(
                f"cannot connect to the upstream at {self.base_url}: {exc}",
                suggestion="check OPENAI_BASE_URL and that the server is up",
            ) from exc
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise UpstreamDisconnectedError(
                f"the upstream closed the stream mid-way: {exc}", suggestion="retry"
            ) from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"the upstream request failed: {exc}") from exc
        if not finished:
            raise UpstreamDisconnectedError(
                "the upstream's stream ended before it finished", suggestion="retry"
            )
        for index in sorted(calls):
            yield _invocation(calls[index], known_ids)


_FINISHED = object()


def _parse_chunk(data: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError as exc:
        raise UpstreamError(f"the upstream sent a chunk that is not JSON: {data[:200]!r}") from exc
    if not isinstance(chunk, dict):
        raise UpstreamError("the upstream sent a chunk that is not a JSON object")
    error = chunk.get("error")
    if error is not None:
        message = error.get("message") if isinstance(error, dict) else str(error)
        raise UpstreamError(f"the upstream failed mid-stream: {message}")
    return chunk


def _chunk_items(chunk: dict[str, Any], calls: dict[int, _ToolCallParts]) -> list[Any]:
    """What one ``chat.completion.chunk`` adds: text, usage, and tool-call parts into ``calls``."""
    out: list[Any] = []
    for choice in chunk.get("choices") or []:
        if choice.get("index", 0) != 0:
            continue
        delta = choice.get("delta") or {}
        content = delta.get("content")
        if content:
            out.append(str(content))
        for part in delta.get("tool_calls") or []:
            parts = calls.setdefault(int(part.get("index", len(calls))), _ToolCallParts())
            if part.get("id"):
                parts.id = str(part["id"])
            function = part.get("function") or {}
            if function.get("name"):
                # Most servers send the name whole, some in pieces.
                parts.name = parts.name + function["name"] if parts.name != function["name"] else parts.name
            if function.get("arguments"):
                parts.arguments += str(function["arguments"])
        if choice.get("finish_reason"):
            out.append(_FINISHED)
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        out.append(Usage(operation_unit="prompt tokens", operation_amount=usage.get("prompt_tokens") or 0))
        out.append(
            Usage(operation_unit="sampled tokens", operation_amount=usage.get("completion_tokens") or 0)
        )
    return out


def _invocation(parts: _ToolCallParts, known_ids: set[str]) -> FunctionCallInvocation:
    if not parts.name:
        raise UpstreamError("the upstream sent a tool call without a name", code="invalid_tool_call")
    try:
        args = json.loads(parts.arguments) if parts.arguments.strip() else {}
    except json.JSONDecodeError as exc:
        raise PluginError(
            f"the upstream's arguments for {parts.name} are not JSON: {parts.arguments[:200]!r}",
            code="invalid_tool_call",
        ) from exc
    if not isinstance(args, dict):
        raise PluginError(f"the upstream's arguments for {parts.name} are not an object", code="invalid_tool_call")
    # An id seen earlier in the conversation (some servers number calls per response)
    # would collide: the runtime then assigns a fresh one.
    call_id = parts.id if parts.id and parts.id not in known_ids else None
    return FunctionCallInvocation(tool_name=parts.name, args=args, call_id=call_id)


def _known_call_ids(blocks: list[Block]) -> set[str]:
    ids: set[str] = set()
    for block in blocks:
        if block.mime_type == MimeTypes.FUNCTION_CALL_INVOCATION:
            call_id = FunctionCallInvocation.from_block(block).call_id
            if call_id:
                ids.add(call_id)
    return ids


async def _status_error(response: httpx.Response) -> UpstreamError:
    raw = await response.aread()
    message = raw[:500].decode("utf-8", "replace")
    try:
        data = json.loads(raw)
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            message = str(data["error"].get("message") or message)
        elif isinstance(data, dict) and isinstance(data.get("error"), str):
            message = data["error"]
    except (json.JSONDecodeError, UnicodeDecodeError):
        pass
    status = response.status_code
    if status == 429:
        return UpstreamError(f"the upstream is rate limiting (429): {message}", suggestion="retry later")
    if status in (401, 403):
        return UpstreamError(
            f"the upstream refused our credentials ({status}): {message}",
            suggestion="check OPENAI_API_KEY",
        )
    return UpstreamError(f"the upstream answered {status}: {message}")
