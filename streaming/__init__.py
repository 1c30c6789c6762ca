"""A streaming generation runtime: generator plugins, preallocated blocks, resumable
event streams over SSE and WebSocket, and tool-call round trips mid-stream.

The plugin vocabulary is that of the Steamship plugin package (capabilities, request and
support levels, ``StreamingGenerator``, ``FunctionCallInvocation``, …).
"""

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
    "Usage",
    "UnsupportedCapabilityError",
]
