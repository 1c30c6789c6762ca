"""A real ``redis-server`` on a free loopback port, for tests (no mocks of Redis)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["RedisServer", "free_port"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """``redis-server`` bound to 127.0.0.1 on a free port (persistent only if ``durable``)."""

    def __init__(
        self, workdir: Path, port: int | None = None, *, durable: bool = False, password: str | None = None
    ) -> None:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.exe = exe
        self.workdir = workdir
        self.port = port or free_port()
        #: keep data across a restart (an append-only file synced on every write)
        self.durable = durable
        #: ``requirepass``: clients must AUTH first
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.exe,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "yes" if self.durable else "no",
                "--appendfsync", "always",
                "--dir", str(self.workdir),
                "--loglevel", "warning",
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    auth = f"AUTH {self.password}\r\n".encode() if self.password else b""
                    sock.sendall(auth + b"PING\r\n")
                    time.sleep(0.01)
                    if b"+PONG" in sock.recv(64):
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        """Stop (a clean shutdown) and start again on the same port and data."""
        self.stop()
        self.start()
