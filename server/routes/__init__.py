"""All HTTP routes of the server (and the WebSocket route).

Route modules import the helper modules of the server (settings, context, auth, errors,
sse) and never the app; ``create_app`` imports this list.
"""

from __future__ import annotations

from starlette.routing import BaseRoute
from streaming.server import ws
from streaming.server.routes import (
    ai_sdk,
    blocks,
    files,
    generations,
    health,
    messages,
    openai,
    plugins,
    responses,
    static,
)

__all__ = ["routes"]


def routes() -> list[BaseRoute]:
    return [
        *generations.ROUTES,
        *blocks.ROUTES,
        *files.ROUTES,
        *health.ROUTES,
        *ws.ROUTES,
        *static.ROUTES,
        *openai.ROUTES,
        *responses.ROUTES,
        *messages.ROUTES,
        *ai_sdk.ROUTES,
        *plugins.ROUTES,
    ]
