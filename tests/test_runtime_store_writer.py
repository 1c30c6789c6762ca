"""The store writer, on an in-process runtime with a real sqlite store whose writes fail
for a while."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from prometheus_client import generate_latest
from streaming.server.metrics import registry_for

from streaming.errors import StoreError
from streaming.events import Event
from streaming.model import Block, Generation
from streaming.requests import GenerateRequest
from streaming.stores.sqlite import SqliteStore

pytestmark = pytest.mark.anyio


class FlakyWrites(SqliteStore):
    """Its next ``failures`` appends of events fail (a disk hiccup)."""

    failures = 0

    async def append_events(self, generation_id: str, events: Sequence[Event]) -> None:
        if self.failures:
            self.failures -= 1
            raise StoreError("disk hiccup")
        await super().append_events(generation_id, events)


async def test_failed_writes_are_counted_and_retried_until_they_land(make_runtime, tmp_path) -> None:
    store = FlakyWrites(f"sqlite:///{tmp_path / 'flaky.db'}")
    runtime = await make_runtime(store, persist_interval_s=0.01)
    assert runtime.stats().store_errors == 0
    store.failures = 3
    gen = await runtime.start(GenerateRequest(generator="echo", prompt="a b c "), subscribed=True)
    events = [e async for e in runtime.events(gen.id)]
    assert events[-1].type == "generation.completed"
    with anyio.fail_after(20):  # the final write is retried in the background
        while (stored := await store.get_generation(gen.id)) is None or not stored.state.finished:
            await anyio.sleep(0.02)
    assert [e.seq for e in await store.read_events(gen.id)] == [e.seq for e in events]
    assert runtime.stats().store_errors == 3
    scraped = generate_latest(registry_for(runtime)).decode()
    assert "streaming_store_errors_total 3.0" in scraped


class Recording(SqliteStore):
    """Records the writes the store writer makes, in order (and commits each at once)."""

    def __init__(self, url: str) -> None:
        super().__init__(url, batch_s=0)
        self.calls: list[tuple[str, ...]] = []

    async def append_events(self, generation_id: str, events: Sequence[Event]) -> None:
        self.calls.append(("events", *(e.type for e in events)))
        await super().append_events(generation_id, events)

    async def put_blocks(self, blocks: Sequence[Block]) -> None:
        self.calls.append(("blocks",))
        await super().put_blocks(blocks)

    async def put_generation(self, generation: Generation) -> None:
        self.calls.append(("generation", generation.state.value))
        await super().put_generation(generation)


async def test_a_store_only_this_process_reads_gets_no_block_or_record_rewrite_per_chunk(make_runtime, tmp_path) -> None:
    store = Recording(f"sqlite:///{tmp_path / 'rec.db'}")
    runtime = await make_runtime(store, persist_interval_s=0.01)
    steps = [step for word in ("one ", "two ", "three ", "four ") for step in ({"text": word}, {"sleep_ms": 60})]
    gen = await runtime.start(GenerateRequest(generator="scripted", prompt="go", options={"rounds": [steps]}))
    with anyio.fail_after(20):
        while (stored := await store.get_generation(gen.id)) is None or not stored.state.finished:
            await anyio.sleep(0.02)
    flushes = [i for i, call in enumerate(store.calls) if call[0] == "events"]
    text_only = [i for i in flushes if set(store.calls[i][1:]) == {"block.delta"}]
    assert text_only, store.calls  # some flushes carried nothing but text...
    for i in text_only:  # ...and rewrote neither the blocks nor the record
        assert i + 1 == len(store.calls) or store.calls[i + 1][0] == "events", store.calls
    # A flush with more than text (the start, the end) rewrites both; nothing is lost.
    assert ("generation", "succeeded") in store.calls
    file = await store.get_file(gen.file_id)
    assert file is not None and file.blocks[-1].text == "one two three four "
    assert [e.seq for e in await store.read_events(gen.id)] == list(range(1, stored.last_seq + 1))


class BlockCounting(SqliteStore):
    """Counts how many times each block is queued for writing (a file's blocks included)."""

    def __init__(self, url: str) -> None:
        super().__init__(url, batch_s=0)
        self.writes: list[list[str]] = []  # the block ids of each put_all / put_started
        queue_blocks = self._writer.add_blocks

        def counted(blocks: Sequence[Block]) -> None:  # (every block the store writes)
            if self.writes:
                self.writes[-1] += [b.id for b in blocks]
            queue_blocks(blocks)

        self._writer.add_blocks = counted  # type: ignore[method-assign]

    async def put_all(self, generation: Generation, **changes: Any) -> None:
        self.writes.append([])
        await super().put_all(generation, **changes)


async def test_the_first_and_the_last_write_hand_each_block_over_once(make_runtime, tmp_path) -> None:
    store = BlockCounting(f"sqlite:///{tmp_path / 'once.db'}")
    runtime = await make_runtime(store, persist_interval_s=0.01)
    first = await runtime.start(GenerateRequest(generator="echo", prompt="one two "))
    with anyio.fail_after(20):
        while (stored := await store.get_generation(first.id)) is None or not stored.state.finished:
            await anyio.sleep(0.02)
    # The next turn of the conversation: its writes carry the whole conversation.
    gen = await runtime.start(GenerateRequest(generator="echo", prompt="three ", file_id=first.file_id))
    with anyio.fail_after(20):
        while (stored := await store.get_generation(gen.id)) is None or not stored.state.finished:
            await anyio.sleep(0.02)
    assert len(store.writes) >= 4  # two starts, two ends (and any block event between)
    for ids in store.writes:
        assert len(ids) == len(set(ids)), store.writes
    file = await store.get_file(gen.file_id)
    assert file is not None
    assert [b.text for b in file.blocks] == ["one two ", "one two ", "three ", "three "]
    # sqlite rewrites only the blocks a write changed: the last one, the turn's output.
    assert store.writes[-1] == [file.blocks[-1].id]


async def test_sqlite_commits_at_most_once_per_batch_interval_and_a_read_commits_at_once(tmp_path) -> None:
    import sqlite3

    path = tmp_path / "batch.db"
    store = SqliteStore(f"sqlite:///{path}?batch=3600")
    await store.open()
    try:

        def committed(generation_id: str) -> int:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                return int(conn.execute("SELECT COALESCE(SUM(last_seq - first_seq + 1), 0) FROM segments JOIN logs ON no = log WHERE generation_id = ?", (generation_id,)).fetchone()[0])
            finally:
                conn.close()

        first = [Event("block.delta", 1, "gen_a", {"block_id": "b", "offset": 0, "text": "x"})]
        await store.append_events("gen_a", first)
        assert len(await store.read_events("gen_a")) == 1  # (a read commits what came before it)
        second = [Event("block.delta", 2, "gen_a", {"block_id": "b", "offset": 1, "text": "y"})]
        await store.append_events("gen_a", second)
        for _ in range(20):
            await anyio.lowlevel.checkpoint()
        assert committed("gen_a") == 1  # the second waits for the next batch...
        assert [e.seq for e in await store.read_events("gen_a")] == [1, 2]  # ...unless someone reads
        assert committed("gen_a") == 2
    finally:
        await store.close()
