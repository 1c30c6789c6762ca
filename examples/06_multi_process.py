"""Two server processes sharing one Redis: start a generation on A, stream it from B.

    python examples/06_multi_process.py                          # starts redis-server itself
    python examples/06_multi_process.py redis://127.0.0.1:6379/0 # or uses yours

Both processes run ``streaming serve --store redis://...``. Everything a generation is made
of (its record, blocks, event log, control signals) lives in Redis, so any process can
stream it, resume it, cancel it or answer its tool calls, whichever process runs it.

Needs the ``redis`` package (``pip install -e '.[examples]'``) and ``redis-server`` on the
PATH (Debian: ``apt-get install redis-server``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import anyio
import httpx
from streaming.client import StreamingClient

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: object, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start")
        time.sleep(0.05)


@contextmanager
def redis_server() -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed (apt install redis-server), or pass a redis:// URL")
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        proc = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
            stdout=subprocess.DEVNULL,
        )

        def up() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    return sock.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        try:
            wait_until(up, "redis-server")
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait()


@contextmanager
def serve(store: str) -> Iterator[str]:
    """``streaming serve --store STORE`` on a free port, as its own process."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streaming.server.cli", "serve", "--port", str(port), "--store", store,
         "--log-level", "warning"],
        cwd=ROOT, env=env,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(up, f"server on port {port}")
        yield url
    finally:
        proc.terminate()
        proc.wait()


async def main(a: str, b: str) -> None:
    script = {"rounds": [[{"text": "Written by process A, read through process B. ", "chunk": 6},
                          {"sleep_ms": 200}, {"text": "Every event once, in order.", "chunk": 6}]]}
    async with StreamingClient(a) as on_a, StreamingClient(b) as on_b:
        gen = await on_a.generate("scripted", prompt="hi", options=script, on_disconnect="continue")
        print(f"started {gen.id} on A ({a})")
        from_b = await on_b.attach(gen.id)
        print(f"streaming it from B ({b}): ", end="", flush=True)
        async for block in from_b.blocks():
            async for text in block:
                print(text, end="", flush=True)
        print(f"\nstate seen by B: {from_b.state}, {len(from_b.events)} events")

        # Resume from the middle on B: the rest, with no gap and no duplicate.
        middle = len(from_b.events) // 2
        rest = [e async for e in on_b.iter_events(gen.id, after=middle)]
        print(f"resumed on B after seq {middle}: {len(rest)} events, ending with {rest[-1].type}")

        # Cancel through B a generation that A runs.
        forever = {"rounds": [[{"text": "about to wait", "chunk": 4}, {"sleep_ms": 600_000}]]}
        long = await on_a.generate("scripted", prompt="hi", options=forever, on_disconnect="continue")
        watching = await on_b.attach(long.id)
        async for event in watching:
            if event.type == "block.delta":
                break
        await on_b.cancel(long.id)
        await watching.wait()
        print(f"cancelled through B: {watching.state} ({watching.events[-1].type})")


if __name__ == "__main__":
    with ExitStack() as stack:
        store = sys.argv[1] if len(sys.argv) > 1 else stack.enter_context(redis_server())
        url_a = stack.enter_context(serve(store))
        url_b = stack.enter_context(serve(store))
        anyio.run(main, url_a, url_b)
