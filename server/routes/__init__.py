"""All HTTP routes of the server."""

from __future__ import annotations

from starlette.routing import BaseRoute


def routes() -> list[BaseRoute]:
    from streaming.server import ws
    from streaming.server.routes import blocks, files, generations, health, openai, plugins, static

    return [
        *generations.ROUTES,
        *blocks.ROUTES,
        *files.ROUTES,
        *health.ROUTES,
        *ws.ROUTES,
        *static.ROUTES,
        *openai.ROUTES,
        *plugins.ROUTES,
    ]
