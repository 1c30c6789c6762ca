"""The runtime's writes to Redis while a generation streams, over a real redis-server: the
events of every running generation go out in one call per flush (``append_many``), a flush
of nothing but text rewrites no block or record, a block read through another store
(another process) still shows the text streamed so far, folded from the log
(``fold_tail``; tests/test_redis_parts.py tests both on their own), and a log refused in a
batch fails its own generation only."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import anyio
import pytest

from streaming.events import Event
from streaming.model import Block, Generation, StreamState
from streaming.requests import GenerateRequest
from streaming.stores.redis import RedisStore
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio


class Counting(RedisStore):
    """Counts what the runtime writes."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.batches: list[int] = []
        self.block_writes = 0
        self.record_writes = 0

    async def append_many(self, logs: Sequence[tuple[str, Sequence[Event]]]) -> list[Exception | None]:
        self.batches.append(len(logs))
        return await super().append_many(logs)

    async def put_blocks(self, blocks: Sequence[Block]) -> None:
        self.block_writes += 1
        await super().put_blocks(blocks)

    async def put_generation(self, generation: Generation) -> None:
        self.record_writes += 1
        await super().put_generation(generation)


SLOW = {"rounds": [[{"text": "one "}, {"sleep_ms": 150}, {"text": "two "}, {"sleep_ms": 150},
                    {"text": "three "}, {"sleep_ms": 150}, {"text": "four "}, {"sleep_ms": 60_000}]]}


async def test_a_block_streaming_here_reads_whole_through_another_store(make_runtime, redis_server: RedisServer) -> None:
    url = f"{redis_server.url}?prefix=fold{uuid.uuid4().hex[:8]}:"
    here = Counting(url)
    runs = await make_runtime(here, persist_interval_s=0.01)
    elsewhere = RedisStore(url)  # another process sharing the store
    await elsewhere.open()
    reads = await make_runtime(RedisStore(url), persist_interval_s=0.01)
    try:
        gens = [await runs.start(GenerateRequest(generator="scripted", prompt="go", options=SLOW, on_disconnect="continue"))
                for _ in range(3)]
        gen = gens[0]
        block_id = gen.output_block_ids[0]
        with anyio.fail_after(20):
            while (block := await elsewhere.get_block(block_id)) is None or block.text != "one two three four ":
                await anyio.sleep(0.02)
        assert block.stream_state is StreamState.STARTED and block.request_id == gen.id
        writes = (here.block_writes, here.record_writes)

        # Nothing but text was flushed after the start: the stored blocks are those of the
        # start (the text above was folded from the log), and no flush rewrote them.
        raw = await here._r.get(here._k("blk", block_id))
        assert Block.model_validate_json(raw).text == ""
        # Every running generation's events went out together.
        assert max(here.batches) >= 2

        # The conversation and the generation, read in the other process, show it too.
        file = await elsewhere.get_file(gen.file_id or "")
        assert file is not None and file.blocks[-1].text == "one two three four "
        record = await elsewhere.get_generation(gen.id)
        assert record is not None and record.last_seq == len(await elsewhere.read_events(gen.id))
        blocks = await reads.get_generation_blocks(await reads.get_generation(gen.id))
        assert [b.text for b in blocks] == ["one two three four "]
        assert (await reads.get_block(block_id)).text == "one two three four "
        await anyio.sleep(0.2)
        assert (here.block_writes, here.record_writes) == writes  # (text only: still none)

        # Ended (cancelled): the stored block is final, with its text, no fold needed.
        for g in gens:
            await runs.cancel(g.id, "enough")
        with anyio.fail_after(20):
            while (stored := await elsewhere.get_generation(gen.id)) is None or not stored.state.finished:
                await anyio.sleep(0.02)
        raw = await here._r.get(here._k("blk", block_id))
        assert Block.model_validate_json(raw).text == "one two three four "
        block = await elsewhere.get_block(block_id)
        assert block is not None and block.stream_state is StreamState.ABORTED
        assert block.text == "one two three four "
    finally:
        await elsewhere.close()


async def test_a_run_whose_log_another_process_closed_fails_alone(make_runtime, redis_server: RedisServer) -> None:
    url = f"{redis_server.url}?prefix=alone{uuid.uuid4().hex[:8]}:"
    store = RedisStore(url)
    runtime = await make_runtime(store, persist_interval_s=0.01)
    script = {"rounds": [[{"text": f"w{i} "} if i % 2 == 0 else {"sleep_ms": 40} for i in range(30)]]}
    gens = [await runtime.start(GenerateRequest(generator="scripted", prompt="go", options=script, on_disconnect="continue"))
            for _ in range(4)]
    victim = gens[1]
    with anyio.fail_after(20):
        while not (stored := await store.read_events(victim.id)) or stored[-1].type != "block.delta":
            await anyio.sleep(0.01)
    # Another process ends its log (as a reaper that found our lease lapsed would).
    seq = len(await store.read_events(victim.id)) + 1
    await store._logs.append(victim.id, [Event("generation.failed", seq, victim.id, {"error": {"code": "interrupted"}})])
    with anyio.fail_after(30):
        ended = {g.id: [e async for e in runtime.events(g.id)][-1] for g in gens}
    assert ended[victim.id].type == "generation.failed" and ended[victim.id].data["error"]["code"] == "interrupted"
    for g in gens:
        if g.id != victim.id:
            assert ended[g.id].type == "generation.completed"
            with anyio.fail_after(20):
                while (rec := await store.get_generation(g.id)) is None or not rec.state.finished:
                    await anyio.sleep(0.02)
            events = await store.read_events(g.id)
            assert [e.seq for e in events] == list(range(1, len(events) + 1)) and events[-1].terminal
    assert runtime.stats().store_errors >= 1
