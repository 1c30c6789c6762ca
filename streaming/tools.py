"""Server-side tools: Python callables whose JSON Schema comes from their signature.

A tool declared in a request but not registered here is *client-side*: the client answers
it. Arguments of every call are checked against the tool's schema before anything runs; a
call that does not validate is answered with an error the model can read.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from streaming.capabilities import Tool

__all__ = ["ServerTool", "ToolArgumentsError", "ToolRegistry", "validate_json_schema"]


class ToolArgumentsError(ValueError):
    """A tool call's arguments do not fit the tool's schema."""


@dataclass
class ServerTool:
    """A registered callable, its declaration and the model that validates its arguments."""

    tool: Tool
    fn: Callable[..., Any]
    args_model: type[BaseModel]

    async def __call__(self, args: Mapping[str, Any]) -> list[str]:
        """Validate ``args`` and call the function (in a worker thread if it is sync).

        Raises:
            ToolArgumentsError: the arguments do not validate.
            Exception: whatever the tool raises.
        """
        try:
            parsed = self.args_model.model_validate(dict(args))
        except ValidationError as exc:
            raise ToolArgumentsError(_first_error(exc)) from exc
        kwargs = {name: getattr(parsed, name) for name in type(parsed).model_fields}
        if inspect.iscoroutinefunction(self.fn):
            value = await self.fn(**kwargs)
        else:
            value = await anyio.to_thread.run_sync(lambda: self.fn(**kwargs))
        return _as_result(value)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "arguments"
    return f"{where}: {err['msg']}"


def _as_result(value: Any) -> list[str]:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    if isinstance(value, str):
        return [value]
    if isinstance(value, BaseModel):
        return [value.model_dump_json()]
    return [json.dumps(value, default=str)]


class ToolRegistry:
    """The server-side tools of a runtime, by name."""

    def __init__(self) -> None:
        self._tools: dict[str, ServerTool] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __getitem__(self, name: str) -> ServerTool:
        return self._tools[name]

    def declarations(self) -> list[Tool]:
        return [t.tool for t in self._tools.values()]

    def register(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> Any:
        """Register ``fn`` (usable as ``@registry.register`` or ``register(fn, name=…)``)."""

        def add(f: Callable[..., Any]) -> Callable[..., Any]:
            model = _signature_model(f)
            schema = model.model_json_schema()
            schema.pop("title", None)
            tool = Tool(
                name=name or f.__name__,
                description=description or inspect.getdoc(f) or "",
                parameters=schema,
            )
            self._tools[tool.name] = ServerTool(tool=tool, fn=f, args_model=model)
            return f

        return add(fn) if fn is not None else add


def _signature_model(fn: Callable[..., Any]) -> type[BaseModel]:
    hints = inspect.get_annotations(fn, eval_str=True)
    fields: dict[str, Any] = {}
    for pname, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(pname, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[pname] = (annotation, default)
    return create_model(
        f"{fn.__name__}_args", __config__=ConfigDict(extra="forbid"), **fields
    )


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

