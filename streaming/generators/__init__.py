"""Built-in generators, registered by name in :func:`builtin_generators`."""

from __future__ import annotations

import importlib.util

from streaming.generators.echo import EchoGenerator
from streaming.generators.scripted import ScriptedGenerator

__all__ = ["BUILTIN", "EchoGenerator", "ScriptedGenerator"]

#: name -> "module:Class" of the generators every server offers.
BUILTIN: dict[str, str] = {
    "echo": "streaming.generators.echo:EchoGenerator",
    "scripted": "streaming.generators.scripted:ScriptedGenerator",
    "openai": "streaming.generators.openai:OpenAIGenerator",
}

# The local model needs the ``local`` extra (llama-cpp-python); the core works without it.
# find_spec only looks: llama_cpp is imported when the model is first loaded.
if importlib.util.find_spec("llama_cpp") is not None:
    BUILTIN["smollm2"] = "streaming.generators.llama:LlamaGenerator"
