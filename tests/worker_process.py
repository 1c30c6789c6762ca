"""A real ``streaming worker`` in a subprocess (worker-tier tests), and nginx in front of API processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.redis_server import free_port
from tests.server_process import ROOT, ServerProcess

__all__ = ["NginxProcess", "WorkerProcess", "wait_for_workers"]


class WorkerProcess(ServerProcess):
    """``python -m streaming.server.cli worker --store URL [args...]``; output to ``log``
    (``kill`` and ``stop`` as a server's)."""

    def __init__(self, log: Path, store: str, *args: str) -> None:
        self.log = log
        self.args = ["--store", store, *args]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> WorkerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMING_")}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        start = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streaming.server.cli", "worker", "--log-level", "warning", *self.args],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while b"ready" not in self.log.read_bytes()[start:]:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"worker did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


def wait_for_workers(api_url: str, count: int, timeout_s: float = 20.0) -> dict:  # type: ignore[type-arg]
    """``GET /healthz`` of an API process until it lists ``count`` live workers."""
    deadline = time.monotonic() + timeout_s
    while True:
        health = httpx.get(api_url + "/healthz", timeout=5).json()
        if len(health.get("workers", [])) == count:
            return health  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise RuntimeError(f"expected {count} workers, /healthz says {health}")
        time.sleep(0.1)


class NginxProcess:
    """Debian's nginx as our own child, with ``deploy/nginx.conf`` as is (its ports templated)."""

    def __init__(self, workdir: Path, upstreams: list[str]) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.upstreams = upstreams  # host:port of each API process
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> NginxProcess:
        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        template = (ROOT / "deploy" / "nginx.conf").read_text()
        servers = "\n".join(f"        server {u} max_fails=1 fail_timeout=2s;" for u in self.upstreams)
        conf = template.replace("        server 127.0.0.1:8001;\n        server 127.0.0.1:8002;", servers)
        conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{self.port};")
        conf = conf.replace("pid /run/streaming-nginx.pid;", f"pid {self.workdir}/nginx.pid;")
        path = self.workdir / "nginx.conf"
        path.write_text(conf)
        self.proc = subprocess.Popen(
            [exe, "-c", str(path), "-p", str(self.workdir), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=open(self.workdir / "stderr.log", "ab"),
        )
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nginx did not start: {(self.workdir / 'stderr.log').read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
