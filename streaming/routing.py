"""Who answers a tool call, and whether it can be answered at all: a pure decision.

A call names a tool and carries arguments. It is answered by

- the **server**, when a server-side tool of that name exists and the request offered it;
- the **client**, when the request declared the tool itself and the arguments fit its
  JSON Schema;
- **nobody**, with an error result at once, when the tool was not offered, is unknown, or
  the arguments do not fit (a server-side tool validates its own arguments when it runs).
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from streaming.capabilities import FunctionCallInvocation, Tool
from streaming.errors import InvalidRequestError, PluginError
from streaming.model import Block
from streaming.tools import ToolArgumentsError, validate_json_schema

__all__ = ["AnsweredBy", "Route", "parse_tool_call", "route_tool_call"]


class AnsweredBy(StrEnum):
    SERVER = "server"
    CLIENT = "client"
    NOBODY = "nobody"  # answered at once with ``problem`` as an error result


@dataclass(frozen=True, slots=True)
class Route:
    answered_by: AnsweredBy
    problem: str | None = None

    @property
    def client_side(self) -> bool:
        """What ``tool.call`` tells the client: is it expected to answer?"""
        return self.answered_by is AnsweredBy.CLIENT


def route_tool_call(
    tool_name: str,
    args: Mapping[str, Any],
    offered: Mapping[str, Tool],
    server_tools: Container[str],
) -> Route:
    """Decide who answers a call of ``tool_name`` with ``args``.

    Args:
        offered: the tools the request offered the model, by name.
        server_tools: names of the tools the server runs itself.
    """
    server_side = tool_name in server_tools
    declared = offered.get(tool_name)
    if declared is None:
        problem = f"tool {tool_name!r} was not offered" if server_side else f"unknown tool {tool_name!r}"
        return Route(AnsweredBy.NOBODY, problem)
    if server_side:
        return Route(AnsweredBy.SERVER)
    try:
        validate_json_schema(args, declared.parameters)
    except ToolArgumentsError as exc:
        return Route(AnsweredBy.NOBODY, f"invalid arguments: {exc}")
    return Route(AnsweredBy.CLIENT)


def parse_tool_call(block: Block) -> FunctionCallInvocation:
    """The call a completed invocation block holds.

    Raises:
        PluginError: code ``invalid_tool_call``, the block is not a valid call.
    """
    try:
        return FunctionCallInvocation.from_block(block)
    except InvalidRequestError as exc:
        raise PluginError(
            f"the generator wrote a tool call that is not valid JSON: {exc.message}",
            code="invalid_tool_call",
        ) from exc
