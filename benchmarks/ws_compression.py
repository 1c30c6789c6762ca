"""WebSocket compression as browsers ask for it: ``streaming serve`` with and without
``--ws-compression``, each driven by clients that offer permessage-deflate (as every browser
does), side by side in one run.

    python -m benchmarks.ws_compression [--streams 300] [--chunks 40] [--idle 500]

Printed per server: its CPU per chunk (from /proc) over ``--streams`` paced WebSocket
streams (echo, a chunk every 50 ms), and its resident memory per socket with ``--idle``
sockets open, each with a generation that waits before its next chunk. The clients are the
``websockets`` package's (the Python client people use), decompressing what they get; only
the server's CPU and memory are counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from benchmarks.procs import ServerProcess, free_port, rss_kib, tree_cpu_s


async def _generate(ws: ClientConnection, options: dict[str, Any], *, until: str) -> int:
    """Start an echo generation on ``ws``; read until a frame of type ``until`` (or the
    end); the deltas read."""
    await ws.send(json.dumps({"type": "generate", "generator": "echo", "prompt": "tok", "options": options}))
    deltas = 0
    while True:
        frame = json.loads(await ws.recv())
        kind = frame.get("type")
        if kind == "block.delta":
            deltas += 1
            if until == kind:
                return deltas
        elif kind in ("generation.completed", "generation.failed", "generation.cancelled", "error"):
            if kind != "generation.completed":
                raise RuntimeError(f"the generation ended {kind}: {frame}")
            return deltas


async def _connect(url: str, n: int) -> list[ClientConnection]:
    out: list[ClientConnection] = []
    for _ in range(n):
        out.append(await connect(url, compression="deflate", max_size=None, open_timeout=30))
    return out


async def measure(port: int, pid: int, streams: int, chunks: int, idle: int) -> dict[str, Any]:
    url = f"ws://127.0.0.1:{port}/ws"
    conns = await _connect(url, streams)
    accepted = conns[0].response.headers.get("Sec-WebSocket-Extensions") if conns[0].response else None
    before = tree_cpu_s([pid])
    got = await asyncio.gather(*(_generate(ws, {"repeat": chunks, "delay_ms": 50}, until="") for ws in conns))
    cpu_us = 1e6 * (tree_cpu_s([pid]) - before) / max(1, sum(got))
    for ws in conns:
        await ws.close()
    await asyncio.sleep(1.0)
    base = rss_kib(pid)
    waiting = await _connect(url, idle)
    # Each socket: a generation that has sent its first chunk and waits a minute for the next.
    await asyncio.gather(*(_generate(ws, {"repeat": 2, "delay_ms": 60_000}, until="block.delta") for ws in waiting))
    await asyncio.sleep(1.0)
    per_socket = (rss_kib(pid) - base) / max(1, idle)
    for ws in waiting:
        await ws.close()
    return {"extension": accepted, "cpu_us_per_chunk": cpu_us, "chunks": sum(got), "kib_per_socket": per_socket}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ws_compression", description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=300, help="paced WebSocket streams at once")
    parser.add_argument("--chunks", type=int, default=40, help="chunks each (one every 50 ms)")
    parser.add_argument("--idle", type=int, default=500, help="open sockets for the memory figure")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in (("serve (default)", []), ("serve --ws-compression", ["--ws-compression"])):
            port = free_port()
            argv_ = [sys.executable, "-m", "streaming.server.cli", "serve", "--store", "memory://",
                     "--port", str(port), "--log-level", "warning", *extra]
            with ServerProcess(argv_, port, name=name.replace(" ", "_"), log_dir=Path(tmp)) as server:
                figures = asyncio.run(measure(port, server.pid, args.streams, args.chunks, args.idle))
            rows.append((name, figures))
    print(f"WebSocket clients offering permessage-deflate; {args.streams} paced streams x {args.chunks} chunks, "
          f"{args.idle} open sockets")
    print(f"{'server':26} {'extension accepted':20} {'CPU us/chunk':>12} {'KiB/socket':>10}")
    for name, f in rows:
        accepted = (f["extension"] or "(none)").split(";")[0]
        print(f"{name:26} {accepted:20} {f['cpu_us_per_chunk']:12.1f} {f['kib_per_socket']:10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
