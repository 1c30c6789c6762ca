"""Capabilities as the seed defines them, with the original's bugs fixed."""

from __future__ import annotations

import pytest

from streaming.capabilities import (
    Capability,
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
from streaming.model import Block, MimeTypes

N, B, D = SupportLevel.NATIVE, SupportLevel.BEST_EFFORT, SupportLevel.CAN_DISABLE


@pytest.mark.parametrize(
    ("level", "support", "ok", "served"),
    [
        (RequestLevel.NATIVE, N, True, N),
        (RequestLevel.NATIVE, B, False, None),
        (RequestLevel.NATIVE, None, False, None),
        (RequestLevel.BEST_EFFORT, N, True, N),  # a NATIVE plugin reports NATIVE
        (RequestLevel.BEST_EFFORT, B, True, B),
        (RequestLevel.BEST_EFFORT, D, False, None),
        (RequestLevel.BEST_EFFORT, None, False, None),
        (RequestLevel.OPTIONAL, None, True, None),
        (RequestLevel.OPTIONAL, B, True, B),
        (RequestLevel.DISABLE, None, True, None),  # unsupported: no behaviour change
        (RequestLevel.DISABLE, N, False, None),  # supported but cannot be disabled
        (RequestLevel.DISABLE, N | D, True, D),
    ],
)
def test_support_rules(level: RequestLevel, support: SupportLevel | None, ok: bool, served: SupportLevel | None) -> None:
    valid, response = ConversationSupport(request_level=level).is_plugin_support_valid(support)
    assert valid is ok
    assert (response.fulfilled_at if response else None) == served
    if response is not None:
        assert response.name == "steamship.conversation_support"  # never null


def test_request_block_round_trip_and_response() -> None:
    tool = Tool(
        name="get_weather",
        description="Weather",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    )
    request = CapabilityPluginRequest(
        requested_capabilities=[
            FunctionCallingSupport(functions=[tool]),
            SystemPromptSupport(),
            Capability(name="acme.unknown", request_level=RequestLevel.OPTIONAL),
        ]
    )
    block = request.to_block()
    assert block.mime_type == MimeTypes.STEAMSHIP_PLUGIN_CAPABILITIES_REQUEST
    again = CapabilityPluginRequest.from_block(block)
    assert again.requested_capabilities[0].name == "steamship.function_calling_support"
    assert again.requested_capabilities[1].request_level is RequestLevel.BEST_EFFORT

    requested = RequestedCapabilities({FunctionCallingSupport: N, SystemPromptSupport: B})
    response = requested.extract_from_blocks([Block(text="hi"), block])
    assert response is not None
    assert [(r.name, r.fulfilled_at) for r in response.capability_responses] == [
        ("steamship.function_calling_support", N),
        ("steamship.system_prompt_support", B),
    ]
    # The original failed here whenever `functions` was non-empty.
    fc = requested.get(FunctionCallingSupport)
    assert isinstance(fc, FunctionCallingSupport)
    assert fc.functions[0].parameters["required"] == ["city"]
    assert requested.get(ConversationSupport) is None
    resp_block = response.to_block()
    assert resp_block.mime_type == MimeTypes.STEAMSHIP_PLUGIN_CAPABILITIES_RESPONSE
    assert CapabilityPluginResponse.from_block(resp_block) == response
    assert '"fulfilled_at": 1' in resp_block.text


def test_unsupported_lists_every_refused_capability() -> None:
    request = CapabilityPluginRequest(
        requested_capabilities=[
            FunctionCallingSupport(request_level=RequestLevel.NATIVE),
            ConversationSupport(request_level=RequestLevel.NATIVE),
            SystemPromptSupport(request_level=RequestLevel.BEST_EFFORT),
        ]
    )
    with pytest.raises(UnsupportedCapabilityError) as info:
        RequestedCapabilities({ConversationSupport: N}).load_requests(request)
    names = [c.name for c in info.value.unsupported_capabilities]
    assert names == ["steamship.function_calling_support", "steamship.system_prompt_support"]
    assert info.value.code == "unsupported_capability" and info.value.status == 422


def test_no_request_block_means_legacy() -> None:
    assert RequestedCapabilities({}).extract_from_blocks([Block(text="plain")]) is None


def test_invocation_and_result_blocks() -> None:
    inv = FunctionCallInvocation(tool_name="search", args={"q": "x", "n": 3, "filters": {"a": [1, 2]}, "exact": True})
    block = inv.to_block()
    assert block.mime_type == MimeTypes.FUNCTION_CALL_INVOCATION
    assert FunctionCallInvocation.from_block(block) == inv  # any JSON args, not just int/str/float
    res = FunctionCallResult(tool_name="search", result=["found", "Block(blk_1)"])
    back = FunctionCallResult.from_block(res.to_block())
    other = Block(id="blk_1", text="the block")
    assert list(back.result_items({"blk_1": other})) == ["found", other]
    with pytest.raises(Exception) as info:
        FunctionCallInvocation.from_block(Block(text="{not json"))
    assert getattr(info.value, "code", None) == "invalid_request"


def test_tool_parameters_must_be_an_object_schema() -> None:
    with pytest.raises(ValueError):
        Tool(name="t", parameters={"type": "string"})
    with pytest.raises(ValueError):
        Tool(name="bad name!")


def test_capability_blocks_are_read_in_either_spelling_and_checked() -> None:
    from streaming.capabilities import read_capability_requests
    from streaming.errors import InvalidRequestError

    mime = MimeTypes.STEAMSHIP_PLUGIN_CAPABILITIES_REQUEST
    camel = Block.model_validate({
        "mimeType": mime,
        "text": '{"requestedCapabilities": [{"name": "steamship.conversation_support", "requestLevel": "optional"}]}',
    })
    snake = CapabilityPluginRequest(requested_capabilities=[SystemPromptSupport()]).to_block()
    caps = read_capability_requests([Block(text="hi"), camel, snake])
    assert caps is not None
    assert [(c.name, c.request_level) for c in caps] == [
        (ConversationSupport.NAME, RequestLevel.OPTIONAL), (SystemPromptSupport.NAME, RequestLevel.BEST_EFFORT),
    ]
    assert read_capability_requests([Block(text="hi")]) is None
    # A plugin reads the first request block, as the seed does (the runtime puts one first).
    requested = RequestedCapabilities({ConversationSupport: SupportLevel.NATIVE})
    assert requested.extract_from_blocks([Block(text="hi"), camel, snake]) is not None
    assert list(requested.requested) == [ConversationSupport.NAME]
    with pytest.raises(UnsupportedCapabilityError):
        RequestedCapabilities({ConversationSupport: SupportLevel.NATIVE}).extract_from_blocks([snake, camel])
    for text in ('{"requested_capabilities": [{"request_level": "native"}]}', "not json"):
        with pytest.raises(InvalidRequestError):
            read_capability_requests([Block(text=text, mime_type=mime)])
    with pytest.raises(InvalidRequestError, match="twice"):
        read_capability_requests([camel, camel])
