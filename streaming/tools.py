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
from streaming.routing import ToolArgumentsError, validate_json_schema

__all__ = ["ServerTool", "ToolArgumentsError", "ToolRegistry", "validate_json_schema"]


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
