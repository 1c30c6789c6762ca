"""Shared fixtures: a real uvicorn server on a free loopback port, and the anyio backend."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
import uvicorn
from streaming.server.app import ServerSettings, create_app
from streaming.server.direct import ServerSend

from streaming.runtime import GeneratorRegistry, Runtime, RuntimeSettings
from streaming.stores.base import Store
from streaming.tools import ToolRegistry
from tests.redis_server import RedisServer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A throw-away ``redis-server`` for the test module that asks for it."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


class LiveServer:
    """A real uvicorn serving our app in a background thread, bound to 127.0.0.1:0, as
    ``streaming serve`` serves it (the app under :class:`ServerSend`; WebSocket compression
    declined unless ``ws_per_message_deflate=True``)."""

    def __init__(self, app: Any, **config: Any) -> None:
        self.app = app
        config = {"ws_per_message_deflate": False, **config}
        cfg = uvicorn.Config(
            ServerSend(app), interface="asgi3", host="127.0.0.1", port=0, log_level="warning", lifespan="on", **config
        )
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        sock = self.server.servers[0].sockets[0]
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


@pytest.fixture
def make_server() -> Iterator[Callable[..., LiveServer]]:
    """``make_server(**runtime_settings)`` -> a started LiveServer (memory store)."""
    servers: list[LiveServer] = []

    def make(
        *,
        store_url: str = "memory://",
        tools: ToolRegistry | None = None,
        generators: dict[str, str] | None = None,
        heartbeat_s: float = 15.0,
        **runtime: Any,
    ) -> LiveServer:
        settings = ServerSettings(
            store_url=store_url,
            generators=generators or {},
            heartbeat_s=heartbeat_s,
            runtime=RuntimeSettings(**runtime),
        )
        live = LiveServer(create_app(settings, tools=tools)).start()
        servers.append(live)
        return live

    yield make
    for live in servers:
        live.stop()


@pytest.fixture
def server(make_server: Callable[..., LiveServer]) -> LiveServer:
    return make_server()


#: generators every in-process runtime of the tests has
IN_PROCESS_GENERATORS = {
    "echo": "streaming.generators.echo:EchoGenerator",
    "counting": "tests.plugins:CountingGenerator",
    "scripted": "streaming.generators.scripted:ScriptedGenerator",
}


@pytest.fixture
async def make_runtime() -> AsyncIterator[Callable[..., Any]]:
    """``await make_runtime(store=None, generators={name: plugin}, tools=None, **settings)``
    -> an entered in-process :class:`Runtime` (no server, no socket), closed after the test."""
    async with AsyncExitStack() as stack:

        async def make(
            store: Store | None = None,
            *,
            generators: dict[str, Any] | None = None,
            tools: ToolRegistry | None = None,
            **settings: Any,
        ) -> Runtime:
            registry = GeneratorRegistry()
            for name, plugin in {**IN_PROCESS_GENERATORS, **(generators or {})}.items():
                registry.register(name, plugin)
            runtime = Runtime(store, generators=registry, tools=tools, settings=RuntimeSettings(**settings))
            return await stack.enter_async_context(runtime)

        yield make
