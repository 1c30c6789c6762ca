"""sqlite's journal of starts: a generation that starts while few others do commits only its
own rows (one row of the ``starts`` table) before its first event goes out; the next commit
of everything writes them where they belong and empties the journal; a ``kill -9`` in
between loses none of it (the file, opened again, puts the journal's rows back, and the
generation is recovered as any interrupted one): with real ``streaming serve`` processes,
and on the store and its writer for what is hard to reach from outside (a disk that fails,
a journal row this version did not write)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from streaming.errors import StoreUnavailableError
from streaming.model import File, Generation
from streaming.stores.sqlite import SqliteStore
from streaming.stores.sqlite_file import SCHEMA
from streaming.stores.sqlite_writer import SqliteWriter
from streaming.wire import Event, EventDecoder
from tests.server_process import ServerProcess
from tests.test_sqlite_parts import _opened

pytestmark = pytest.mark.anyio


def rows(db: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    """What another connection reads of the file (what is committed)."""
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


async def first_events(url: str, body: dict[str, object], until: int) -> list[Event]:
    """POST a generation as an SSE stream and read it until ``until`` deltas came."""
    got: list[Event] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        async with http.stream("POST", "/generations", json=body, headers={"accept": "text/event-stream"}) as r:
            assert r.status_code == 201
            decoder = EventDecoder()
            async for chunk in r.aiter_bytes():
                got += decoder.decode(chunk)
                if sum(e.type == "block.delta" for e in got) >= until:
                    return got
    raise AssertionError(f"the stream ended early: {got}")


async def test_a_start_is_durable_through_the_journal_and_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    # No commit of everything for a minute: only the journal can hold the start.
    store = f"sqlite:///{db}?batch=60&batch_max=60"
    body = {"generator": "echo", "prompt": "where did it go", "on_disconnect": "continue",
            "options": {"repeat": 400, "delay_ms": 20}}
    srv = ServerProcess(tmp_path / "serve.log", store=store).start()
    try:
        seen = await first_events(srv.url, body, until=3)
        generation_id = seen[0].generation_id
        # Committed: its journal row alone (its record, blocks and conversation are queued).
        assert rows(db, "SELECT generation_id FROM starts") == [(generation_id,)]
        assert rows(db, "SELECT 1 FROM generations WHERE id = ?", generation_id) == []
    finally:
        srv.kill()

    again = ServerProcess(tmp_path / "again.log", store=store).start()
    try:
        assert rows(db, "SELECT COUNT(*) FROM starts") == [(0,)]
        async with httpx.AsyncClient(base_url=again.url, timeout=30) as http:
            got = (await http.get(f"/generations/{generation_id}")).json()
            assert got["generation"]["state"] == "failed", got
            assert got["generation"]["error"]["code"] == "interrupted"
            # Resumed from the last event it saw: a terminal event above it, no seq reused.
            cursor = seen[-1].seq
            async with http.stream(
                "GET", f"/generations/{generation_id}/events", headers={"last-event-id": str(cursor)}
            ) as r:
                tail = [e for chunk in [b"".join([c async for c in r.aiter_bytes()])] for e in EventDecoder().decode(chunk)]
            assert tail and tail[-1].terminal and all(e.seq > cursor for e in tail), tail
            # The conversation holds the turn: the question, and its answer's block.
            file_id = got["generation"]["file_id"]
            conversation = (await http.get(f"/files/{file_id}")).json()
            texts = [b["text"] for b in conversation["blocks"]]
            assert texts[0] == "where did it go" and len(texts) == 2, conversation
    finally:
        again.kill()


async def test_the_next_commit_of_everything_empties_the_journal(tmp_path: Path) -> None:
    """A start's rows go where they belong with the next batch; many starts at once share
    one commit of everything (no journal rows); every one of them is readable after."""
    db = tmp_path / "s.db"
    store = SqliteStore(f"sqlite:///{db}?batch=0.3")
    await store.open()
    try:
        lone = Generation(generator="echo", file_id="file_lone")
        await store.put_started(lone, file=File(id="file_lone"), reserve=4096)
        assert rows(db, "SELECT generation_id FROM starts") == [(lone.id,)]
        with anyio.fail_after(5):
            while rows(db, "SELECT COUNT(*) FROM starts") != [(0,)]:
                await anyio.sleep(0.05)
        assert rows(db, "SELECT state FROM generations WHERE id = ?", lone.id) == [(lone.state.value,)]
        assert rows(db, "SELECT seq FROM sent_marks WHERE generation_id = ?", lone.id) == [(4096,)]

        burst = [Generation(generator="echo", file_id=f"file_{i}") for i in range(40)]
        async with anyio.create_task_group() as tg:
            for i, gen in enumerate(burst):
                tg.start_soon(lambda g=gen, i=i: store.put_started(g, file=File(id=f"file_{i}"), reserve=4096))
        # Each returned once committed: as journal rows (the first few) or with everything.
        committed = {r[0] for r in rows(db, "SELECT id FROM generations")}
        journaled = {r[0] for r in rows(db, "SELECT generation_id FROM starts")}
        assert {g.id for g in burst} <= committed | journaled
        assert len(journaled) <= 2 * store._writer.journal_max  # the rest shared a commit of everything
        for gen in burst:
            assert (await store.get_generation(gen.id)) is not None
        assert rows(db, "SELECT COUNT(*) FROM starts") == [(0,)]  # (a read commits everything)
    finally:
        await store.close()


async def test_a_start_whose_journal_cannot_be_written_waits_for_everything(tmp_path: Path) -> None:
    """The journal's commit failing (the disk is full): the start goes with the commit of
    everything, which retries; if that fails too, the start is told, clearly, and once the
    disk is back its rows land."""
    file = _opened(tmp_path / "s.db")
    writer = SqliteWriter(file, batch_s=30.0, retry_s=0.2)
    commit, journal = writer.commit_sync, file.journal_sync
    broken = {"journal": True, "commit": False}

    def failing(what: str, real: Any) -> Any:
        def call(*args: Any) -> None:
            if broken[what]:
                raise OSError("disk full")
            real(*args)
        return call

    writer.commit_sync = failing("commit", commit)  # type: ignore[method-assign]
    file.journal_sync = failing("journal", journal)  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run, 0.05)
        writer.queue()
        writer.gens["gen_a"] = ("running", None, '{"id": "gen_a"}')
        with anyio.fail_after(5):  # (not the 30 s batch: the start asked for its commit)
            await writer.sync_start("gen_a", "file_a", 4096)
        assert await file.query("SELECT id FROM generations") == [("gen_a",)]
        assert await file.query("SELECT COUNT(*) FROM starts") == [(0,)]

        broken["commit"] = True
        writer.queue()
        writer.gens["gen_b"] = ("running", None, '{"id": "gen_b"}')
        with pytest.raises(StoreUnavailableError, match="disk full"):
            await writer.sync_start("gen_b", "file_b", 4096)
        broken["commit"] = broken["journal"] = False
        with anyio.fail_after(5):
            while writer.failure is not None:
                await anyio.sleep(0.01)
        assert sorted(await file.query("SELECT id FROM generations")) == [("gen_a",), ("gen_b",)]
        assert await file.query("SELECT seq FROM sent_marks WHERE generation_id = 'gen_b'") == [(4096,)]
        tg.cancel_scope.cancel()
    await file.close()


async def test_an_unreadable_journal_row_is_left_out_and_the_file_opens(tmp_path: Path) -> None:
    """Journal rows that are not what this version writes (hand-edited, another version)
    do not keep the file from opening; a readable one beside them comes back."""
    path = tmp_path / "s.db"
    good = ["gen_ok", ["running", None, '{"id": "gen_ok"}'], ["file_ok", "{}", "blk_ok"], [["blk_ok", "{}"]], 4096]
    with sqlite3.connect(path) as conn:  # a file a crash left with four journal rows
        conn.executescript(SCHEMA)
        conn.executemany(
            "INSERT INTO starts (generation_id, data) VALUES (?, ?)",
            [("gen_bad", "not json"), ("gen_short", "[1, 2]"), ("gen_ok", json.dumps(good)),
             ("gen_odd", json.dumps(["gen_odd", ["running"], None, [], 1]))],
        )
    file = _opened(path)
    assert rows(path, "SELECT id, state FROM generations") == [("gen_ok", "running")]
    assert rows(path, "SELECT id FROM blocks") == [("blk_ok",)]
    assert rows(path, "SELECT seq FROM sent_marks") == [(4096,)]
    assert rows(path, "SELECT COUNT(*) FROM starts") == [(0,)]
    await file.close()
