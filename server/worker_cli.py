"""``streaming worker``: runs generations taken from the Redis queue; serves no HTTP.

    streaming worker --store redis://host:6379/0 [--generator NAME=module:Class ...] [--concurrency N]

It hosts the built-in generators plus its ``--generator``s, announces them, and runs at most
``--concurrency`` generations at once, queued by ``streaming serve --role api`` processes
on the same Redis. SIGTERM (or Ctrl-C) stops taking work and gives the running generations
``--shutdown-grace`` seconds; a second one ends them at once (each with a terminal event).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["add_worker_parser", "run_worker"]


def add_worker_parser(
    sub: Any, formatter: type[argparse.HelpFormatter], pair: Callable[[str], tuple[str, str]],
    add_process_flags: Callable[[argparse.ArgumentParser], None],
) -> None:
    """The ``worker`` command; ``add_process_flags`` adds the flags it shares with ``serve``."""
    worker = sub.add_parser(
        "worker", help="run generations taken from a Redis queue (no HTTP)", formatter_class=formatter,
        description="Run generations queued by `streaming serve --role api` processes sharing a Redis store.",
    )
    worker.add_argument(
        "--store", default=os.environ.get("STREAMING_STORE", ""),
        help="the redis store URL shared with the API processes (redis://host:port/db?lease=10)",
    )
    worker.add_argument(
        "--generator", action="append", type=pair, default=[], metavar="NAME=module:Class",
        help="host a generator plugin besides the built-ins (repeatable)%(default).0s",
    )
    worker.add_argument("--concurrency", type=int, default=16, help="most generations running here at once")
    worker.add_argument(
        "--disconnect-grace", type=float, default=5.0,
        help="seconds a generation with on_disconnect=cancel may have no subscriber anywhere",
    )
    add_process_flags(worker)


def run_worker(args: argparse.Namespace) -> int:
    from streaming.server.logs import configure_logging, redact

    if not args.store.startswith(("redis://", "rediss://", "unix://")):
        print("streaming worker: --store must be a redis URL shared with the API processes", file=sys.stderr)
        return 2
    configure_logging(args.log_level, args.log_format)
    try:
        return asyncio.run(_main(args, redact(args.store)))
    except KeyboardInterrupt:
        return 130


async def _main(args: argparse.Namespace, shown_url: str) -> int:
    from streaming.generators import BUILTIN
    from streaming.plugin.service import import_spec
    from streaming.runtime import GeneratorRegistry, Runtime, RuntimeSettings
    from streaming.runtime.worker import Worker
    from streaming.stores.redis_queue import RedisQueue, WorkerStore
    from streaming.tools import ToolRegistry

    registry = GeneratorRegistry()
    for name, spec in {**BUILTIN, **dict(args.generator)}.items():
        registry.register(name, spec)
    tools = ToolRegistry()
    for name, spec in args.tool:
        tools.register(import_spec(spec), name=name)
    settings = RuntimeSettings(disconnect_grace_s=args.disconnect_grace, shutdown_grace_s=args.shutdown_grace)
    runtime = Runtime(WorkerStore(args.store), generators=registry, tools=tools, settings=settings)
    async with runtime:
        worker = Worker(runtime, RedisQueue(runtime.store), concurrency=args.concurrency)  # type: ignore[arg-type]
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal() -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                print(f"streaming worker: stopping: waiting up to {args.shutdown_grace:g} s for "
                      f"{len(worker.active)} running", file=sys.stderr, flush=True)
                worker.stop()
                runtime.begin_shutdown()
            else:
                runtime.stop_now()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        print(
            f"streaming: worker {runtime.store.owner} ready (store {shown_url}; generators "  # type: ignore[attr-defined]
            f"{', '.join(registry.names())}; concurrency {worker.concurrency})",
            flush=True,
        )
        try:
            await worker.run()
        finally:
            try:
                await worker.queue.withdraw()
            except Exception:  # noqa: BLE001 - its lease lapses anyway
                pass
    return 0
