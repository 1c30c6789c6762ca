"""The Starlette application: ``create_app(settings)``.

The app owns a :class:`~streaming.runtime.Runtime` for its lifespan. Routes only move
requests and events between sockets and the runtime; they never reach into its internals.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.routing import BaseRoute
from streaming.server.errors import EXCEPTION_HANDLERS, validation_error

from streaming.errors import MalformedRequestError, PayloadTooLargeError
from streaming.generators import BUILTIN
from streaming.runtime import GeneratorRegistry, Runtime, RuntimeSettings
from streaming.stores import open_store
from streaming.tools import ToolRegistry

__all__ = ["ServerSettings", "create_app", "read_json", "runtime_of"]


@dataclass
class ServerSettings:
    """What a server is configured with (CLI flags and environment end up here)."""

    store_url: str = "memory://"
    #: extra generators, name -> "module:Class" (the built-ins are always there)
    generators: dict[str, str] = field(default_factory=dict)
    generator_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: extra plugin instances, name -> "module:Class" (the built-ins are always there)
    plugins: dict[str, str] = field(default_factory=dict)
    #: config of plugin instances, by name
    plugin_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    heartbeat_s: float = 15.0
    #: a client that takes longer than this to accept one write is dropped
    send_timeout_s: float = 30.0
    max_body_bytes: int = 1 << 20
    #: largest WebSocket frame accepted (None: ``max_body_bytes``); uvicorn's own
    #: ``ws_max_size`` (16 MiB) closes the socket above that
    ws_max_frame_bytes: int | None = None
    #: origins allowed by CORS (empty: CORS off)
    cors_origins: list[str] = field(default_factory=list)
    #: API keys; empty: no auth (see server/auth.py)
    api_keys: list[str] = field(default_factory=list)
    #: signs read tokens; default derived from the keys (same keys, same tokens everywhere)
    token_secret: str | None = None
    #: seconds a signed block content URL stays valid
    signed_url_ttl_s: float = 3600.0
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)


def runtime_of(request: Any) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def settings_of(request: Any) -> ServerSettings:
    settings: ServerSettings = request.app.state.settings
    return settings


async def read_json(request: Request, model: type[BaseModel] | None = None) -> Any:
    """The body as JSON (validated into ``model`` if given).

    Raises:
        PayloadTooLargeError: the body is over the server's limit.
        MalformedRequestError: it is not JSON.
        InvalidRequestError: it does not fit ``model``.
    """
    limit = settings_of(request).max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"the body is over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLargeError(f"the body is over {limit} bytes")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedRequestError(
            f"the body is not valid JSON: {exc}", suggestion="send a JSON object"
        ) from exc
    if model is None:
        return data
    if not isinstance(data, dict):
        raise MalformedRequestError("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from exc


def create_app(
    settings: ServerSettings | None = None,
    *,
    runtime: Runtime | None = None,
    tools: ToolRegistry | None = None,
    extra_routes: list[BaseRoute] | None = None,
) -> Starlette:
    """Build the ASGI app. Pass ``runtime`` to share one you built (e.g. in tests)."""
    from streaming.server.routes import routes

    settings = settings or ServerSettings()
    if runtime is None:
        registry = GeneratorRegistry()
        specs: Mapping[str, str] = {**BUILTIN, **settings.generators}
        for name, spec in specs.items():
            registry.register(name, spec, settings.generator_config.get(name))
        runtime = Runtime(
            open_store(settings.store_url),
            generators=registry,
            tools=tools,
            settings=settings.runtime,
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with runtime:
            # The CLI's signal handler drains through this loop (see server.cli).
            app.state.loop = asyncio.get_running_loop()
            yield

    from streaming.server import metrics, openapi
    from streaming.server.auth import AuthConfig, AuthMiddleware

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
    from streaming.server.routes.plugins import build_host

    app.state.plugins = build_host(settings, runtime)
    app.state.settings = settings
    return app
