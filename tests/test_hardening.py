"""Limits, slow consumers, graceful shutdown and metrics."""

from __future__ import annotations

import signal
import socket
import time

import anyio
import httpx
import pytest
from streaming.client.client import StreamingClient

from tests.invariants import check_invariants
from tests.procs import ServeProcess

pytestmark = pytest.mark.anyio

TEST_GENERATORS = {"counting": "tests.plugins:CountingGenerator"}


async def test_sigterm_drains_running_generations_with_terminal_events() -> None:
    server = ServeProcess(
        "--store", "memory://", "--shutdown-grace", "1.5",
        "--generator", "counting=tests.plugins:CountingGenerator",
    )
    try:
        async with StreamingClient(server.url) as client:
            short = await client.generate("counting", prompt="x", options={"key": "s1", "limit": 100, "delay_ms": 5})
            endless = await client.generate("counting", prompt="x", options={"key": "s2", "delay_ms": 5})
            results: dict[str, list] = {}

            async def follow(name: str, gen) -> None:
                results[name] = [ev async for ev in gen]

            async with anyio.create_task_group() as tg:
                tg.start_soon(follow, "short", short)
                tg.start_soon(follow, "endless", endless)
                await anyio.sleep(0.2)
                sent_at = time.monotonic()
                server.proc.send_signal(signal.SIGTERM)
        # Both clients were told how their generation ended, over their open streams.
        assert results["short"][-1].type == "generation.completed"
        assert results["endless"][-1].type == "generation.failed"
        assert results["endless"][-1].data["error"]["code"] == "shutdown"
        for events in results.values():
            check_invariants(events)
        await anyio.to_thread.run_sync(server.proc.wait, 20)
        # uvicorn re-raises the signal it handled once shutdown is complete.
        assert server.proc.returncode in (0, -signal.SIGTERM)
        assert time.monotonic() - sent_at < 1.5 + 10
    finally:
        server.stop()


