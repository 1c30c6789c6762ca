"""The public surface is what was meant, and the error mapping is complete."""

from __future__ import annotations

import httpx
import pytest
from streaming.client.client import error_from_response
from streaming.server.errors import EXCEPTION_HANDLERS

import streaming
import streaming.errors as E


def test_package_exports() -> None:
    assert set(streaming.__all__) >= {
        "Block", "Tag", "File", "Generation", "StreamState", "MimeTypes", "TagKind", "RoleTag",
        "Capability", "CapabilityImpl", "RequestLevel", "SupportLevel", "CapabilityPluginRequest",
        "CapabilityPluginResponse", "ConversationSupport", "SystemPromptSupport",
        "FunctionCallingSupport", "FunctionCallInvocation", "FunctionCallResult",
        "UnsupportedCapabilityError", "RequestedCapabilities", "PluginRequest",
        "PluginRequestContext", "InvocableResponse", "StreamingGenerator", "Generator",
        "Runtime", "RuntimeSettings", "GeneratorRegistry", "ToolRegistry", "Event", "EventType",
    }
    for name in streaming.__all__:
        assert getattr(streaming, name) is not None


def _subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _subclasses(sub)
    return out


def test_every_error_has_a_distinct_code_and_an_http_status() -> None:
    classes = {E.StreamingError} | _subclasses(E.StreamingError)
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes)), "error codes must be unique"
    for cls in classes:
        assert 400 <= cls.status <= 599, cls
    assert E.StreamingError in EXCEPTION_HANDLERS


@pytest.mark.parametrize(
    "cls",
    [E.NotFoundError, E.ConflictError, E.ToolCallConflictError, E.InvalidRequestError,
     E.UnknownGeneratorError, E.MalformedRequestError, E.PayloadTooLargeError, E.LimitExceededError],
)
def test_client_maps_server_errors_back_to_the_same_class(cls: type[E.StreamingError]) -> None:
    err = cls("msg", suggestion="do this")
    response = httpx.Response(err.status, json={"error": err.to_dict()})
    back = error_from_response(response)
    assert type(back) is cls
    assert (back.code, back.message, back.suggestion) == (err.code, "msg", "do this")
