"""A real ``streaming serve`` in a subprocess on a free loopback port (restart, multi-process tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.redis_server import free_port

__all__ = ["ServerProcess", "server_pair"]

ROOT = Path(__file__).resolve().parent.parent


class ServerProcess:
    """``python -m server.cli serve --port P [--store URL] [args...]``; its output goes to ``log``."""

    def __init__(self, log: Path, *args: str, store: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.args = [*args] + (["--store", store] if store else [])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> ServerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMING_")}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streaming.server.cli", "serve", "--port", str(self.port),
                 "--log-level", "warning", *self.args],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"server did not become healthy: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def server_pair(log_dir: Path, store: str, *args: str) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two servers ``(a, b)`` on one ``store`` (logs ``a.log``, ``b.log``), killed on exit."""
    a = ServerProcess(log_dir / "a.log", *args, store=store).start()
    b = ServerProcess(log_dir / "b.log", *args, store=store)
    try:
        b.start()
        yield a, b
    finally:
        a.kill()
        b.kill()
