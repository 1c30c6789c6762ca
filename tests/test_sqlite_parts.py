"""The collaborators of the sqlite store on their own, over a real SQLite file: the file
(lock, schema, retention, recovery) and the writer (batched, coalesced, retried commits)."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from streaming.errors import StoreError, StoreUnavailableError
from streaming.events import Event
from streaming.model import Generation, GenerationState
from streaming.stores.sqlite_file import SqliteFile, decode_ids, encode_ids
from streaming.stores.sqlite_writer import SqliteWriter

pytestmark = pytest.mark.anyio


def _opened(path: Path, ttl_s: float | None = None) -> SqliteFile:
    file = SqliteFile(str(path))
    file.open_sync(ttl_s)
    return file


async def test_one_process_holds_the_file(tmp_path: Path) -> None:
    first = _opened(tmp_path / "s.db")
    second = SqliteFile(str(tmp_path / "s.db"))
    with pytest.raises(StoreError, match="in use by another process"):
        second.open_sync(None)
    await first.close()
    second.open_sync(None)  # the lock went with the first
    await second.close()
    with pytest.raises(StoreError, match="not open"):
        second.require()


async def test_retention_drops_only_generations_finished_before_the_cutoff(tmp_path: Path) -> None:
    file = _opened(tmp_path / "s.db")
    conn = file.require()
    now = time.time()
    rows = [("old", "succeeded", now - 100), ("new", "succeeded", now), ("open", "running", None)]
    for gid, state, at in rows:
        conn.execute("INSERT INTO generations VALUES (?, ?, ?, '{}')", (gid, state, at))
        file.insert_events_sync(conn, gid, [Event("generation.started", 1, gid, {})])
    file.expire_sync(now - 10)
    assert {r[0] for r in await file.query("SELECT id FROM generations")} == {"new", "open"}
    assert {r[0] for r in await file.query("SELECT generation_id FROM logs")} == {"new", "open"}
    logs = {r[0] for r in await file.query("SELECT no FROM logs")}
    assert {r[0] for r in await file.query("SELECT log FROM segments")} == logs
    await file.close()


async def test_recovery_fails_what_was_left_running_and_closes_its_log(tmp_path: Path) -> None:
    file = _opened(tmp_path / "s.db")
    gen = Generation(generator="echo", state=GenerationState.RUNNING)
    started = Event(type="generation.started", generation_id=gen.id, seq=1, data={})
    conn = file.require()
    conn.execute("INSERT INTO generations VALUES (?, 'running', NULL, ?)", (gen.id, gen.model_dump_json()))
    file.insert_events_sync(conn, gen.id, [started])
    assert file.recover_sync() == [gen.id]
    assert file.recover_sync() == []  # once
    (data,) = (await file.query("SELECT data FROM generations WHERE id = ?", gen.id))[0]
    assert Generation.model_validate_json(data).state is GenerationState.FAILED
    last = file.tail_sync(gen.id)
    assert last is not None and last.terminal and last.seq == 2
    assert [e.seq for e in file.read_sync(gen.id)] == [1, 2]
    await file.close()


def test_block_ids_round_trip() -> None:
    assert decode_ids(encode_ids(["a", "b"])) == ["a", "b"]
    assert decode_ids(encode_ids([])) == []


async def test_the_writer_commits_a_batch_once_and_keeps_the_last_write_of_an_id(tmp_path: Path) -> None:
    file = _opened(tmp_path / "s.db")
    writer = SqliteWriter(file, batch_s=60.0, retry_s=10.0)
    commits: list[int] = []
    commit = writer.commit_sync

    def counting(*batch: object) -> None:
        commits.append(1)
        commit(*batch)  # type: ignore[arg-type]

    writer.commit_sync = counting  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        await writer.sync()  # nothing queued: returns at once
        for text in ("first", "second"):
            writer.queue()
            writer.blocks["blk_1"] = text
        writer.add_events("gen_1", [Event("generation.started", 1, "gen_1", {})])
        writer.add_events("gen_1", [Event.delta(s, "gen_1", "blk_1", s - 2, "x") for s in (2, 3)])
        assert writer.holds("gen_1") and writer.queued_events == 3
        await writer.sync()  # a reader waits: it commits now, not in 60 s
        assert len(commits) == 1 and not writer.holds("gen_1")
        assert await file.query("SELECT data FROM blocks") == [("second",)]
        # The three events of the log, queued by two appends, are one row.
        assert await file.query("SELECT first_seq, last_seq FROM segments") == [(1, 3)]
        assert [e.seq for e in file.read_sync("gen_1")] == [1, 2, 3]
        tg.cancel_scope.cancel()
    await file.close()


async def test_the_writer_tells_callers_once_commits_keep_failing_and_recovers(tmp_path: Path) -> None:
    file = _opened(tmp_path / "s.db")
    writer = SqliteWriter(file, batch_s=0.0, retry_s=0.05)
    commit = writer.commit_sync
    broken = True

    def failing(*batch: object) -> None:
        if broken:
            raise OSError("disk full")
        commit(*batch)  # type: ignore[arg-type]

    writer.commit_sync = failing  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run, 0.05)
        writer.queue()
        writer.blocks["blk_1"] = "kept"
        with pytest.raises(StoreUnavailableError, match="disk full"):
            await writer.sync()
        with pytest.raises(StoreUnavailableError):
            writer.queue()  # new writes are refused meanwhile
        broken = False
        with anyio.fail_after(5):
            while writer.failure is not None:
                await anyio.sleep(0.01)
        assert await file.query("SELECT data FROM blocks") == [("kept",)]  # the batch was retried
        writer.queue()
        tg.cancel_scope.cancel()
    await file.close()


async def test_the_interval_between_commits_grows_with_the_logs_a_commit_carries(tmp_path: Path) -> None:
    file = _opened(tmp_path / "s.db")
    writer = SqliteWriter(file, batch_s=0.25, retry_s=10.0, batch_max_s=1.0)
    assert [writer.grown(n) for n in (0, 1, 100, 200, 400, 5000)] == [0.25, 0.25, 0.25, 0.5, 1.0, 1.0]
    assert SqliteWriter(file, batch_s=0.25, retry_s=10.0).grown(5000) == 0.25  # no max: never grows
    assert SqliteWriter(file, batch_s=2.0, retry_s=10.0, batch_max_s=1.0).grown(5000) == 2.0
    assert SqliteWriter(file, batch_s=0.0, retry_s=10.0, batch_max_s=1.0).grown(5000) == 0.0
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.run)
        for n in range(300):  # 300 logs in one commit: the next waits 0.75 s
            writer.add_events(f"gen_{n}", [Event("generation.started", 1, f"gen_{n}", {})])
        await writer.sync()
        assert writer.interval == 0.75
        writer.add_events("gen_0", [Event.delta(2, "gen_0", "blk_1", 0, "x")])
        await writer.sync()  # (a reader still commits at once)
        assert writer.interval == 0.25  # one log: back to batch_s
        tg.cancel_scope.cancel()
    assert [e.seq for e in file.read_sync("gen_0")] == [1, 2]
    await file.close()


async def test_a_block_made_mid_stream_comes_back_from_its_log_after_a_crash(tmp_path: Path) -> None:
    """The store writer writes a running generation's blocks and record to sqlite only at
    its start and end: a block made in between exists only in the log (its
    ``block.created``) when the process dies. Recovery brings it back, aborted, with the
    text streamed into it, in its conversation."""
    from streaming.model import Block, File, MimeTypes, StreamState
    from streaming.stores.sqlite import SqliteStore

    url = f"sqlite:///{tmp_path / 's.db'}"
    store = SqliteStore(url, batch_s=0)
    await store.open()
    prompt = Block(text="hi", mime_type=MimeTypes.TXT)
    file = File(blocks=[prompt])
    prompt.file_id = file.id
    gen = Generation(generator="scripted", state=GenerationState.RUNNING, file_id=file.id)
    await store.put_started(gen, file=file, reserve=64)
    made = Block(file_id=file.id, index=1, mime_type=MimeTypes.TXT, stream_state=StreamState.STARTED)
    await store.append_events(gen.id, [
        Event("generation.started", 1, gen.id, {"generation": gen.public(), "blocks": [], "capabilities": None}),
        Event("block.created", 2, gen.id, {"block": made.model_dump(mode="json")}),
        Event("block.delta", 3, gen.id, {"block_id": made.id, "offset": 0, "text": "made "}),
        Event("block.delta", 4, gen.id, {"block_id": made.id, "offset": 5, "text": "mid-stream"}),
    ])
    await store.close()  # what was flushed is committed; nothing else comes (a kill -9)

    again = SqliteStore(url, batch_s=0)
    await again.open()
    assert await again.recover_interrupted() == [gen.id]
    stored = await again.get_generation(gen.id)
    assert stored is not None and stored.state is GenerationState.FAILED
    assert made.id in stored.output_block_ids
    block = await again.get_block(made.id)
    assert block is not None
    assert (block.text, block.stream_state) == ("made mid-stream", StreamState.ABORTED)
    conversation = await again.get_file(file.id)
    assert conversation is not None
    assert [(b.id, b.text) for b in conversation.blocks] == [(prompt.id, "hi"), (made.id, "made mid-stream")]
    await again.close()


def test_the_file_cache_hands_out_copies_and_forgets_what_changed_behind_it() -> None:
    from streaming.model import Block, File
    from streaming.stores.file_cache import FileCache

    cache = FileCache(size=2)
    first = File(blocks=[Block(text="hi"), Block(text="hello")])
    for b in first.blocks:
        b.file_id = first.id
    assert cache.get(first.id) is None
    assert cache.put(first) == first.blocks  # nothing kept: every block is written
    got = cache.get(first.id)
    assert got == first and got is not first and got.blocks[0] is not first.blocks[0]
    got.blocks[0].text = "changed by a caller"
    got.blocks.append(Block(text="appended by a caller"))
    assert cache.get(first.id) == first  # callers change their copies only

    turn = first.snapshot()
    turn.blocks[1].text = "hello there"
    turn.blocks.append(Block(file_id=first.id, text="new"))
    kept_first = cache._files[first.id].blocks[0]
    assert [b.text for b in cache.put(turn)] == ["hello there", "new"]  # the ones to write
    assert cache.get(first.id) == turn
    kept = cache._files[first.id].blocks
    assert kept[0] is kept_first  # the unchanged block keeps the copy already kept...
    assert all(k is not b for k, b in zip(kept, turn.blocks, strict=True))  # ...none of the caller's

    cache.blocks_written([first.blocks[0]])  # a block written on its own: read it again
    assert cache.get(first.id) is None
    cache.put(first)
    cache.blocks_written([Block(text="whose?")])  # no file_id: nothing is kept
    assert cache.get(first.id) is None

    version = cache.version
    cache.put(first)  # a write while a read of the file was under way...
    cache.read(File(id=first.id), version)  # ...which read the file before the write
    assert cache.get(first.id) == first

    others = [File(), File()]
    for other in others:
        cache.put(other)
    assert cache.get(first.id) is None  # the least recently used went
    assert all(cache.get(o.id) == o for o in others)

    small = FileCache(size=10, max_blocks=3)  # blocks in all, too
    small.put(first)  # 2 blocks
    small.put(File(blocks=[Block()]))
    small.put(File(blocks=[Block()]))  # 4 in all: the oldest goes
    assert small.get(first.id) is None
    big = File(blocks=[Block() for _ in range(4)])
    small.put(big)  # more than all it may hold: not kept
    assert small.get(big.id) is None
    handed = File(blocks=[Block(text="q")])
    assert small.put(handed, handed_over=True) == handed.blocks
    assert small._files[handed.id] is handed  # kept as it is, not copied
    assert small.get(handed.id) == handed and small.get(handed.id) is not handed
    turn = handed.model_copy(update={"blocks": [*handed.blocks, Block(text="a")]})
    assert small.put(turn, handed_over=True) == turn.blocks[1:]  # the same block, by identity
    texts = FileCache(size=10, max_chars=10)  # and characters of text in all
    long, short = File(blocks=[Block(text="x" * 8)]), File(blocks=[Block(text="y" * 4)])
    texts.put(long)
    texts.put(short)  # 12 characters in all: the oldest goes
    assert texts.get(long.id) is None and texts.get(short.id) == short


async def test_a_turn_rewrites_only_the_blocks_it_changed_and_reads_come_back_whole(tmp_path: Path) -> None:
    from streaming.model import Block, File
    from streaming.stores.sqlite import SqliteStore

    url = f"sqlite:///{tmp_path / 's.db'}"
    store = SqliteStore(url, batch_s=0)
    await store.open()
    file = File(blocks=[Block(text=f"block {i}") for i in range(50)])
    for b in file.blocks:
        b.file_id = file.id
    await store.put_file(file)
    assert len(store._writer.blocks) == 50
    await store._writer.sync()  # (commits what was queued)
    assert not store._writer.blocks

    turn = await store.get_file(file.id)
    assert turn is not None and turn == file
    turn.blocks.append(Block(file_id=file.id, text="a new message"))
    turn.blocks[3].text = "edited"
    await store.put_file(turn)
    assert sorted(store._writer.blocks) == sorted([turn.blocks[3].id, turn.blocks[-1].id])
    await store.put_blocks([Block(id=turn.blocks[7].id, file_id=file.id, text="rewritten on its own")])
    await store.close()

    again = SqliteStore(url, batch_s=0)  # what the file holds, read cold
    await again.open()
    stored = await again.get_file(file.id)
    assert stored is not None
    assert [b.text for b in stored.blocks] == [
        *(f"block {i}" for i in range(3)), "edited", *(f"block {i}" for i in range(4, 7)),
        "rewritten on its own", *(f"block {i}" for i in range(8, 50)), "a new message",
    ]
    await again.close()