async def test_paused_consumer_does_not_delay_another(make_server) -> None:
    srv = make_server(generators=TEST_GENERATORS, disconnect_grace_s=30)
    async with StreamingClient(srv.url) as client:
        text = "".join(f"word{i} " for i in range(3000))
        gen = await client.generate("echo", prompt=text, options={"delay_ms": 0.5}, on_disconnect="continue")
        # A raw subscriber that reads the headers and then stops reading for a while.
        sock = socket.create_connection(("127.0.0.1", srv.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(f"GET /generations/{gen.id}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        first = sock.recv(256)
        assert first.startswith(b"HTTP/1.1 200")
        try:
            # Meanwhile another consumer gets the whole stream.
            fast = await client.attach(gen.id)
            assert await fast.text() == text
            assert srv.runtime.metrics.generations["succeeded"] >= 1
            # The paused one can still read everything once it reads again.
            sock.settimeout(10)
            data = first
            while b"event: generation.completed" not in data:
                chunk = await anyio.to_thread.run_sync(sock.recv, 1 << 16)
                if not chunk:
                    break
                data += chunk
            assert b"event: generation.completed" in data
        finally:
            sock.close()


async def test_stuck_consumer_is_dropped_after_the_send_timeout(make_server) -> None:
    from streaming.server.app import ServerSettings, create_app

    from streaming.runtime import RuntimeSettings
    from tests.conftest import LiveServer

    app = create_app(ServerSettings(send_timeout_s=0.3, runtime=RuntimeSettings(disconnect_grace_s=30)))
    srv = LiveServer(app).start()
    try:
        async with StreamingClient(srv.url) as client:
            text = "x" * 200 + " "
            gen = await client.generate("echo", prompt=text, options={"repeat": 20000}, on_disconnect="continue")
            sock = socket.create_connection(("127.0.0.1", srv.port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(f"GET /generations/{gen.id}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            # Never read: the server drops this subscriber, and the generation goes on.
            done = await client.attach(gen.id)
            assert await done.text() == text * 20000
            with anyio.fail_after(10):
                while srv.runtime.stats().subscribers > 0:
                    await anyio.sleep(0.05)
            sock.close()
    finally:
        srv.stop()


async def test_a_reader_of_a_long_log_who_never_reads_is_dropped_and_reset(make_server) -> None:
    """A subscriber that asks for a long log (4 MB at once) and never reads: the catch-up
    goes out in pieces the server's flow control holds back, the send timeout drops the
    subscriber, and its connection is reset at once rather than closed after it reads
    (which it never does: the connection and its buffers would stay for good)."""
    from streaming.server.app import ServerSettings, create_app

    from tests.conftest import LiveServer

    srv = LiveServer(create_app(ServerSettings(send_timeout_s=0.3))).start()
    sock = socket.socket()
    try:
        async with StreamingClient(srv.url) as client:
            text = "x" * 200 + " "
            gen = await client.generate("echo", prompt=text, options={"repeat": 20000})
            assert await gen.text() == text * 20000  # the whole log is there to read
            connections = srv.server.server_state.connections
            before = set(connections)  # (the client's own)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", srv.port))
            sock.sendall(f"GET /generations/{gen.id}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            with anyio.fail_after(10):
                while not (stuck := set(connections) - before):
                    await anyio.sleep(0.02)
                while stuck & connections:  # dropped, and gone from the server
                    await anyio.sleep(0.05)
            assert srv.runtime.stats().subscribers == 0
            # The server carries on.
            again = await client.generate("echo", prompt="after ")
            assert await again.text() == "after "
    finally:
        sock.close()
        srv.stop()


async def test_a_raising_finish_listener_is_logged_and_the_server_carries_on(server, caplog) -> None:
    # What a finish listener raises must be seen, not lost (and it skips no cleanup:
    # tests/test_runtime_runner.py).
    def boom(what: str, generation: object) -> None:
        raise RuntimeError("listener bug")

    server.runtime.listeners.append(boom)
    async with StreamingClient(server.url) as client:
        gen = await client.generate("echo", prompt="a b ")
        assert await gen.text() == "a b "
        with anyio.fail_after(5):
            while not any("finish listener" in r.getMessage() for r in caplog.records):
                await anyio.sleep(0.02)
        crash = next(r for r in caplog.records if "finish listener" in r.getMessage())
        assert crash.exc_info is not None and "listener bug" in str(crash.exc_info[1])
        server.runtime.listeners.remove(boom)
        again = await client.generate("echo", prompt="c ")
        assert await again.text() == "c "


async def test_limits_answer_with_their_status(make_server) -> None:
    srv = make_server(generators=TEST_GENERATORS, max_running=2, max_subscribers_per_generation=1,
                      max_events_per_generation=50)
    async with httpx.AsyncClient(base_url=srv.url) as http:
        body = {"generator": "counting", "prompt": "x", "options": {"key": "lim", "delay_ms": 5},
                "on_disconnect": "continue"}
        a = (await http.post("/generations", json=body)).json()["generation"]["id"]
        b = (await http.post("/generations", json=body)).json()["generation"]["id"]
        r = await http.post("/generations", json=body)
        assert r.status_code == 429 and r.json()["error"]["code"] == "limit_exceeded"
        assert int(r.headers["retry-after"]) >= 1
        await http.post(f"/generations/{a}/cancel")
        # One subscriber per generation: a second one is refused with 429.
        async with http.stream("GET", f"/generations/{b}/events") as first:
            assert first.status_code == 200
            r = await http.get(f"/generations/{b}/events")
            assert r.status_code == 429
        await http.post(f"/generations/{b}/cancel")
        # The event-log limit fails the generation with a code, blocks aborted.
        r = await http.post("/generations", json={"generator": "echo", "prompt": "w " * 500,
                                                   "options": {"delay_ms": 1}})
        gen_id = r.json()["generation"]["id"]
        async with StreamingClient(srv.url) as client:
            events = [ev async for ev in await client.attach(gen_id)]
        assert events[-1].data["error"]["code"] == "max_events"
        check_invariants(events)


async def test_metrics_in_prometheus_format(server) -> None:
    async with StreamingClient(server.url) as client:
        await (await client.generate("echo", prompt="a b c")).text()
        async with httpx.AsyncClient(base_url=server.url) as http:
            r = await http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    body = r.text
    assert 'streaming_generations_finished_total{outcome="succeeded"} 1.0' in body
    assert "streaming_chunks_total 3.0" in body
    assert "streaming_time_to_first_delta_seconds_count 1.0" in body
    assert "streaming_generations_running 0.0" in body


async def test_cors_is_off_by_default_and_configurable(make_server) -> None:
    from streaming.server.app import ServerSettings, create_app

    from tests.conftest import LiveServer

    plain = make_server()
    async with httpx.AsyncClient() as http:
        r = await http.options(f"{plain.url}/generations", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in r.headers
    srv = LiveServer(create_app(ServerSettings(cors_origins=["https://app.example"]))).start()
    try:
        async with httpx.AsyncClient() as http:
            r = await http.options(f"{srv.url}/generations", headers={
                "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
            assert r.headers["access-control-allow-origin"] == "https://app.example"
    finally:
        srv.stop()


async def test_json_logs_carry_generation_ids() -> None:
    import json

    server = ServeProcess("--store", "memory://", "--log-format", "json", "--log-level", "info")
    try:
        async with StreamingClient(server.url) as client:
            ok = await client.generate("echo", prompt="a b")
            await ok.text()
            bad = await client.generate("scripted", prompt="x", options={"rounds": [[{"error": "boom"}]]})
            await bad.wait()
    finally:
        server.proc.terminate()
        out, _ = server.proc.communicate(timeout=20)
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    mine = [r for r in records if r.get("generation_id") in (ok.id, bad.id)]
    assert {r["generation_id"] for r in mine} == {ok.id, bad.id}
    assert any(r.get("outcome") == "succeeded" and r["generation_id"] == ok.id for r in mine)
    failed = [r for r in mine if r.get("outcome") == "failed"]
    assert failed and failed[0]["error_code"] == "plugin_error" and failed[0]["level"] == "info"
    assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)


async def test_a_write_that_sticks_after_a_quiet_spell_is_dropped_on_time(make_server) -> None:
    # The listener sleeps toward the next heartbeat while nothing is written; a write that
    # begins then and never completes must still be dropped after send_timeout_s, not at
    # the heartbeat (15 s here).
    from streaming.server.app import ServerSettings, create_app

    from streaming.runtime import RuntimeSettings
    from tests.conftest import LiveServer

    app = create_app(ServerSettings(send_timeout_s=0.3, heartbeat_s=15,
                                    runtime=RuntimeSettings(disconnect_grace_s=30)))
    srv = LiveServer(app).start()
    try:
        async with StreamingClient(srv.url) as client:
            # 2 MB/s in 200 KB chunks: the kernel's buffers fill within a few seconds, and
            # every write begins after a quiet 100 ms.
            text = "y" * 200_000 + " "
            gen = await client.generate("echo", prompt=text, options={"repeat": 60, "delay_ms": 100},
                                        on_disconnect="continue")
            sock = socket.create_connection(("127.0.0.1", srv.port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(f"GET /generations/{gen.id}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            with anyio.fail_after(10):
                while srv.runtime.stats().subscribers == 0:
                    await anyio.sleep(0.02)
            with anyio.fail_after(10):  # the heartbeat (15 s) must not be what drops it
                while srv.runtime.stats().subscribers > 0:
                    await anyio.sleep(0.05)
            sock.close()
    finally:
        srv.stop()
