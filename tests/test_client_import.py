"""The Python client's import footprint: the wire module, httpx, anyio, websockets; never
the runtime, Starlette, pydantic or a store (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN_ROOTS = {"starlette", "pydantic", "pydantic_core", "uvicorn", "redis", "sqlite3", "prometheus_client"}


def modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, timeout=60,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_importing_the_client_loads_no_runtime_server_or_store() -> None:
    loaded = modules_after(
        "import streaming.client\n"
        "from streaming.client import StreamingClient, WebSocketClient\n"
        "assert StreamingClient and WebSocketClient"
    )
    ours = {m for m in loaded if m == "streaming" or m.startswith("streaming.")}
    assert ours == {
        "streaming", "streaming.wire", "streaming.events", "streaming.errors",
        "streaming.client", "streaming.client.client", "streaming.client.ws",
    }
    assert not {m.split(".")[0] for m in loaded} & FORBIDDEN_ROOTS
    assert {"httpx", "anyio", "websockets"} <= {m.split(".")[0] for m in loaded}


def test_the_wire_module_needs_only_the_standard_library() -> None:
    loaded = modules_after("import streaming.wire")
    ours = {m for m in loaded if m == "streaming" or m.startswith("streaming.")}
    assert ours == {"streaming", "streaming.wire", "streaming.events", "streaming.errors"}
    baseline = modules_after("pass")
    stdlib = set(sys.stdlib_module_names)
    foreign = {m for m in loaded - baseline - ours if m.split(".")[0] not in stdlib}
    assert not foreign, f"streaming.wire imports beyond the standard library: {sorted(foreign)}"
