"""A streaming generation runtime: generator plugins, preallocated blocks, resumable
event streams over SSE and WebSocket, and tool-call round trips mid-stream.

The plugin vocabulary is that of the Steamship plugin package (capabilities, request and
support levels, ``StreamingGenerator``, ``FunctionCallInvocation``, …).

Importing ``streaming`` loads nothing else: each name of ``__all__`` is imported from its
module on first use, so ``streaming.client`` and ``streaming.wire`` stay light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE: dict[str, str] = {
    "Block": "streaming.model",
    "Capability": "streaming.capabilities",
    "CapabilityImpl": "streaming.capabilities",
    "CapabilityPluginRequest": "streaming.capabilities",
    "CapabilityPluginResponse": "streaming.capabilities",
    "ChatTag": "streaming.model",
    "ConversationSupport": "streaming.capabilities",
    "Event": "streaming.events",
    "EventType": "streaming.events",
    "File": "streaming.model",
    "FunctionCallInvocation": "streaming.capabilities",
    "FunctionCallResult": "streaming.capabilities",
    "FunctionCallingSupport": "streaming.capabilities",
    "GenerateRequest": "streaming.requests",
    "Generation": "streaming.model",
    "GenerationState": "streaming.model",
    "Generator": "streaming.plugin",
    "GeneratorRegistry": "streaming.runtime",
    "InvocableResponse": "streaming.plugin",
    "MimeTypes": "streaming.model",
    "OnDisconnect": "streaming.model",
    "PluginRequest": "streaming.plugin",
    "PluginRequestContext": "streaming.plugin",
    "PluginService": "streaming.plugin",
    "RequestLevel": "streaming.capabilities",
    "RequestedCapabilities": "streaming.capabilities",
    "RoleTag": "streaming.model",
    "Runtime": "streaming.runtime",
    "RuntimeSettings": "streaming.runtime",
    "StreamState": "streaming.model",
    "StreamingGenerator": "streaming.plugin",
    "SupportLevel": "streaming.capabilities",
    "SystemPromptSupport": "streaming.capabilities",
    "Tag": "streaming.model",
    "TagKind": "streaming.model",
    "TagValueKey": "streaming.model",
    "Tool": "streaming.capabilities",
    "ToolRegistry": "streaming.tools",
    "ToolResultRequest": "streaming.requests",
    "UnsupportedCapabilityError": "streaming.capabilities",
    "Usage": "streaming.model",
}

__all__ = [
    "Block",
    "Capability",
    "CapabilityImpl",
    "CapabilityPluginRequest",
    "CapabilityPluginResponse",
    "ChatTag",
    "ConversationSupport",
    "Event",
    "EventType",
    "File",
    "FunctionCallInvocation",
    "FunctionCallResult",
    "FunctionCallingSupport",
    "GenerateRequest",
    "Generation",
    "GenerationState",
    "Generator",
    "GeneratorRegistry",
    "InvocableResponse",
    "MimeTypes",
    "OnDisconnect",
    "PluginRequest",
    "PluginRequestContext",
    "PluginService",
    "RequestLevel",
    "RequestedCapabilities",
    "RoleTag",
    "Runtime",
    "RuntimeSettings",
    "StreamState",
    "StreamingGenerator",
    "SupportLevel",
    "SystemPromptSupport",
    "Tag",
    "TagKind",
    "TagValueKey",
    "Tool",
    "ToolRegistry",
    "ToolResultRequest",
    "UnsupportedCapabilityError",
    "Usage",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'streaming' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


if TYPE_CHECKING:
    from streaming.capabilities import (
        Capability,
        CapabilityImpl,
        CapabilityPluginRequest,
        CapabilityPluginResponse,
        ConversationSupport,
        FunctionCallingSupport,
        FunctionCallInvocation,
        FunctionCallResult,
        RequestedCapabilities,
        RequestLevel,
        SupportLevel,
        SystemPromptSupport,
        Tool,
        UnsupportedCapabilityError,
    )
    from streaming.events import Event, EventType
    from streaming.model import (
        Block,
        ChatTag,
        File,
        Generation,
        GenerationState,
        MimeTypes,
        OnDisconnect,
        RoleTag,
        StreamState,
        Tag,
        TagKind,
        TagValueKey,
        Usage,
    )
    from streaming.plugin import (
        Generator,
        InvocableResponse,
        PluginRequest,
        PluginRequestContext,
        PluginService,
        StreamingGenerator,
    )
    from streaming.requests import GenerateRequest, ToolResultRequest
    from streaming.runtime import GeneratorRegistry, Runtime, RuntimeSettings
    from streaming.tools import ToolRegistry
