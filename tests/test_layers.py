"""The import layering of the package, read from the source (module- and function-level imports).

Layers, lowest first: **core** (the sans-I/O modules: data model, events, errors, the wire
module, lifecycle, log, capabilities, the plugin vocabulary, request bodies, the pure
decisions and projections) < **runtime** (the runtime, stores, generators, built-in plugins,
the plugin host, server-side tools) < **server** (``server/``, installed as
``streaming.server``). A module imports its own layer or lower ones only, and no two modules
import each other, directly or through others.

The clients (``clients/``, installed as ``streaming.client``) stand beside the server: of the
package they import only :mod:`streaming.wire` (which imports only ``streaming.events`` and
``streaming.errors``) and each other, and of the rest only the standard library, httpx,
anyio and websockets. Core and runtime never import a client; the server may (it serves
the client's files).

Every module must be placed in a layer below, so a new one is placed on purpose.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: repository folder -> installed package name
FOLDERS = {"streaming": "streaming", "server": "streaming.server", "clients": "streaming.client"}

CORE, RUNTIME, SERVER, CLIENT = "core", "runtime", "server", "client"
RANK = {CORE: 0, RUNTIME: 1, SERVER: 2}

#: module (or package, with everything under it) -> layer; the longest match wins
LAYERS: dict[str, str] = {
    "streaming": CORE,  # the package's __init__: imports its names lazily
    "streaming.model": CORE,
    "streaming.events": CORE,
    "streaming.errors": CORE,
    "streaming.wire": CORE,
    "streaming.lifecycle": CORE,
    "streaming.log": CORE,
    "streaming.capabilities": CORE,
    "streaming.plugin": CORE,
    "streaming.requests": CORE,
    "streaming.metrics": CORE,
    # decisions and projections: pure functions of events and requests
    "streaming.outcome": CORE,
    "streaming.routing": CORE,
    "streaming.history": CORE,
    "streaming.capability_block": CORE,
    "streaming.readiness": CORE,
    "streaming.dialects": CORE,
    "streaming.runtime": RUNTIME,
    "streaming.tasks": RUNTIME,  # task ownership for the runtime and the stores
    "streaming.stores": RUNTIME,
    # Checkpoint keys, the archive interface and the in-memory archives: pure, used by the
    # trainable plugin base classes; the stores' own archives build on it.
    "streaming.stores.archives": CORE,
    "streaming.generators": RUNTIME,
    "streaming.builtins": RUNTIME,
    "streaming.plugin_host": RUNTIME,
    "streaming.tools": RUNTIME,
    "streaming.server": SERVER,
    "streaming.client": CLIENT,
}

#: what a client may import of the package besides the other client modules
CLIENT_MAY_IMPORT = {"streaming.wire"}
#: and of everything else, besides the standard library
CLIENT_THIRD_PARTY = {"httpx", "anyio", "websockets"}
#: what the wire module may import of the package
WIRE_MAY_IMPORT = {"streaming.events", "streaming.errors"}


def module_files() -> dict[str, Path]:
    """Every module of the three folders, by its installed name."""
    out: dict[str, Path] = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([package, *parts])] = path
    return out


MODULES = module_files()


def layer_of(module: str) -> str | None:
    best = None
    for prefix in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best)):
            best = prefix
    return LAYERS[best] if best is not None else None


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that runs (not those under ``if TYPE_CHECKING:``)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _type_checking_only(node):
            yield from _imports(ast.Module(body=node.orelse, type_ignores=[]))
        else:
            yield from _imports(node)


def imported_names(module: str, path: Path) -> set[str]:
    """The absolute names ``module`` imports: a module where one is named, else its package."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    out: set[str] = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            candidate = f"{base}.{alias.name}"
            out.add(candidate if candidate in MODULES else base)
    return out


GRAPH: dict[str, set[str]] = {m: imported_names(m, p) for m, p in MODULES.items()}


def internal(names: set[str]) -> set[str]:
    return {n for n in names if n in MODULES}


def cycles() -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(internal(GRAPH[node]) - {node}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in MODULES if layer_of(m) is None]
    assert not unplaced, f"place these modules in LAYERS: {unplaced}"


def test_no_import_cycles() -> None:
    found = cycles()
    assert not found, "modules that import each other:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_layer_imports_a_higher_one() -> None:
    upward = []
    for module, names in GRAPH.items():
        mine = layer_of(module)
        for name in sorted(internal(names)):
            theirs = layer_of(name)
            if mine == CLIENT or mine is None or theirs is None:
                continue
            if theirs == CLIENT:
                if mine != SERVER:
                    upward.append(f"{module} ({mine}) imports {name} (client)")
            elif RANK[theirs] > RANK[mine]:
                upward.append(f"{module} ({mine}) imports {name} ({theirs})")
    assert not upward, "\n".join(upward)


def test_clients_import_only_the_wire_module() -> None:
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    wrong = []
    for module, names in GRAPH.items():
        if layer_of(module) != CLIENT:
            continue
        for name in sorted(names):
            root = name.split(".")[0]
            if name in MODULES:
                if layer_of(name) != CLIENT and name not in CLIENT_MAY_IMPORT:
                    wrong.append(f"{module} imports {name}")
            elif root == "streaming" or root not in stdlib | CLIENT_THIRD_PARTY:
                wrong.append(f"{module} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_the_wire_module_stands_on_the_standard_library() -> None:
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for module in ("streaming.wire", *WIRE_MAY_IMPORT):
        ours = internal(GRAPH[module])
        assert ours <= WIRE_MAY_IMPORT | {"streaming"}, f"{module} imports {ours}"
        foreign = {n for n in GRAPH[module] if n not in MODULES and n.split(".")[0] not in stdlib}
        assert not foreign, f"{module} imports {foreign}"


def test_the_walk_finds_what_it_should(tmp_path: Path) -> None:
    """The walker itself: relative, function-level and TYPE_CHECKING imports."""
    source = tmp_path / "__init__.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import wire\n"
        "from .errors import StreamingError\n"
        "def later():\n"
        "    import streaming.log\n"
        "    from streaming.stores import open_store\n"
        "if TYPE_CHECKING:\n"
        "    from streaming.runtime import Runtime\n"
        "else:\n"
        "    from streaming.model import Block\n"
    )
    assert imported_names("streaming", source) == {
        "typing", "streaming.wire", "streaming.errors", "streaming.log", "streaming.stores", "streaming.model",
    }
    assert "streaming.wire" in GRAPH["streaming.client.client"]
    # streaming/__init__ names the runtime only under TYPE_CHECKING (and lazily by string)
    assert not internal(GRAPH["streaming"])
    assert layer_of("streaming.runtime.facade") == RUNTIME and layer_of("streaming.server.routes.blocks") == SERVER
