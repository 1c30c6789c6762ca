"""This runtime's app under another HTTP server, for choosing the server by measurement.

``python -m benchmarks.servers.runtime_host --server granian|hypercorn|uvicorn --port P
--store URL [--no-coalesce]`` builds the same app ``streaming serve`` builds
(``streaming.server.app:create_app``, built-in generators, the given store) and runs it
under that server, in one worker (the process that is measured, or its child for
granian, whose worker is a process of its own: the harness sums the process tree).

The launcher puts the store in the environment and replaces itself (``os.execv``) with
the server's own command line, which calls :func:`create` of this module (a factory):

- granian: ``granian --interface asgi --loop uvloop --workers 1 --no-access-log
  --backpressure 100000`` (its Rust HTTP/1.1 and WebSocket stack, the ASGI interface; its
  default backpressure, backlog / workers, serves at most 2,048 requests at once here and
  leaves the rest of 10,000 idle streams waiting);
- hypercorn: ``hypercorn --worker-class uvloop --workers 0`` (h11 and wsproto, in this
  process);
- uvicorn: ``uvicorn --loop uvloop --http httptools`` (what ``streaming serve`` runs, for
  a check that this launcher costs nothing: the harness's ``uvicorn`` rows use
  ``streaming serve`` itself).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["create", "main", "server_argv"]

_ENV_STORE = "BENCH_RUNTIME_STORE"
_ENV_NO_COALESCE = "BENCH_RUNTIME_NO_COALESCE"


def create() -> Any:
    """The app, built from the environment the launcher set (an app factory)."""
    from streaming.server.app import ServerSettings, create_app

    from streaming.runtime import RuntimeSettings

    settings = ServerSettings(
        store_url=os.environ.get(_ENV_STORE, "memory://"),
        runtime=RuntimeSettings(coalesce=os.environ.get(_ENV_NO_COALESCE) != "1"),
    )
    return create_app(settings)



def server_argv(server: str, port: int) -> list[str]:
    target = "benchmarks.servers.runtime_host:create"
    host = "127.0.0.1"
    if server == "granian":
        return [sys.executable, "-m", "granian", "--interface", "asgi", "--host", host, "--port", str(port),
                "--loop", "uvloop", "--workers", "1", "--log-level", "warning", "--no-access-log",
                "--backlog", "2048", "--backpressure", "100000", "--factory", target]
    if server == "hypercorn":
        return [sys.executable, "-m", "hypercorn", "--bind", f"{host}:{port}", "--worker-class", "uvloop",
                "--workers", "0", "--log-level", "warning", "--backlog", "2048", target + "()"]
    if server == "uvicorn":
        return [sys.executable, "-m", "uvicorn", "--host", host, "--port", str(port), "--loop", "uvloop",
                "--http", "httptools", "--log-level", "warning", "--no-access-log", "--backlog", "2048", "--factory", target]
    raise SystemExit(f"unknown server {server!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.servers.runtime_host")
    parser.add_argument("--server", choices=["granian", "hypercorn", "uvicorn"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store", default="memory://")
    parser.add_argument("--no-coalesce", action="store_true")
    args = parser.parse_args(argv)
    os.environ[_ENV_STORE] = args.store
    os.environ[_ENV_NO_COALESCE] = "1" if args.no_coalesce else "0"
    command = server_argv(args.server, args.port)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
