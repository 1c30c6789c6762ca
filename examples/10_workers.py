"""The worker tier: Redis, two API processes (behind nginx if it is installed), two workers.

    python examples/10_workers.py

``streaming serve --role api`` accepts, streams, resumes, cancels and answers tools, and runs
no generation; ``streaming worker`` runs them, taken from a Redis queue. The processes (see
docs/deploy.md for the Procfile):

    redis-server --appendonly yes
    streaming serve --role api --port 8001 --store redis://127.0.0.1:6379/0
    streaming serve --role api --port 8002 --store redis://127.0.0.1:6379/0
    streaming worker --store redis://127.0.0.1:6379/0 --concurrency 64     (twice)
    nginx -c deploy/nginx.conf                                              (port 8080)

Needs ``redis-server`` on the PATH (Debian: ``apt-get install redis-server``); nginx is
optional (``apt-get install nginx``): without it the example talks to the API processes
directly, and says so.
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import anyio
import httpx
from streaming.client import StreamingClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
_shared = importlib.import_module("06_multi_process")  # redis_server, free_port, wait_until
free_port, redis_server, wait_until = _shared.free_port, _shared.redis_server, _shared.wait_until


@contextmanager
def process(*args: str, ready: str | None = None, port: int | None = None) -> Iterator[None]:
    """``python -m streaming.server.cli ARGS``; ready once ``/healthz`` on ``port`` answers,
    or once its output says ``ready``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.NamedTemporaryFile("w+b", suffix=".log") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streaming.server.cli", *args, "--log-level", "warning"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

        def up() -> bool:
            if port is not None:
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
                except httpx.TransportError:
                    return False
            return ready is not None and ready.encode() in Path(log.name).read_bytes()

        try:
            wait_until(up, " ".join(args[:1]))
            yield
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


@contextmanager
def nginx(api_ports: list[int]) -> Iterator[str | None]:
    exe = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if exe is None:
        print("nginx is not installed: talking to the API processes directly")
        yield None
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        (Path(workdir) / "logs").mkdir()
        conf = (ROOT / "deploy" / "nginx.conf").read_text()
        conf = conf.replace("        server 127.0.0.1:8001;\n        server 127.0.0.1:8002;",
                            "\n".join(f"        server 127.0.0.1:{p};" for p in api_ports))
        conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{port};")
        conf = conf.replace("pid /run/streaming-nginx.pid;", f"pid {workdir}/nginx.pid;")
        (Path(workdir) / "nginx.conf").write_text(conf)
        proc = subprocess.Popen([exe, "-c", f"{workdir}/nginx.conf", "-p", workdir, "-g", "daemon off;"],
                                stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(url + "/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        try:
            wait_until(up, "nginx")
            print(f"nginx on {url} in front of both API processes")
            yield url
        finally:
            proc.send_signal(signal.SIGQUIT)
            proc.wait(timeout=10)


async def main(front: str, api_a: str, api_b: str) -> None:
    async with httpx.AsyncClient() as http:
        health = (await http.get(api_a + "/healthz")).json()
    print(f"live workers: {len(health['workers'])}, hosting {', '.join(health['workers'][0]['generators'])}")
    async with StreamingClient(front) as client, StreamingClient(api_b) as on_b:
        gen = await client.generate("echo", prompt="queued, taken by a worker, streamed through the API")
        print(f"201 state: {gen.state}")
        print("text:", await gen.text())
        # Ten at once: the two workers share them.
        gens = [await client.generate("echo", prompt=f"stream number {i}") for i in range(10)]
        texts = [await g.text() for g in gens]
        print(f"10 concurrent streams: {sum(t == f'stream number {i}' for i, t in enumerate(texts))} exact")
        # Cancel through the other API process a generation a worker runs.
        forever = {"rounds": [[{"text": "about to wait", "chunk": 4}, {"sleep_ms": 600_000}]]}
        long = await client.generate("scripted", prompt="hi", options=forever, on_disconnect="continue")
        async for event in long:
            if event.type == "block.delta":
                break
        await on_b.cancel(long.id)
        await long.wait()
        print(f"cancelled through API B: {long.state}")
    async with httpx.AsyncClient(base_url=front) as http:
        refused = await http.post("/generations", json={"generator": "nowhere", "prompt": "hi"})
    print(f"a generator no worker hosts: {refused.status_code} {refused.json()['error']['code']}")


if __name__ == "__main__":
    with ExitStack() as stack:
        store = stack.enter_context(redis_server())
        ports = [free_port(), free_port()]
        for port in ports:
            stack.enter_context(process("serve", "--role", "api", "--port", str(port), "--store", store, port=port))
        for _ in range(2):
            stack.enter_context(process("worker", "--store", store, "--concurrency", "16", ready="ready"))
        apis = [f"http://127.0.0.1:{p}" for p in ports]
        wait_until(lambda: len(httpx.get(apis[0] + "/healthz").json()["workers"]) == 2, "two workers")
        front = stack.enter_context(nginx(ports)) or apis[0]
        anyio.run(main, front, apis[0], apis[1])
