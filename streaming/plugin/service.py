"""The base of every plugin: ``PluginService[IN, OUT]``."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, TypeVar, get_args

from streaming.capabilities import CapabilityImpl, RequestedCapabilities, SupportLevel
from streaming.errors import InvalidRequestError
from streaming.plugin.request import InvocableResponse, PluginRequest, PluginRequestContext

__all__ = ["PluginService", "instantiate"]

IN = TypeVar("IN")
OUT = TypeVar("OUT")


class PluginService(ABC, Generic[IN, OUT]):
    """A plugin: configured once, then called with ``PluginRequest[IN]``.

    Subclasses declare which capabilities they support, and at which level, in
    ``supported_capabilities``; the runtime checks every request against it before any
    work is done.
    """

    supported_capabilities: ClassVar[Mapping[type[CapabilityImpl], SupportLevel]] = {}
    input_type: ClassVar[type[Any] | None] = None

    def __init__(
        self, config: Mapping[str, Any] | None = None, context: PluginRequestContext | None = None
    ) -> None:
        self.config: dict[str, Any] = dict(config or {})
        self.context = context

    def requested_capabilities(self, blocks: Any) -> RequestedCapabilities:
        """The capabilities the request's blocks ask for, checked against this plugin.

        Raises:
            UnsupportedCapabilityError: a capability is requested at a level not supported.
        """
        requested = RequestedCapabilities(self.supported_capabilities)
        requested.extract_from_blocks(blocks)
        return requested

    @abstractmethod
    def run(self, request: PluginRequest[IN]) -> Any:
        """The plugin's main work."""

    def _request_from_kwargs(self, kwargs: dict[str, Any]) -> PluginRequest[Any]:
        typ = self.input_type
        if typ is None:
            for base in getattr(type(self), "__orig_bases__", ()):
                args = get_args(base)
                if args:
                    typ = args[0]
                    break
        model = PluginRequest[typ] if typ is not None else PluginRequest[Any]  # type: ignore[valid-type]
        return model.model_validate(kwargs)

    def run_endpoint(self, **kwargs: Any) -> InvocableResponse[OUT]:
        """Serve ``run`` from raw keyword arguments (a JSON body), as the seed's endpoints."""
        result: InvocableResponse[OUT] = self.run(self._request_from_kwargs(kwargs))
        return result


def instantiate(
    name: str,
    plugin: PluginService[Any, Any] | type[PluginService[Any, Any]] | str,
    config: Mapping[str, Any] | None,
    kinds: tuple[type[Any], ...],
) -> PluginService[Any, Any]:
    """A named instance of ``plugin`` (an instance, a class, or ``"module:Class"``).

    A class is made with ``config`` and a context naming it ``name``; an instance without
    a context gets one.

    Raises:
        InvalidRequestError: ``plugin`` cannot be imported or is not one of ``kinds``.
    """
    target: Any = import_spec(plugin) if isinstance(plugin, str) else plugin
    if isinstance(target, type) and issubclass(target, kinds):
        instance: PluginService[Any, Any] = target(config=config, context=_context(name))
    elif isinstance(target, kinds) and isinstance(target, PluginService):
        instance = target
        if instance.context is None:
            instance.context = _context(name)
    else:
        names = " or ".join(k.__name__ for k in kinds)
        raise InvalidRequestError(f"{target!r} is not a {names}")
    return instance


def _context(name: str) -> PluginRequestContext:
    return PluginRequestContext(plugin_handle=name, plugin_instance_handle=name, plugin_instance_id=name)


def import_spec(spec: str) -> Any:
    """The object a ``"module:attr"`` string names. Raises InvalidRequestError."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise InvalidRequestError(f"{spec!r} is not of the form module:Class")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise InvalidRequestError(f"cannot load {spec!r}: {exc}") from exc
