"""No class in ``streaming/`` (and the server and client folders that install under it) grows
past a few hundred lines: a class that does become one is split into collaborators that
each hold one concept (as the stores and the runtime are)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: the most lines (``class`` line to its last line) any class may have
LIMIT = 400


def class_sizes() -> dict[str, int]:
    sizes: dict[str, int] = {}
    for folder in ("streaming", "server", "clients"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                    where = f"{path.relative_to(ROOT)}::{node.name}"
                    sizes[where] = node.end_lineno - node.lineno + 1
    return sizes


def test_no_class_is_over_the_limit() -> None:
    sizes = class_sizes()
    assert sizes, "no classes found: the walk is broken"
    too_big = {name: n for name, n in sizes.items() if n > LIMIT}
    assert not too_big, f"classes over {LIMIT} lines (split them into collaborators): {too_big}"


def test_the_split_stores_and_runtime_stay_thin() -> None:
    sizes = class_sizes()
    assert sizes["streaming/stores/redis.py::RedisStore"] <= 300
    assert sizes["streaming/stores/sqlite.py::SqliteStore"] <= 300
    assert sizes["streaming/runtime/facade.py::Runtime"] <= LIMIT
