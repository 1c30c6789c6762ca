"""The server package imports one way: ``create_app`` (server/app.py) wires the routes; the
routes import helper modules (settings, context, auth, errors, sse, ...), never the app.

Read from the source (every import, also those inside functions), so a circle cannot hide
behind an import made late to dodge it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "server"
#: modules above the app: they start it
ABOVE_APP = {"streaming.server.cli", "streaming.server.background"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SERVER).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["streaming.server", *parts])


def server_modules() -> dict[str, Path]:
    return {module_name(p): p for p in SERVER.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The server modules ``path`` imports (``from streaming.server import ws`` is ws)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in known:
                found.add(node.module)
            for alias in node.names:
                if f"{node.module}.{alias.name}" in known:
                    found.add(f"{node.module}.{alias.name}")
    return found


def graph() -> dict[str, set[str]]:
    modules = server_modules()
    known = set(modules)
    return {name: imports_of(path, known) - {name} for name, path in modules.items()}


def test_the_walk_sees_the_wiring() -> None:
    edges = graph()
    assert "streaming.server.routes" in edges["streaming.server.app"]
    assert "streaming.server.ws" in edges["streaming.server.routes"]
    assert "streaming.server.context" in edges["streaming.server.routes.generations"]


def test_no_import_circle() -> None:
    edges = graph()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            pytest.fail("import circle: " + " -> ".join([*path[path.index(name) :], name]))
        if name in done:
            return
        for dep in sorted(edges[name]):
            # A package's __init__ importing its own submodules is how a package is built.
            if not dep.startswith(name + "."):
                visit(dep, [*path, name])
        done.add(name)

    for name in sorted(edges):
        visit(name, [])


def test_only_the_starters_import_the_app() -> None:
    edges = graph()
    importers = {name for name, deps in edges.items() if "streaming.server.app" in deps}
    assert importers <= ABOVE_APP, importers


def test_helper_modules_import_no_route() -> None:
    edges = graph()
    for helper in ("settings", "context", "errors", "auth", "sse", "frames", "watch"):
        deps = edges[f"streaming.server.{helper}"]
        assert not {d for d in deps if d.startswith("streaming.server.routes")}, (helper, deps)
        assert "streaming.server.app" not in deps


def test_the_app_still_exports_its_settings() -> None:
    from streaming.server.app import ServerSettings, create_app
    from streaming.server.settings import ServerSettings as Settings

    assert ServerSettings is Settings
    assert callable(create_app)
