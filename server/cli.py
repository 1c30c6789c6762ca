"""The ``streaming`` command: ``streaming serve`` (and ``streaming chat``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from streaming.errors import StreamingError

__all__ = ["build_parser", "main"]

#: Environment variables read by ``streaming serve``: each is the default of a flag, which
#: wins when given. Listed in ``streaming serve --help`` and the README.
ENVIRONMENT = {
    "STREAMING_HOST": "--host",
    "STREAMING_PORT": "--port",
    "STREAMING_STORE": "--store",
    "STREAMING_DATA_DIR": "--data-dir",
    "STREAMING_SHUTDOWN_GRACE": "--shutdown-grace",
    "STREAMING_LOG_LEVEL": "--log-level",
    "STREAMING_LOG_FORMAT": "--log-format",
    "STREAMING_API_KEYS": "--api-key (comma-separated, added to the flags)",
    "STREAMING_TOKEN_SECRET": "secret that signs read tokens and block URLs (default: derived from the API keys)",
    "STREAMING_MODEL_DIRS": "folders the local model may load GGUF files from",
    "STREAMING_IMPORT_DIRS": "folders the file importer may read",
}


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def version() -> str:
    """The installed distribution's version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("streaming-runtime")
    except PackageNotFoundError:
        return "unknown (not installed)"


