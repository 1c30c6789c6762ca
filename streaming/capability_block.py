"""The capability request block a plugin sees first: a pure decision.

A request asks for capabilities (``capabilities``) and offers tools (``tools``). The
plugin receives them as one capability request block at the head of its input: the tools
are listed in the ``function_calling`` capability (merged into one the request asked for,
or added at ``best_effort`` when it asked for none). No capability and no tool: no block.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from streaming.capabilities import (
    Capability,
    CapabilityPluginRequest,
    FunctionCallingSupport,
    RequestLevel,
    Tool,
)
from streaming.errors import InvalidRequestError
from streaming.model import Block

__all__ = ["capability_block", "offered_tools"]


def offered_tools(requested: Sequence[str | Tool], server_tool: Callable[[str], Tool | None]) -> dict[str, Tool]:
    """The tools a request offers the model, by name: declared ones as they are, and
    server-side ones named by a string (``server_tool(name)`` is their declaration, or
    None if the server has no tool of that name).

    Raises:
        InvalidRequestError: a name no server-side tool has.
    """
    tools: dict[str, Tool] = {}
    for item in requested:
        if isinstance(item, str):
            declared = server_tool(item)
            if declared is None:
                raise InvalidRequestError(
                    f"no server-side tool named {item!r}",
                    suggestion="declare it with a name, description and parameters",
                )
            tools[item] = declared
        else:
            tools[item.name] = item
    return tools


def capability_block(capabilities: Sequence[Mapping[str, Any]], tools: Mapping[str, Tool]) -> Block | None:
    """The capability request block for ``capabilities`` and ``tools``, or None.

    Raises:
        InvalidRequestError: a capability that is not well formed.
    """
    caps: list[Capability] = []
    has_fc = False
    for raw in capabilities:
        try:
            cap = Capability.model_validate(raw)
        except ValueError as exc:
            raise InvalidRequestError(f"bad capability {raw.get('name')!r}: {exc}") from exc
        if cap.name == FunctionCallingSupport.NAME:
            has_fc = True
            if tools:
                extra = dict(cap.model_extra or {})
                listed = [Tool.model_validate(t) for t in extra.get("functions", [])]
                names = {t.name for t in listed}
                listed += [t for t in tools.values() if t.name not in names]
                cap = FunctionCallingSupport(request_level=cap.request_level, functions=listed)
        caps.append(cap)
    if tools and not has_fc:
        caps.append(FunctionCallingSupport(request_level=RequestLevel.BEST_EFFORT, functions=list(tools.values())))
    if not caps:
        return None
    return CapabilityPluginRequest(requested_capabilities=caps).to_block()
