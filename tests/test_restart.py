"""A real ``streaming serve`` on its default sqlite store, killed with SIGKILL mid-stream and restarted.

Completed generations come back byte for byte; the one that was running reads ``failed``
(code ``interrupted``) with its open block aborted and its log closed, so a client resuming
it is told and does not hang.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from streaming.client.client import StreamingClient

from streaming.events import Event
from tests.invariants import check_invariants
from tests.server_process import ServerProcess

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.kill()


def persisted(db: Path, generation_id: str) -> int:
    """Events of a generation committed to the file (read by another connection, as a crash would leave it)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COALESCE(SUM(last_seq - first_seq + 1), 0) FROM segments JOIN logs ON no = log WHERE generation_id = ?", (generation_id,)).fetchone()[0])
    finally:
        conn.close()


async def raw_events(url: str, generation_id: str) -> bytes:
    async with httpx.AsyncClient(base_url=url, timeout=20) as http:
        response = await http.get(f"/generations/{generation_id}/events")
        assert response.status_code == 200
        return response.content


async def test_sigkill_mid_stream_then_restart(tmp_path: Path, servers: list[ServerProcess]) -> None:
    data_dir = tmp_path / "data"
    log = tmp_path / "server.log"
    # No --store: the default is sqlite in the data directory, which serve creates.
    first = ServerProcess(log, "--data-dir", str(data_dir)).start()
    servers.append(first)
    async with httpx.AsyncClient() as http:
        health = (await http.get(first.url + "/healthz")).json()
    assert health["store"].startswith("sqlite:") and health["store"].endswith("streaming.db")
    db = data_dir / "streaming.db"
    assert db.exists()

    async with StreamingClient(first.url) as client:
        # A generation that completes, with a conversation continued by a second one.
        done = await client.generate(
            "scripted",
            prompt="hi",
            options={"rounds": [[{"text": "complete answer, with ünïcode 🌍", "chunk": 5}]]},
        )
        await done.wait()
        assert done.state == "succeeded"
        before_raw = await raw_events(first.url, done.id)
        before_gen = await client.get_generation(done.id)
        before_file = await client.get_file(done.file_id or "")

        # A generation still streaming when the process dies.
        running = await client.generate(
            "scripted",
            prompt="go on",
            options={"rounds": [[{"text": "partial text", "chunk": 4}, {"sleep_ms": 600_000}, {"text": "never"}]]},
            on_disconnect="continue",
        )
        seen = []
        async for event in running:
            seen.append(event)
            if event.type == "block.delta" and "".join(
                e.data["text"] for e in seen if e.type == "block.delta"
            ) == "partial text":
                break
        last_seen = seen[-1].seq
        # Wait until the runtime's batched writer has put those events in the file.
        with anyio.fail_after(20):
            while persisted(db, running.id) < last_seen:
                await anyio.sleep(0.02)
        await running._source.aclose()  # type: ignore[union-attr]

    first.kill()
    second = ServerProcess(log, "--data-dir", str(data_dir)).start()
    servers.append(second)

    async with StreamingClient(second.url) as client:
        # The completed generation: the same bytes, the same records.
        assert await raw_events(second.url, done.id) == before_raw
        assert await client.get_generation(done.id) == before_gen
        assert await client.get_file(done.file_id or "") == before_file

        # The interrupted one: failed, block aborted with what was streamed.
        stored = await client.get_generation(running.id)
        gen = stored["generation"]
        assert gen["state"] == "failed"
        assert gen["error"]["code"] == "interrupted"
        assert [b["stream_state"] for b in stored["blocks"]] == ["aborted"]
        assert stored["blocks"][0]["text"] == "partial text"

        # A client resuming where it was is told, and does not hang.
        with anyio.fail_after(20):
            resumed = [e async for e in client.iter_events(running.id, after=last_seen)]
        assert [e.type for e in resumed] == ["block.aborted", "generation.failed"]
        assert resumed[-1].data["error"]["code"] == "interrupted"
        # Numbered past the store's mark of how far the log may have been sent (it streams
        # ahead of its batched writes), never right after the stored log: the seqs in
        # between are missing, and the ending says so.
        lost = resumed[-1].data["events_lost"]
        assert lost["after"] == last_seen and lost["through"] >= last_seen
        assert [e.seq for e in resumed] == [lost["through"] + 1, lost["through"] + 2]
        with anyio.fail_after(20):
            whole = [e async for e in client.iter_events(running.id)]
        assert [e.seq for e in whole] == [*range(1, last_seen + 1), lost["through"] + 1, lost["through"] + 2]
        renumbered = [Event(e.type, i, e.generation_id, e.data) for i, e in enumerate(whole, 1)]
        check_invariants(renumbered, final_blocks={stored["blocks"][0]["id"]: "partial text"})

        # The restarted server carries on with new work on the same conversation.
        more = await client.generate(
            "scripted", prompt="again", file_id=done.file_id, options={"rounds": [[{"text": "ok"}]]}
        )
        await more.wait()
        assert more.state == "succeeded"
        check_invariants(more.events)


async def test_second_server_on_the_same_file_is_refused(tmp_path: Path, servers: list[ServerProcess]) -> None:
    data_dir = tmp_path / "data"
    first = ServerProcess(tmp_path / "a.log", "--data-dir", str(data_dir)).start()
    servers.append(first)
    second = ServerProcess(tmp_path / "b.log", "--data-dir", str(data_dir))
    servers.append(second)
    with pytest.raises(RuntimeError, match="exited"):
        second.start()
    assert "in use by another process" in (tmp_path / "b.log").read_text()
