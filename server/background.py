"""Run the server in a background thread on a free loopback port (examples, notebooks, tests)."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

import uvicorn
from streaming.server.app import ServerSettings, create_app

from streaming.tools import ToolRegistry

__all__ = ["BackgroundServer"]


class BackgroundServer:
    """``with BackgroundServer() as url: ...`` — a real uvicorn on 127.0.0.1:<free port>.

    Args:
        settings: server settings (memory store by default).
        tools: server-side tools.
        app: an ASGI app to serve instead of building one.
    """

    def __init__(
        self,
        settings: ServerSettings | None = None,
        *,
        tools: ToolRegistry | None = None,
        app: Any = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.app = app or create_app(settings or ServerSettings(), tools=tools)
        config = uvicorn.Config(self.app, host=host, port=0, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="streaming-server", daemon=True)
        self.url = ""

    def start(self, timeout_s: float = 10.0) -> str:
        """Start and return the base URL. Raises RuntimeError if it does not come up."""
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{self.server.config.host}:{port}"
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
