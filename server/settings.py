"""``ServerSettings``: what a server is configured with (CLI flags and environment end up here).

A leaf of the server package: it imports no route and no app, so every module of the
server may read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streaming.runtime import RuntimeSettings

__all__ = ["ServerSettings"]


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
    #: deepest nesting of arrays and objects a JSON body or frame may have (400 too_deep)
    max_json_depth: int = 64
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
    #: ``all``: generations run in this process; ``api``: workers run them (a redis store)
    role: str = "all"
    #: most generations waiting in one generator's worker queue (role ``api``)
    queue_size: int = 1000
