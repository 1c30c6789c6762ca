"""Built-in generators, registered by name in :func:`builtin_generators`."""

from __future__ import annotations

from streaming.generators.echo import EchoGenerator
from streaming.generators.scripted import ScriptedGenerator

__all__ = ["BUILTIN", "EchoGenerator", "ScriptedGenerator"]

#: name -> "module:Class" of the generators every server offers.
BUILTIN: dict[str, str] = {
    "echo": "streaming.generators.echo:EchoGenerator",
    "scripted": "streaming.generators.scripted:ScriptedGenerator",
}
