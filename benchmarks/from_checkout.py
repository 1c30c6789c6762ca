"""``python -m benchmarks.from_checkout DIR ARGS...``: the ``streaming`` command (``serve``,
...) as another checkout of this repository has it, e.g. ``git worktree add /tmp/base
HEAD~3``: for an A/B of two versions of the code (``benchmarks.paired --b-checkout``).

The packages are mapped to that checkout's directories as its ``pyproject.toml`` lays them
out (``streaming``, and ``[tool.setuptools.package-dir]``), ahead of whatever is installed;
the dependencies are this environment's.
"""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["install", "main", "package_dirs"]


def package_dirs(root: Path) -> dict[str, Path]:
    """Where the checkout ``root`` keeps each package: ``streaming``, and those its
    ``pyproject.toml`` maps apart (``[tool.setuptools.package-dir]``).

    Raises:
        ValueError: ``root`` is not a checkout of this repository (the message says why).
    """
    try:
        config = tomllib.loads((root / "pyproject.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{root} is not a checkout of this repository ({exc})") from exc
    dirs = {"streaming": root / "streaming"}
    for name, where in config.get("tool", {}).get("setuptools", {}).get("package-dir", {}).items():
        dirs[name] = root / where
    if not (dirs["streaming"] / "__init__.py").is_file():
        raise ValueError(f"{root} is not a checkout of this repository (no streaming/__init__.py)")
    return dirs


def install(root: Path) -> dict[str, Path]:
    """Import ``streaming`` (and the packages the checkout maps apart) from ``root``.
    Returns the mapping.

    Raises:
        SystemExit: ``root`` is not a checkout of this repository.
    """
    try:
        dirs = package_dirs(root)
    except ValueError as exc:
        raise SystemExit(f"from_checkout: {exc}") from exc

    class CheckoutFinder:
        @staticmethod
        def find_spec(fullname: str, path: Any = None, target: ModuleType | None = None) -> ModuleSpec | None:
            where = dirs.get(fullname)
            if where is None:
                return None  # (a submodule of a mapped package: found in its parent's path)
            return importlib.util.spec_from_file_location(
                fullname, where / "__init__.py", submodule_search_locations=[str(where)])

    sys.meta_path.insert(0, CheckoutFinder)
    return dirs


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m benchmarks.from_checkout DIR [streaming's arguments...]", file=sys.stderr)
        return 2
    install(Path(argv[0]).resolve())
    from streaming.server.cli import main as streaming_main

    return int(streaming_main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
