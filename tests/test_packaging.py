"""The distribution installs under one import name, ``streaming``: ``server/`` becomes
``streaming.server`` and ``clients/`` becomes ``streaming.client``. Every folder with an
``__init__.py`` must be listed in ``pyproject.toml`` or a wheel silently leaves it out."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"streaming": "streaming", "server": "streaming.server", "clients": "streaming.client"}


def _expected() -> set[str]:
    names = set()
    for folder, name in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            names.add(".".join([name, *rel.parts]))
    return names


def test_every_package_is_listed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(config["packages"]) == _expected()
    for name, folder in config["package-dir"].items():
        assert (ROOT / folder / "__init__.py").exists(), name


def test_installed_names_resolve_to_the_repository_folders() -> None:
    import streaming.client
    import streaming.server.routes

    assert Path(streaming.server.routes.__file__).parent == ROOT / "server" / "routes"
    assert Path(streaming.client.__file__).parent == ROOT / "clients"
