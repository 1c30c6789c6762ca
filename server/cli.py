"""The ``streaming`` command: ``streaming serve`` (and ``streaming chat``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from streaming.errors import StreamingError

__all__ = ["build_parser", "main"]

DEFAULT_STORE = os.environ.get("STREAMING_STORE", "")


def default_store_url(data_dir: str) -> str:
    """The embedded default: sqlite in ``data_dir`` where that store exists, else memory."""
    try:
        import streaming.stores.sqlite  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return "memory://"
    os.makedirs(data_dir, exist_ok=True)
    return f"sqlite:///{os.path.abspath(os.path.join(data_dir, 'streaming.db'))}"


def _pair(value: str) -> tuple[str, str]:
    name, sep, spec = value.partition("=")
    if not sep or not name or ":" not in spec:
        raise argparse.ArgumentTypeError(f"expected NAME=module:attr, got {value!r}")
    return name, spec


def _config(value: str) -> tuple[str, dict[str, Any]]:
    import json

    name, sep, text = value.partition("=")
    try:
        config = json.loads(text) if sep else None
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: not JSON: {exc}") from exc
    if not name or not isinstance(config, dict):
        raise argparse.ArgumentTypeError(f"expected NAME={{json object}}, got {value!r}")
    return name, config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streaming", description="Streaming generation runtime")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP/SSE/WebSocket server")
    serve.add_argument("--host", default=os.environ.get("STREAMING_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("STREAMING_PORT", "8000")))
    serve.add_argument("--store", default=DEFAULT_STORE, help="memory://, sqlite:///path or redis://host:port/db")
    serve.add_argument("--data-dir", default=os.environ.get("STREAMING_DATA_DIR", "./data"))
    serve.add_argument(
        "--generator", action="append", type=_pair, default=[], metavar="NAME=module:Class",
        help="register a generator plugin (repeatable)",
    )
    serve.add_argument(
        "--plugin", action="append", type=_pair, default=[], metavar="NAME=module:Class",
        help="host a plugin instance at /plugins/NAME/... (repeatable)",
    )
    serve.add_argument(
        "--plugin-config", action="append", type=_config, default=[], metavar="NAME=JSON",
        help="config of a plugin instance, a JSON object (repeatable)",
    )
    serve.add_argument(
        "--tool", action="append", type=_pair, default=[], metavar="NAME=module:function",
        help="register a server-side tool (repeatable)",
    )
    serve.add_argument("--heartbeat", type=float, default=15.0, help="seconds between SSE heartbeats")
    serve.add_argument("--disconnect-grace", type=float, default=5.0)
    serve.add_argument(
        "--live-retention", type=float, default=30.0,
        help="seconds a finished generation stays in memory before reads go to the store",
    )
    serve.add_argument("--no-coalesce", action="store_true", help="one event per chunk, always")
    serve.add_argument(
        "--shutdown-grace", type=float, default=float(os.environ.get("STREAMING_SHUTDOWN_GRACE", "10")),
        help="seconds running generations get to finish on SIGTERM before they are ended",
    )
    serve.add_argument(
        "--api-key", action="append", default=[], metavar="KEY",
        help="require this bearer key (repeatable; also STREAMING_API_KEYS, comma-separated)",
    )
    serve.add_argument(
        "--cors-origin", action="append", default=[], metavar="ORIGIN", help="allow this origin (repeatable)"
    )
    serve.add_argument("--log-level", default=os.environ.get("STREAMING_LOG_LEVEL", "info"))
    serve.add_argument(
        "--log-format", choices=["text", "json"], default=os.environ.get("STREAMING_LOG_FORMAT", "text"),
        help="json: one object per line, with generation_id as a field",
    )
    chat = sub.add_parser("chat", help="chat with a server in the terminal")
    chat.add_argument("url", nargs="?", default="http://127.0.0.1:8000")
    chat.add_argument("--generator", default="echo")
    return parser


def _serve(args: argparse.Namespace) -> int:
    import uvicorn
    from streaming.server.app import ServerSettings, create_app

    from streaming.plugin.service import import_spec
    from streaming.runtime import RuntimeSettings
    from streaming.tools import ToolRegistry

    tools = ToolRegistry()
    for name, spec in args.tool:
        tools.register(import_spec(spec), name=name)
    settings = ServerSettings(
        store_url=args.store or default_store_url(args.data_dir),
        generators=dict(args.generator),
        plugins=dict(args.plugin),
        plugin_config=dict(args.plugin_config),
        heartbeat_s=args.heartbeat,
        cors_origins=list(args.cors_origin),
        api_keys=[*args.api_key, *[k for k in os.environ.get("STREAMING_API_KEYS", "").split(",") if k]],
        token_secret=os.environ.get("STREAMING_TOKEN_SECRET") or None,
        runtime=RuntimeSettings(
            disconnect_grace_s=args.disconnect_grace,
            coalesce=not args.no_coalesce,
            shutdown_grace_s=args.shutdown_grace,
            live_retention_s=args.live_retention,
        ),
    )
    app = create_app(settings, tools=tools)
    from streaming.server.logs import configure_logging

    configure_logging(args.log_level, args.log_format)
    print(f"streaming: serving on http://{args.host}:{args.port} (store {settings.store_url})", flush=True)
    from uvicorn.config import LOGGING_CONFIG

    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        # Open streams end by themselves once the runtime has drained (below).
        timeout_graceful_shutdown=args.shutdown_grace + 10,
        # With JSON logs uvicorn's own loggers go through the same JSON handler.
        log_config=None if args.log_format == "json" else LOGGING_CONFIG,
    )
    _draining_server(config, app).run()
    return 0


def _draining_server(config: Any, app: Any) -> Any:
    """uvicorn, plus: on SIGTERM/SIGINT the runtime starts draining at once, so running
    generations finish (or end with a terminal event that says so) while their clients
    are still connected, instead of being cut when uvicorn's own timeout hits."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            loop = getattr(app.state, "loop", None)
            if loop is not None:
                loop.call_soon_threadsafe(app.state.runtime.begin_shutdown)
            super().handle_exit(sig, frame)

    return Server(config)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "chat":
            try:
                from streaming.client.chat import run_chat
            except ImportError:
                print("streaming chat: the terminal client is not installed", file=sys.stderr)
                return 2
            return int(run_chat(args.url, generator=args.generator))
    except StreamingError as exc:
        print(f"streaming: {exc.message}" + (f" ({exc.suggestion})" if exc.suggestion else ""), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
