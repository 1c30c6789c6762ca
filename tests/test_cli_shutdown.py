"""Ctrl-C on ``streaming serve``: once drains, twice stops now, and every stream is told."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.server_process import ServerProcess


def _follow(url: str, body: dict[str, Any], events: list[dict[str, Any]]) -> None:
    with httpx.stream("POST", f"{url}/generations", json=body,
                      headers={"Accept": "text/event-stream"}, timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))


def test_ctrl_c_once_drains_twice_stops_now_and_every_stream_is_told(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "serve.log", "--shutdown-grace", "60", store="memory://").start()
    assert server.proc is not None
    events: list[dict[str, Any]] = []
    slow = {"generator": "echo", "prompt": "a b c d e f g h i j", "options": {"delay_ms": 1000}}
    reader = threading.Thread(target=_follow, args=(server.url, slow, events))
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not any(e["type"] == "block.delta" for e in events):
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.05)
        server.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 30
        while "waiting up to 60 s for 1 running generation" not in server.log.read_text():
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.05)
        assert server.proc.poll() is None  # still draining: the generation has 60 s
        server.proc.send_signal(signal.SIGINT)
        server.proc.wait(timeout=15)
        reader.join(timeout=15)
    finally:
        server.kill()
    log = server.log.read_text()
    assert "stopping now" in log and "Traceback" not in log, log
    # The stream was ended by the server, with a terminal event that says why.
    assert events[-1]["type"] == "generation.failed" and events[-1]["error"]["code"] == "shutdown", events[-3:]
