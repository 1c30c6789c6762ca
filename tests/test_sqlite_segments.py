"""The sqlite store keeps each event log as segments (a row per run of consecutive events one
commit carried): reads after any cursor are exact, whatever the segments' boundaries, and a
file written with the first schema (a row per event) opens, replays and recovers."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from streaming.events import Event
from streaming.lifecycle import GenerationMachine
from streaming.log import EventLog
from streaming.model import Block, File, Generation, GenerationState, StreamState
from streaming.stores.memory import MemoryStore
from streaming.stores.sqlite import SqliteStore
from streaming.stores.sqlite_file import PAGE_SIZE, decode_segment, segments_of
from tests.test_store_conformance import _play

pytestmark = pytest.mark.anyio

#: texts that could confuse a reader of joined SSE frames
TEXTS = ["tok ", "\n\n", "data: {\"x\":1}\n\n", "é✓ 😀", "id: 9\nevent: x\n\n", "", "\\n\\n", "\r\n\r\n", "{"]


def _events(gid: str, n: int) -> list[Event]:
    machine = GenerationMachine(Generation(id=gid, generator="echo"), EventLog(gid, coalesce=False))
    blocks = [Block(file_id="f"), Block(file_id="f")]
    machine.start(blocks, None)
    i = 0
    while machine.log.last_seq < n - 1:
        machine.append(blocks[i % 2].id, TEXTS[i % len(TEXTS)])
        i += 1
    machine.succeed()
    events = machine.log.read(0)
    assert len(events) >= n
    return events


async def test_reads_after_every_cursor_are_exact_whatever_the_segments(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SqliteStore(f"sqlite:///{path}?batch=3600")  # commits only when a read asks
    reference = MemoryStore()
    await store.open()
    gid = "gen_seg"
    events = _events(gid, 40)
    # Appends of 1 to 7 events; a read in between commits what is queued, so segments
    # hold one append or several.
    sizes, reads_after = [1, 3, 1, 7, 2, 1, 5, 4, 1, 6, 2], {1, 2, 4, 5, 7, 9}
    at = 0
    for k, size in enumerate(sizes * 3):
        part = events[at : at + size]
        if not part:
            break
        await store.append_events(gid, part)
        await reference.append_events(gid, part)
        at += len(part)
        if k in reads_after or k % 5 == 0:
            await store.read_events(gid, at)
    assert at == len(events)
    expected = [e.to_dict() for e in await reference.read_events(gid)]

    async def check(s: SqliteStore) -> None:
        for after in range(-2, len(events) + 3):
            for limit in (None, 1, 2, 3, 8, 1000):
                got = [e.to_dict() for e in await s.read_events(gid, after, limit)]
                want = expected[max(after, 0) :]
                assert got == (want if limit is None else want[:limit]), (after, limit)
        with anyio.fail_after(10):
            followed = [e.to_dict() async for batch in s.follow(gid, 17) for e in batch]
        assert followed == expected[17:]

    await check(store)
    rows = await store._file.query("SELECT first_seq, last_seq FROM segments ORDER BY last_seq")
    assert len(rows) > 5 and any(last > first for first, last in rows)  # several, some of many
    assert [first for first, _ in rows] == [1] + [last + 1 for _, last in rows[:-1]]  # gapless
    await store.close()
    again = SqliteStore(f"sqlite:///{path}")  # another process, reading the file
    await again.open()
    await check(again)
    await again.close()


def test_a_segment_decodes_from_any_cursor_and_splits_where_seqs_skip() -> None:
    events = _events("gen_x", 12)
    for ev in events[::2]:
        ev.to_sse()  # some already framed (streamed), some not: the bytes are the same
    gapped = events[:5] + [Event(e.type, e.seq + 100, e.generation_id, e.data) for e in events[5:]]
    runs = segments_of(gapped)
    assert [(first, last) for first, last, _ in runs] == [(1, 5), (106, 100 + events[-1].seq)]
    for first, last, frames in runs:
        data = b"".join(frames)
        whole = [e.to_dict() for e in gapped if first <= e.seq <= last]
        for after in range(first - 2, last + 2):
            got = [e.to_dict() for e in decode_segment(first, last, data, after)]
            assert got == [e for e in whole if e["seq"] > after]


# -- a file of the first schema --

FIRST_SCHEMA = """
CREATE TABLE generations (id TEXT PRIMARY KEY, state TEXT NOT NULL, finished_at REAL, data TEXT NOT NULL);
CREATE TABLE blocks (id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE files (id TEXT PRIMARY KEY, data TEXT NOT NULL, block_ids TEXT NOT NULL);
CREATE TABLE events (
    generation_id TEXT NOT NULL, seq INTEGER NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (generation_id, seq)) WITHOUT ROWID;
CREATE TABLE tool_claims (
    generation_id TEXT NOT NULL, call_id TEXT NOT NULL,
    PRIMARY KEY (generation_id, call_id)) WITHOUT ROWID;
CREATE TABLE archives (key TEXT PRIMARY KEY, digest TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE sent_marks (generation_id TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
"""


def _write_first_schema(path: Path, runs: list[tuple[GenerationMachine, File]], marks: dict[str, int]) -> None:
    """A file as the first schema's store left it: a row per event (its JSON)."""
    conn = sqlite3.connect(path)
    conn.executescript(FIRST_SCHEMA)
    for machine, file in runs:
        gen = machine.generation
        conn.execute(
            "INSERT INTO generations VALUES (?, ?, ?, ?)",
            (gen.id, gen.state.value, gen.finished_at, gen.model_dump_json()),
        )
        for block_id in machine.order:
            conn.execute("INSERT INTO blocks VALUES (?, ?)", (block_id, machine.block_snapshot(block_id).model_dump_json()))
        meta = file.model_copy(update={"blocks": []})
        conn.execute("INSERT INTO files VALUES (?, ?, ?)", (file.id, meta.model_dump_json(), "\n".join(b.id for b in file.blocks)))
        conn.executemany(
            "INSERT INTO events VALUES (?, ?, ?)", [(gen.id, e.seq, e.to_json()) for e in machine.log.read(0)]
        )
    conn.executemany("INSERT INTO sent_marks VALUES (?, ?)", marks.items())
    conn.commit()
    conn.close()


def _run(chunks: list[str], *, finish: bool) -> tuple[GenerationMachine, File]:
    file = File()
    machine, _ = _play(Generation(generator="echo", file_id=file.id), chunks, finish=finish)
    file.blocks = [machine.block_snapshot(b) for b in machine.order]
    return machine, file


async def test_a_file_of_the_first_schema_opens_replays_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    done, done_file = _run(["alpha ", "beta ", "gamma"], finish=True)
    cut, cut_file = _run(["one ", "two ", "three "], finish=False)
    assert done.generation.state is GenerationState.SUCCEEDED
    done_events = [e.to_dict() for e in done.log.read(0)]
    cut_events = [e.to_dict() for e in cut.log.read(0)]
    sent = len(cut_events) + 3  # the dead process may have streamed three events it never stored
    _write_first_schema(path, [(done, done_file), (cut, cut_file)], {cut.generation.id: sent})

    store = SqliteStore(f"sqlite:///{path}")
    await store.open()
    tables = {r[0] for r in await store._file.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "events" not in tables and {"logs", "segments"} <= tables
    # The finished generation replays exactly, from any cursor.
    for after in range(len(done_events) + 1):
        assert [e.to_dict() for e in await store.read_events(done.generation.id, after)] == done_events[after:]
    with anyio.fail_after(10):
        followed = [e.to_dict() async for batch in store.follow(done.generation.id, 2) for e in batch]
    assert followed == done_events[2:]
    got = await store.get_file(done_file.id)
    assert got is not None and [b.text for b in got.blocks] == ["alpha gamma", "beta "]
    # The one left running is failed past the mark, and its log ends; appending refuses.
    assert await store.recover_interrupted() == [cut.generation.id]
    events = await store.read_events(cut.generation.id)
    assert [e.to_dict() for e in events[: len(cut_events)]] == cut_events
    assert events[-1].type == "generation.failed" and events[-1].seq > sent
    assert events[-1].data["events_lost"] == {"after": len(cut_events), "through": sent}
    record = await store.get_generation(cut.generation.id)
    assert record is not None and record.state is GenerationState.FAILED and record.last_seq == events[-1].seq
    block = await store.get_block(cut.order[0])
    assert block is not None and block.stream_state is StreamState.ABORTED and block.text == "one three "
    with pytest.raises(Exception, match="has ended"):
        await store.append_events(cut.generation.id, [Event("block.delta", events[-1].seq + 1, cut.generation.id, {})])
    # A new generation in the same file is written as segments beside the moved rows.
    new_events = _events("gen_new", 6)
    await store.append_events("gen_new", new_events)
    assert [e.to_dict() for e in await store.read_events("gen_new", 3)] == [e.to_dict() for e in new_events[3:]]
    await store.close()

    reopened = SqliteStore(f"sqlite:///{path}")  # opens again (nothing left to move)
    await reopened.open()
    assert [e.to_dict() for e in await reopened.read_events(done.generation.id)] == done_events
    assert await reopened.recover_interrupted() == []
    await reopened.close()


async def test_append_many_refuses_per_log_as_the_memory_store_does(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path}/s.db")
    reference = MemoryStore()
    await store.open()
    logs = {gid: _events(gid, 6) for gid in ("gen_a", "gen_b", "gen_c", "gen_d")}
    for s in (store, reference):
        await s.append_events("gen_b", logs["gen_b"][:2])  # known to the store
        await s.append_events("gen_d", logs["gen_d"])  # ended
    batch = [
        ("gen_a", logs["gen_a"][:3]),  # a log not seen yet
        ("gen_b", logs["gen_b"][2:4]),  # continues
        ("gen_c", logs["gen_c"][1:3]),  # a gap
        ("gen_d", [Event.delta(99, "gen_d", "blk", 0, "x")]),  # closed
        ("gen_b", []),
        ("gen_b", logs["gen_b"][4:5]),  # continues what this very call appended
    ]
    got = await store.append_many(batch)
    want = await reference.append_many(batch)
    assert [type(e) for e in got] == [type(e) for e in want]
    assert [getattr(e, "code", None) for e in got] == [None, None, "log_gap", "log_closed", None, None]
    for gid in logs:
        assert [e.to_dict() for e in await store.read_events(gid)] == [
            e.to_dict() for e in await reference.read_events(gid)
        ]
    await store.close()


async def test_a_new_file_gets_large_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    new = SqliteStore(f"sqlite:///{tmp_path}/new.db")
    await new.open()
    assert (await new._file.query("PRAGMA page_size"))[0][0] == PAGE_SIZE == 16384
    await new.close()
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    conn.execute("PRAGMA page_size=4096")
    conn.execute("CREATE TABLE t (x)")  # (an existing file: its page size is fixed)
    conn.close()
    store = SqliteStore(f"sqlite:///{old}")
    await store.open()
    assert (await store._file.query("PRAGMA page_size"))[0][0] == 4096
    events = _events("gen_paged", 5)
    await store.append_events("gen_paged", events)
    assert [e.to_dict() for e in await store.read_events("gen_paged", 2)] == [e.to_dict() for e in events[2:]]
    await store.close()


async def test_a_log_begun_by_an_earlier_process_is_continued_under_its_own_number(tmp_path: Path) -> None:
    # The next process does not know the log's number: appending finds it (the log is not
    # made a second time), and the reads join what both processes wrote.
    path = tmp_path / "s.db"
    events = _events("gen_cont", 12)
    first = SqliteStore(f"sqlite:///{path}")
    await first.open()
    await first.append_events("gen_other", _events("gen_other", 4)[:2])
    await first.append_events("gen_cont", events[:5])
    await first.close()
    second = SqliteStore(f"sqlite:///{path}")
    await second.open()
    await second.append_events("gen_cont", events[5:])
    assert [e.to_dict() for e in await second.read_events("gen_cont")] == [e.to_dict() for e in events]
    logs = await second._file.query("SELECT no, generation_id FROM logs ORDER BY no")
    assert [gid for _, gid in logs] == ["gen_other", "gen_cont"]
    segments = await second._file.query("SELECT DISTINCT log FROM segments WHERE first_seq > 5")
    assert segments == [(logs[1][0],)]
    await second.close()
