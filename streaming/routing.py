"""Who answers a tool call, and whether it can be answered at all: a pure decision.

A call names a tool and carries arguments. It is answered by

- the **server**, when a server-side tool of that name exists and the request offered it;
- the **client**, when the request declared the tool itself and the arguments fit its
  JSON Schema;
- **nobody**, with an error result at once, when the tool was not offered, is unknown, or
  the arguments do not fit (a server-side tool validates its own arguments when it runs).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from streaming.capabilities import FunctionCallInvocation, Tool
from streaming.errors import InvalidRequestError, PluginError
from streaming.model import Block

__all__ = [
    "AnsweredBy",
    "Route",
    "ToolArgumentsError",
    "parse_tool_call",
    "route_tool_call",
    "validate_json_schema",
]


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


# -- validation: the common subset of JSON Schema tools use --


class ToolArgumentsError(ValueError):
    """A tool call's arguments do not fit the tool's schema."""


_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def validate_json_schema(value: Any, schema: Mapping[str, Any], path: str = "arguments") -> None:
    """Check ``value`` against the common subset of JSON Schema tools use.

    Covers ``type``, ``enum``, ``const``, ``properties``, ``required``,
    ``additionalProperties: false``, ``items``, ``minimum``/``maximum``, ``minLength``/
    ``maxLength`` and ``anyOf``; other keywords are not checked.

    Raises:
        ToolArgumentsError: naming the first place that does not fit.
    """
    if "anyOf" in schema:
        for option in schema["anyOf"]:
            try:
                validate_json_schema(value, option, path)
                return
            except ToolArgumentsError:
                continue
        raise ToolArgumentsError(f"{path}: matches none of the allowed shapes")
    typ = schema.get("type")
    if typ is not None:
        types = typ if isinstance(typ, list) else [typ]
        if not any(_JSON_TYPES.get(t, lambda v: True)(value) for t in types):
            raise ToolArgumentsError(f"{path}: expected {' or '.join(types)}, got {type(value).__name__}")
    if "enum" in schema and value not in schema["enum"]:
        raise ToolArgumentsError(f"{path}: must be one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        raise ToolArgumentsError(f"{path}: must be {schema['const']!r}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for req in schema.get("required", []):
            if req not in value:
                raise ToolArgumentsError(f"{path}.{req}: field required")
        for key, item in value.items():
            if key in props:
                validate_json_schema(item, props[key], f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                raise ToolArgumentsError(f"{path}.{key}: unexpected field")
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            validate_json_schema(item, schema["items"], f"{path}[{i}]")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise ToolArgumentsError(f"{path}: must be >= {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise ToolArgumentsError(f"{path}: must be <= {schema['maximum']}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            raise ToolArgumentsError(f"{path}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise ToolArgumentsError(f"{path}: longer than {schema['maxLength']}")
