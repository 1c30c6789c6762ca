"""One stream through each wire dialect beside the native route: chunks/s.

Every dialect is a projection of the same event log, streamed by the same pump, so a
dialect should cost little more per chunk than the native stream (goal: at least 0.8x
native's chunks/s). Each route streams echo's ``repeat`` chunks of ``"tok "``; the time is
from the request's first byte sent to the end of the response (``Connection: close``), so
the figure does not depend on how a dialect frames or repeats the text.

    python -m benchmarks.dialects [--chunks N] [--runs K]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["GOAL", "ROUTES", "measure", "report"]

#: each dialect's chunks/s at least this share of the native route's
GOAL = 0.8


@dataclass(frozen=True)
class Route:
    name: str
    path: str
    body: Any


def _routes(chunks: int) -> list[Route]:
    options = {"repeat": chunks}
    user = [{"role": "user", "content": "tok "}]
    return [
        Route("native: POST /generations", "/generations",
              {"generator": "echo", "prompt": "tok ", "options": options}),
        Route("OpenAI chat: /v1/chat/completions", "/v1/chat/completions",
              {"model": "echo", "messages": user, "stream": True, "options": options}),
        Route("OpenAI Responses: /v1/responses", "/v1/responses",
              {"model": "echo", "input": "tok ", "stream": True, "options": options}),
        Route("Anthropic Messages: /v1/messages", "/v1/messages",
              {"model": "echo", "max_tokens": chunks * 4, "messages": user, "stream": True, "options": options}),
        Route("AI SDK UI stream: /api/chat", "/api/chat",
              {"id": "", "trigger": "submit-message", "model": "echo", "options": options,
               "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "tok "}]}]}),
    ]


ROUTES = [r.name for r in _routes(1)]


async def _one(port: int, route: Route) -> tuple[float, int]:
    """Seconds from sending the request to the end of the response, and the status."""
    body = dict(route.body)
    if "id" in body:
        body["id"] = uuid.uuid4().hex  # a chat of its own each time
    payload = json.dumps(body).encode()
    head = (
        f"POST {route.path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.perf_counter()
    writer.write(head + payload)
    first = await reader.readline()
    while await reader.read(1 << 16):
        pass
    elapsed = time.perf_counter() - started
    writer.close()
    return elapsed, int(first.split()[1])


async def measure(port: int, chunks: int, runs: int) -> dict[str, Any]:
    """Best of ``runs`` chunks/s per route (after one warm-up stream each).

    The routes take turns, one stream each a round: the server keeps every stream's
    events, so its heap grows from one stream to the next, and the collector's pauses
    (a scan of the middle generation: 40-65 ms, in a stream of about 100 ms) come every
    few streams; taken one route after another, the last routes met a larger heap and
    more of them than the first.
    """
    out: dict[str, Any] = {"chunks": chunks, "runs": runs, "routes": {}}
    routes = _routes(chunks)
    for route in routes:
        await _one(port, route)  # warm-up
    best = dict.fromkeys((route.name for route in routes), 0.0)
    for _ in range(runs):
        for route in routes:
            elapsed, status = await _one(port, route)
            if status not in (200, 201):
                raise RuntimeError(f"{route.path} answered {status}")
            best[route.name] = max(best[route.name], chunks / elapsed)
    out["routes"] = best
    native = out["routes"][ROUTES[0]]
    out["ratios"] = {name: value / native for name, value in out["routes"].items()}
    out["met"] = all(ratio >= GOAL for ratio in out["ratios"].values())
    return out


def report(data: dict[str, Any]) -> str:
    """The table of one run (``data`` from :func:`measure`)."""
    lines = [
        f"Dialects{data.get('label', '')}: one stream of {data['chunks']:,} chunks through each route "
        f"(best of {data['runs']}); goal: at least {GOAL}x native",
        "",
        f"{'route':<36} {'chunks/s':>10}  {'x native':>8}  goal",
        f"{'-' * 36} {'-' * 10}  {'-' * 8}  ----",
    ]
    for name, value in data["routes"].items():
        ratio = data["ratios"][name]
        goal = "" if name == ROUTES[0] else ("yes" if ratio >= GOAL else "NO")
        lines.append(f"{name:<36} {value:>10,.0f}  {ratio:>7.2f}x  {goal}")
    return "\n".join(lines)


def serve(argv: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    """``streaming serve`` on a free loopback port (memory store), once it answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "streaming.server.cli", "serve", "--store", "memory://", "--port", str(port),
         "--log-level", "warning", *argv],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("streaming serve did not come up")
        time.sleep(0.05)


#: the two servers measured: as shipped (deltas coalesce while a reader is behind), and
#: with every chunk its own event, where a projection's cost per event shows fully
VARIANTS = {"": [], ", --no-coalesce (one event per chunk)": ["--no-coalesce"]}


def run(chunks: int, runs: int) -> list[dict[str, Any]]:
    """:func:`measure` on a fresh server of each variant."""
    results = []
    for label, argv in VARIANTS.items():
        proc, port = serve(argv)
        try:
            data = asyncio.run(measure(port, chunks, runs))
        finally:
            proc.kill()
            proc.wait(10)
        data["label"] = label
        results.append(data)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dialects", description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=50_000, help="chunks of each stream")
    parser.add_argument("--runs", type=int, default=3, help="streams per route (the best counts)")
    args = parser.parse_args(argv)
    print("\n\n".join(report(data) for data in run(args.chunks, args.runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
