"""``streaming`` as a user meets it: version, help, a busy port, an unreachable store, the
startup line, and Ctrl-C (once: drain; twice: stop now, every stream told)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from streaming.server.cli import ENVIRONMENT, build_parser, redact_url

from tests.raw_ws import answer_offering_deflate
from tests.redis_server import RedisServer, free_port
from tests.server_process import ROOT, ServerProcess


def streaming(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streaming.server.cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )


def test_version() -> None:
    from importlib.metadata import version

    proc = streaming("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"streaming {version('streaming-runtime')}"


def test_help_shows_every_default_and_the_environment() -> None:
    proc = streaming("serve", "--help")
    assert proc.returncode == 0
    serve = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "serve")[1]  # type: ignore[union-attr]
    for action in serve._actions:
        if action.dest == "help":
            continue
        assert action.help, action.dest
    flags = [a.option_strings[-1] for a in serve._actions if a.option_strings and a.dest != "help"]
    options = " ".join(proc.stdout.split("environment variables")[0].split())
    assert options.count("default: ") == len(flags)
    for name in ENVIRONMENT:
        assert name in proc.stdout


def test_a_busy_port_is_a_message_and_nothing_is_announced() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        proc = streaming("serve", "--port", str(port), "--store", "memory://")
    assert proc.returncode == 2
    assert "already in use" in proc.stderr and "--port" in proc.stderr
    assert "serving on" not in proc.stdout and "Traceback" not in proc.stderr


def test_a_store_that_cannot_be_reached_is_a_message_without_its_password() -> None:
    proc = streaming("serve", "--port", str(free_port()), "--store", f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    assert proc.returncode == 2
    assert "unavailable" in proc.stderr and "Traceback" not in proc.stderr
    assert "hunter2" not in proc.stderr + proc.stdout


def test_a_bad_flag_value_is_a_message() -> None:
    proc = streaming("serve", "--port", "eighty")
    assert proc.returncode == 2 and "invalid int value" in proc.stderr and "Traceback" not in proc.stderr


def test_redact_url() -> None:
    assert redact_url("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert redact_url("redis://user:s3cret@host/0") == "redis://user:***@host/0"
    assert redact_url("sqlite:///data/x.db") == "sqlite:///data/x.db"
    assert redact_url("memory://") == "memory://"


def test_the_startup_line_comes_once_serving_and_hides_the_password(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path, password="hunter2").start()
    server = ServerProcess(tmp_path / "serve.log", store=f"redis://:hunter2@127.0.0.1:{redis.port}/0")
    try:
        server.start()
        banner = [line for line in server.log.read_text().splitlines() if "serving on" in line]
        assert banner == [
            f"streaming: serving on {server.url} (store redis://:***@127.0.0.1:{redis.port}/0); Ctrl-C stops"
        ]
        assert "hunter2" not in server.log.read_text()
    finally:
        server.kill()
        redis.stop()


def test_the_embedded_default_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "serve.log", "--data-dir", str(tmp_path / "data")).start()
    try:
        db = tmp_path / "data" / "streaming.db"
        assert f"(store sqlite:///{db});" in server.log.read_text()
        assert db.exists()
    finally:
        server.kill()


def test_websocket_compression_is_off_unless_asked_for(tmp_path: Path) -> None:
    """Token frames are small and many: by default the server declines the permessage-deflate
    a browser offers (its state would cost each socket ~50 KiB, each frame CPU);
    ``--ws-compression`` accepts it. Either way the stream is whole."""
    plain = ServerProcess(tmp_path / "plain.log", store="memory://").start()
    try:
        accepted, text = answer_offering_deflate(plain.url, "one two three", {"repeat": 50})
        assert accepted is None
        assert text == "one two three" * 50
    finally:
        plain.kill()
    compressed = ServerProcess(tmp_path / "deflate.log", "--ws-compression", store="memory://").start()
    try:
        accepted, text = answer_offering_deflate(compressed.url, "one two three", {"repeat": 50})
        assert accepted is not None and accepted.startswith("permessage-deflate")
        assert text == "one two three" * 50
    finally:
        compressed.kill()