def redact_url(url: str) -> str:
    """``url`` without a password (``redis://:secret@host`` -> ``redis://:***@host``)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


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


def add_process_flags(parser: argparse.ArgumentParser) -> None:
    """The flags ``serve`` and ``worker`` share: server-side tools, the shutdown grace and
    logging (each process that runs generations takes them alike)."""
    parser.add_argument(
        "--tool", action="append", type=_pair, default=[], metavar="NAME=module:function",
        help="register a server-side tool (repeatable; default: none)%(default).0s",
    )
    parser.add_argument(
        "--shutdown-grace", type=float, default=_env("STREAMING_SHUTDOWN_GRACE", "10"),
        help="seconds running generations get to finish on Ctrl-C or SIGTERM before they are ended",
    )
    parser.add_argument(
        "--log-level", default=_env("STREAMING_LOG_LEVEL", "info"),
        choices=["critical", "error", "warning", "info", "debug"], type=str.lower,
        help="how much to log",
    )
    parser.add_argument(
        "--log-format", choices=["text", "json"], default=_env("STREAMING_LOG_FORMAT", "text"),
        help="json: one object per line, with generation_id as a field",
    )


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help of every flag, and the epilog kept as written."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streaming",
        description="Streaming generation runtime: host generator plugins and stream their output.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{serve,worker,chat}")
    env_lines = "\n".join(f"  {name:<26} {what}" for name, what in ENVIRONMENT.items())
    serve = sub.add_parser(
        "serve",
        help="run the HTTP/SSE/WebSocket server",
        description="Run the server: SSE, WebSocket, REST and OpenAI-compatible routes, the demo page at /.",
        formatter_class=_HelpFormatter,
        epilog=f"environment variables (a flag given on the command line wins):\n{env_lines}",
    )
    serve.add_argument("--host", default=_env("STREAMING_HOST", "127.0.0.1"), help="interface to listen on")
    serve.add_argument("--port", type=int, default=_env("STREAMING_PORT", "8000"), help="TCP port to listen on")
    serve.add_argument(
        "--store", default=_env("STREAMING_STORE", ""),
        help="memory://, sqlite:///path or redis://[:password@]host:port/db "
        "(default: sqlite in --data-dir)%(default).0s",
    )
    serve.add_argument(
        "--data-dir", default=_env("STREAMING_DATA_DIR", "./data"),
        help="where the default sqlite store and plugin checkpoints live",
    )
    serve.add_argument(
        "--generator", action="append", type=_pair, default=[], metavar="NAME=module:Class",
        help="register a generator plugin (repeatable; default: none)%(default).0s",
    )
    serve.add_argument(
        "--plugin", action="append", type=_pair, default=[], metavar="NAME=module:Class",
        help="host a plugin instance at /plugins/NAME/... (repeatable; default: none)%(default).0s",
    )
    serve.add_argument(
        "--plugin-config", action="append", type=_config, default=[], metavar="NAME=JSON",
        help="config of a plugin instance, a JSON object (repeatable; default: none)%(default).0s",
    )
    serve.add_argument("--heartbeat", type=float, default=15.0, help="seconds between SSE heartbeat comments")
    serve.add_argument(
        "--role", choices=["all", "api"], default="all",
        help="all: run generations here; api: queue them for `streaming worker`s (a redis store)",
    )
    serve.add_argument("--queue-size", type=int, default=1000, help="most generations waiting per generator (role api)")
    serve.add_argument(
        "--disconnect-grace", type=float, default=5.0,
        help="seconds a generation with on_disconnect=cancel runs on after its last subscriber left",
    )
    serve.add_argument(
        "--live-retention", type=float, default=30.0,
        help="seconds a finished generation stays in memory before reads go to the store",
    )
    serve.add_argument("--no-coalesce", action="store_true", help="one event per chunk, always")
    serve.add_argument(
        "--ws-compression", action="store_true",
        help="accept WebSocket clients' permessage-deflate (off: each socket would hold ~50 KiB of "
        "compression state and each token frame cost ~10 us more CPU to compress)",
    )
    serve.add_argument(
        "--api-key", action="append", default=[], metavar="KEY",
        help="require this bearer key (repeatable; also STREAMING_API_KEYS; default: none, no auth)%(default).0s",
    )
    serve.add_argument(
        "--cors-origin", action="append", default=[], metavar="ORIGIN", help="allow this origin (repeatable; default: none)%(default).0s"
    )
    add_process_flags(serve)
    from streaming.server.worker_cli import add_worker_parser

    add_worker_parser(sub, _HelpFormatter, _pair, add_process_flags)
    chat = sub.add_parser(
        "chat", help="chat with a server in the terminal", formatter_class=_HelpFormatter,
        description="A terminal chat over the server's WebSocket: one conversation, tokens as they arrive.",
    )
    chat.add_argument("url", nargs="?", default="http://127.0.0.1:8000", help="the server's base URL")
    chat.add_argument("--generator", default="echo", help="the generator that answers")
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
        role=args.role,
        queue_size=args.queue_size,
        runtime=RuntimeSettings(
            disconnect_grace_s=args.disconnect_grace,
            coalesce=not args.no_coalesce,
            shutdown_grace_s=args.shutdown_grace,
            live_retention_s=args.live_retention,
        ),
    )
    _probe_store(settings.store_url)
    app = create_app(settings, tools=tools)
    from streaming.server.logs import configure_logging

    configure_logging(args.log_level, args.log_format)
    sock = _bind(args.host, args.port)
    if sock is None:
        return 2
    from streaming.server.direct import ServerSend
    from uvicorn.config import LOGGING_CONFIG

    config = uvicorn.Config(
        ServerSend(app),  # (SSE bodies written straight to the transport when they can be)
        interface="asgi3",
        log_level=args.log_level,
        # Browsers offer permessage-deflate on every WebSocket; token frames of a few hundred
        # bytes pay more in CPU and memory for it than they save (docs/benchmarks.md).
        ws_per_message_deflate=args.ws_compression,
        # Open streams end by themselves once the runtime has drained (below).
        timeout_graceful_shutdown=args.shutdown_grace + 10,
        # With JSON logs uvicorn's own loggers go through the same JSON handler.
        log_config=None if args.log_format == "json" else LOGGING_CONFIG,
    )
    _tune_gc()
    where = f"http://{args.host}:{sock.getsockname()[1]}"
    banner = f"streaming: serving on {where} (store {redact_url(settings.store_url)}); Ctrl-C stops"
    _draining_server(config, app, banner, args.shutdown_grace).run(sockets=[sock])
    return 0


def _tune_gc() -> None:
    """What is alive once the app is built (modules, schemas, the routes) lives as long as
    the process: freeze it out of the collector's scans, and collect the youngest
    generation less often. Streams allocate many short-lived objects per chunk, and
    collections of objects that never die were a sixth of the server's CPU under paced
    load (docs/benchmarks.md)."""
    import gc

    gc.collect()
    gc.freeze()
    threshold, *older = gc.get_threshold()
    gc.set_threshold(max(threshold, GC_THRESHOLD), *older)


#: allocations (net of frees) between two collections of the youngest generation
#: (CPython's default: 700). Paced, 1,000 streams: at 10,000 the collector took 1.9 us of a
#: chunk's CPU, with pauses of 3 ms (young) and 51 ms (middle generation); at 50,000,
#: 0.7 us, with pauses of 11 ms (docs/benchmarks.md)
GC_THRESHOLD = 50_000


def _probe_store(url: str) -> None:
    """Open and close the store once, so that one that cannot be reached is a message
    before the server starts rather than a traceback from inside it.

    Raises:
        StreamingError: the store cannot be opened (the URL, or the store itself).
    """
    import asyncio

    from streaming.stores import open_store

    async def probe() -> None:
        store = open_store(url)
        await store.open()
        await store.close()

    asyncio.run(probe())


def _bind(host: str, port: int) -> Any:
    """A listening socket on ``host:port``, or None after saying why not."""
    import errno
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(
                f"streaming: port {port} on {host} is already in use "
                f"(another server is running there?); pick another with --port",
                file=sys.stderr,
            )
        else:
            print(f"streaming: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return None
    sock.set_inheritable(True)
    return sock


def _draining_server(config: Any, app: Any, banner: str, grace_s: float) -> Any:
    """uvicorn, plus: "serving on" once the app has started on a bound port, and a
    shutdown that says what it does. The first Ctrl-C (or SIGTERM) stops accepting and
    gives running generations ``grace_s`` to finish while their clients are still
    connected; a second ends them at once, each with a terminal event its clients
    receive, and exits."""
    import signal

    import uvicorn

    class Server(uvicorn.Server):
        signals = 0

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                print(banner, flush=True)

        def handle_exit(self, sig: int, frame: Any) -> None:
            self.signals += 1
            loop = getattr(app.state, "loop", None)
            runtime = app.state.runtime
            running = runtime.running_count
            if self.signals == 1:
                what = f"{running} running generation{'s' if running != 1 else ''}"
                print(
                    f"streaming: shutting down: waiting up to {grace_s:g} s for {what} to finish "
                    "(Ctrl-C again to stop them now)" if running else "streaming: shutting down",
                    file=sys.stderr, flush=True,
                )
                if loop is not None:
                    loop.call_soon_threadsafe(runtime.begin_shutdown)
                self.should_exit = True
                return
            if self.signals == 2 and sig in (signal.SIGINT, signal.SIGTERM):
                print(f"streaming: stopping now ({running} running ended)", file=sys.stderr, flush=True)
                if loop is not None:
                    # Every running generation ends now with a terminal event; its stream
                    # sends it and closes, so uvicorn's own wait ends by itself. A moment
                    # later uvicorn stops waiting for anything left.
                    loop.call_soon_threadsafe(runtime.stop_now)
                    loop.call_soon_threadsafe(loop.call_later, 1.0, self._force)
                else:
                    self._force()
                return
            self._force()

        def _force(self) -> None:
            self.force_exit = True

    return Server(config)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "worker":
            from streaming.server.worker_cli import run_worker

            return run_worker(args)
        if args.command == "chat":
            try:
                from streaming.client.chat import run_chat
            except ImportError:
                print("streaming chat: the terminal client is not installed", file=sys.stderr)
                return 2
            return int(run_chat(args.url, generator=args.generator))
    except StreamingError as exc:
        from streaming.server.logs import redact  # a store's message may quote its URL

        print(redact(f"streaming: {exc.message}" + (f" ({exc.suggestion})" if exc.suggestion else "")), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
