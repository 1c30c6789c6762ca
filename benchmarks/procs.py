"""Real server processes on free loopback ports: start, wait until ready, measure, stop.

Also the benchmark's own virtualenv for LangServe (never a project dependency) and a
throw-away ``redis-server``.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "HERE",
    "ServerProcess",
    "SetupError",
    "free_port",
    "langserve_python",
    "raise_nofile",
    "rss_kib",
    "start_redis",
    "tree_cpu_s",
    "tree_pids",
    "tree_rss_kib",
]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = Path(os.environ.get("BENCH_VENV", HERE / ".venv"))
LANGSERVE_PACKAGES = ["langserve", "langchain-core", "fastapi", "sse-starlette", "uvicorn[standard]"]
LANGSERVE_IMPORTS = "import langserve, langchain_core, fastapi, sse_starlette, uvicorn, uvloop, httptools"


class SetupError(RuntimeError):
    """A server (or what it needs) could not be set up; the message says why."""


def raise_nofile() -> int:
    """Raise this process's open-file limit to its hard limit (10,000 sockets need it);
    children inherit it. Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB (``VmRSS`` of /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SetupError(f"no VmRSS for pid {pid}")


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (field 3 is index 0)."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return text[text.rindex(")") + 2 :].split()


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its live descendants (a server whose worker is a child process)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat(int(entry))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_cpu_s(pids: list[int]) -> float:
    """CPU seconds (utime + stime of /proc/<pid>/stat, every thread) used so far by ``pids``."""
    total = 0
    for p in pids:
        try:
            fields = _stat(p)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _CLK_TCK


def tree_rss_kib(pids: list[int]) -> int:
    """Resident memory of ``pids`` together, in KiB."""
    total = 0
    for p in pids:
        try:
            total += rss_kib(p)
        except (OSError, SetupError):
            continue
    return total


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SetupError(f"exited with {proc.returncode}: {_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SetupError(f"not listening after {timeout_s:g}s: {_tail(log)}")


def _tail(log: Path, n: int = 400) -> str:
    try:
        text = log.read_text(errors="replace").strip()
    except OSError:
        return ""
    return " ".join(text[-n:].split())


class ServerProcess:
    """One server as a child process on ``127.0.0.1:port``; a context manager."""

    def __init__(
        self, argv: Sequence[str], port: int, *, name: str, log_dir: Path, env: dict[str, str] | None = None,
        ready_timeout_s: float = 60.0,
    ) -> None:
        self.argv = list(argv)
        self.port = port
        self.name = name
        self.log = log_dir / f"{name}.log"
        self.env = env
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> ServerProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **(self.env or {})}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=ROOT, env=env, preexec_fn=raise_nofile,
            )
        try:
            _wait_port(self.port, self.proc, self.ready_timeout_s, self.log)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def langserve_python(*, install: bool = True, timeout_s: float = 600.0) -> str:
    """The Python of the benchmark's own virtualenv with LangServe in it, made on first use.

    Raises:
        SetupError: it cannot be created or LangServe cannot be installed (no network, ...).
    """
    python = VENV / "bin" / "python"
    if python.exists() and _imports_ok(python):
        return str(python)
    if not install:
        raise SetupError(f"no LangServe virtualenv at {VENV} (run without --no-install to make it)")
    log = VENV.parent / ".venv-install.log"
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True, timeout=120)
        with open(log, "wb") as out:
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", *LANGSERVE_PACKAGES],
                check=True, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s,
            )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        raise SetupError(f"LangServe could not be installed ({type(exc).__name__}); see {log}") from exc
    if not _imports_ok(python):
        raise SetupError(f"LangServe installed but does not import; see {log}")
    return str(python)


def _imports_ok(python: Path) -> bool:
    try:
        done = subprocess.run([str(python), "-c", LANGSERVE_IMPORTS], capture_output=True, timeout=60)
    except (subprocess.TimeoutExpired, OSError):
        return False
    return done.returncode == 0


def start_redis(log_dir: Path) -> ServerProcess:
    """A throw-away redis-server (no persistence) on a free port; enter it to start it.

    Raises:
        SetupError: no redis-server binary.
    """
    binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
    if binary is None:
        raise SetupError("redis-server is not installed")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--maxclients", "20000"]
    return ServerProcess(argv, port, name="redis-server", log_dir=log_dir)
