"""Generator plugins by name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streaming.errors import UnknownGeneratorError
from streaming.plugin.generator import Generator
from streaming.plugin.service import PluginService, instantiate
from streaming.plugin.streaming_generator import StreamingGenerator

__all__ = ["GeneratorRegistry"]


class GeneratorRegistry:
    """Generator plugins by name; one instance each, shared by its generations."""

    def __init__(self) -> None:
        self._plugins: dict[str, PluginService[Any, Any]] = {}

    def register(
        self,
        name: str,
        plugin: PluginService[Any, Any] | type[PluginService[Any, Any]] | str,
        config: Mapping[str, Any] | None = None,
    ) -> PluginService[Any, Any]:
        """Register ``plugin`` (an instance, a class, or ``"module:Class"``) as ``name``.

        Raises:
            InvalidRequestError: ``plugin`` cannot be imported or is not a generator.
        """
        instance = instantiate(name, plugin, config, (StreamingGenerator, Generator))
        self._plugins[name] = instance
        return instance

    def __contains__(self, name: object) -> bool:
        return name in self._plugins

    def __iter__(self) -> Any:
        return iter(self._plugins)

    def names(self) -> list[str]:
        return list(self._plugins)

    def get(self, name: str) -> PluginService[Any, Any]:
        """Raises UnknownGeneratorError if no generator has that name."""
        try:
            return self._plugins[name]
        except KeyError:
            raise UnknownGeneratorError(
                f"no generator named {name!r}",
                suggestion="registered generators: " + ", ".join(sorted(self._plugins)),
            ) from None
