"""The Starlette application: ``create_app(settings)``, the wiring of the server.

The app owns a :class:`~streaming.runtime.Runtime` for its lifespan. Routes only move
requests and events between sockets and the runtime; they never reach into its internals.

Imports go one way: this module imports the routes; routes import the helper modules
(:mod:`~streaming.server.settings`, :mod:`~streaming.server.context`, ...) and never this
one. ``ServerSettings``, ``read_json`` and ``runtime_of`` are re-exported here for callers
that import them from the app.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute
from streaming.server import metrics, openapi
from streaming.server.auth import AuthConfig, AuthMiddleware
from streaming.server.context import read_json, runtime_of, settings_of
from streaming.server.errors import EXCEPTION_HANDLERS
from streaming.server.routes import routes
from streaming.server.routes.plugins import build_host
from streaming.server.settings import ServerSettings

from streaming.generators import BUILTIN
from streaming.runtime import GeneratorRegistry, Runtime
from streaming.stores import open_store
from streaming.tools import ToolRegistry

__all__ = ["ServerSettings", "create_app", "read_json", "runtime_of", "settings_of"]


def create_app(
    settings: ServerSettings | None = None,
    *,
    runtime: Runtime | None = None,
    tools: ToolRegistry | None = None,
    extra_routes: list[BaseRoute] | None = None,
) -> Starlette:
    """Build the ASGI app. Pass ``runtime`` to share one you built (e.g. in tests)."""
    settings = settings or ServerSettings()
    if runtime is None:
        store = open_store(settings.store_url)
        dispatch = None
        if settings.role == "api":  # workers run the generations; it knows them by their announcements
            from streaming.runtime.queue import AnnouncedGenerators, api_dispatch

            dispatch = api_dispatch(store, settings.queue_size)
            registry: GeneratorRegistry = AnnouncedGenerators(dispatch)
        else:
            registry = GeneratorRegistry()
            specs: Mapping[str, str] = {**BUILTIN, **settings.generators}
            for name, spec in specs.items():
                registry.register(name, spec, settings.generator_config.get(name))
        runtime = Runtime(
            store,
            generators=registry,
            tools=tools,
            settings=settings.runtime,
        )
        runtime.dispatch = dispatch

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with runtime:
            # The CLI's signal handler drains through this loop (see server.cli).
            app.state.loop = asyncio.get_running_loop()
            watch = asyncio.create_task(runtime.dispatch.watch()) if runtime.dispatch is not None else None
            try:
                yield
            finally:
                if watch is not None:
                    watch.cancel()

    auth = AuthConfig(settings.api_keys, settings.token_secret)
    middleware = []
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "Accept"],
                expose_headers=["Location"],
            )
        )
    middleware.append(Middleware(AuthMiddleware, config=auth))
    app = Starlette(
        routes=routes() + metrics.ROUTES + openapi.ROUTES + list(extra_routes or []),
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
        middleware=middleware,
    )
    app.state.auth = auth
    app.state.runtime = runtime
    app.state.plugins = build_host(settings, runtime)
    app.state.settings = settings
    return app
