"""The memory store keeps a finished generation's record and log for ``ttl`` seconds and at
most ``keep`` of them, the oldest dropped first, and conversations (with their blocks) for
``ttl`` after their last write and at most ``keep`` of them; running generations, and the
conversations they run on, stay. In the store alone, then through an in-process runtime,
then the CLI's message for a bad URL."""

from __future__ import annotations

import subprocess
import sys

import anyio
import pytest

from streaming.errors import InvalidRequestError, NotFoundError
from streaming.events import Event
from streaming.model import Block, File, Generation, GenerationState
from streaming.requests import GenerateRequest
from streaming.stores import open_store
from streaming.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio


async def _finished(store: MemoryStore, n: int, *, state: GenerationState = GenerationState.SUCCEEDED) -> Generation:
    """A generation with a conversation of one block and a log of two events, written as the
    runtime writes one (log, conversation, then the record that says finished)."""
    gen = Generation(id=f"gen_{n}", file_id=f"file_{n}", generator="echo")
    block = Block(id=f"blk_{n}", file_id=gen.file_id, text=f"answer {n}")
    await store.put_file(File(id=gen.file_id, blocks=[block]))
    await store.append_events(gen.id, [
        Event("block.delta", 1, gen.id, {"block_id": block.id, "offset": 0, "text": block.text}),
        Event("generation.completed", 2, gen.id, {}),
    ])
    gen.state = state
    await store.put_generation(gen)
    return gen


async def test_at_most_keep_finished_generations_the_oldest_dropped_first() -> None:
    store = MemoryStore(keep=3)
    running = Generation(id="gen_running", file_id="file_running", generator="echo")
    await store.put_file(File(id=running.file_id, blocks=[Block(id="blk_running", file_id=running.file_id)]))
    await store.put_generation(running)
    gens = [await _finished(store, n) for n in range(5)]
    for gen in gens[:2]:
        assert await store.get_generation(gen.id) is None
        assert await store.read_events(gen.id) == []
    for gen in gens[2:]:
        stored = await store.get_generation(gen.id)
        assert stored is not None and stored.state == GenerationState.SUCCEEDED
        assert [e.seq for e in await store.read_events(gen.id)] == [1, 2]
    # A running generation is never dropped, however many finish.
    assert (await store.get_generation(running.id)) is not None
    # A finished one written again (a late write) is not counted twice: the oldest kept stays.
    await store.put_generation(gens[4])
    assert await store.get_generation(gens[2].id) is not None


async def test_at_most_keep_conversations_the_least_recently_written_dropped_first() -> None:
    store = MemoryStore(keep=3)
    running = Generation(id="gen_running", file_id="file_running", generator="echo")
    await store.put_file(File(id=running.file_id, blocks=[Block(id="blk_running", file_id=running.file_id)]))
    await store.put_generation(running)  # the oldest conversation, but a generation runs on it
    gens = [await _finished(store, n) for n in range(5)]
    # Six conversations written, three kept: the running one's, and the two written last.
    for gen in gens[:3]:
        assert await store.get_file(gen.file_id) is None
        assert await store.get_block(f"blk_{gen.id[4:]}") is None  # its blocks went with it
    for gen in gens[3:]:
        file = await store.get_file(gen.file_id)
        assert file is not None and [b.text for b in file.blocks] == [f"answer {gen.id[4:]}"]
    kept = await store.get_file(running.file_id)
    assert kept is not None and [b.id for b in kept.blocks] == ["blk_running"]
    # Once it has finished, its conversation is one like the others: the oldest goes next.
    running.state = GenerationState.SUCCEEDED
    await store.put_generation(running)
    await _finished(store, 5)
    assert await store.get_file(running.file_id) is None
    assert await store.get_file(gens[4].file_id) is not None


async def test_a_conversation_written_again_is_kept_as_the_newest() -> None:
    store = MemoryStore(keep=2)
    first = await _finished(store, 1)
    await _finished(store, 2)
    file = await store.get_file(first.file_id)  # a second turn on the first conversation
    assert file is not None
    await store.put_file(file)
    await _finished(store, 3)
    assert await store.get_file(first.file_id) is not None
    assert await store.get_file("file_2") is None


async def test_finished_generations_older_than_ttl_are_dropped_when_the_next_one_finishes() -> None:
    store = MemoryStore(ttl_s=0.05)
    first = await _finished(store, 1, state=GenerationState.FAILED)
    assert await store.get_generation(first.id) is not None
    await anyio.sleep(0.1)
    second = await _finished(store, 2)
    assert await store.get_generation(first.id) is None and await store.read_events(first.id) == []
    assert await store.get_file(first.file_id) is None  # not written for longer than ttl
    assert await store.get_generation(second.id) is not None and await store.get_file(second.file_id) is not None
    forever = MemoryStore(ttl_s=0)  # no limit of age
    old = await _finished(forever, 1)
    await anyio.sleep(0.05)
    await _finished(forever, 2)
    assert await forever.get_generation(old.id) is not None and await forever.get_file(old.file_id) is not None


async def test_tool_claims_go_with_their_generation() -> None:
    store = MemoryStore(keep=1)
    gen = Generation(id="gen_tools", file_id="file_tools", generator="echo")
    await store.put_generation(gen)
    assert await store.claim_tool_result(gen.id, "call_1") is True
    assert await store.claim_tool_result(gen.id, "call_1") is False  # answered once
    gen.state = GenerationState.SUCCEEDED
    await store.put_generation(gen)
    await _finished(store, 2)
    assert await store.get_generation(gen.id) is None
    assert store._claimed == {}


def test_the_url_sets_ttl_and_keep_and_refuses_bad_values() -> None:
    default = open_store("memory://")
    assert isinstance(default, MemoryStore) and (default.ttl_s, default.keep) == (86_400.0, 10_000)
    store = open_store("memory://?ttl=60&keep=5")
    assert isinstance(store, MemoryStore) and (store.ttl_s, store.keep) == (60.0, 5)
    for url, words in (("memory://?keep=0", "keep at least 1"), ("memory://?ttl=-1", "ttl must be at least 0"),
                       ("memory://?ttl=nan", "ttl must be at least 0"), ("memory://?ttl=soon", "bad memory store URL"),
                       ("memory://?keep=2.5", "bad memory store URL"), ("memory://?size=3", "unknown parameter 'size'")):
        with pytest.raises(InvalidRequestError, match=words):
            open_store(url)


async def test_through_the_runtime_a_dropped_generation_is_not_found_and_its_conversation_stays(make_runtime) -> None:
    runtime = await make_runtime(MemoryStore(keep=2), live_retention_s=0.01)
    first = await runtime.start(GenerateRequest(generator="echo", prompt="a "), subscribed=True)
    assert [e.type async for e in runtime.events(first.id)][-1] == "generation.completed"
    later = []
    other = None  # two turns on a second conversation: three generations, two conversations
    for prompt in ("b ", "c "):
        gen = await runtime.start(GenerateRequest(generator="echo", prompt=prompt, file_id=other), subscribed=True)
        assert [e.type async for e in runtime.events(gen.id)][-1] == "generation.completed"
        other = gen.file_id
        later.append(gen)
    with anyio.fail_after(10):
        while runtime.stats().in_memory:  # the runs are forgotten: reads go to the store
            await anyio.sleep(0.01)
    with pytest.raises(NotFoundError):
        await runtime.get_generation(first.id)
    assert [b.text for b in (await runtime.get_file(first.file_id)).blocks] == ["a ", "a "]
    for gen in later:
        assert (await runtime.get_generation(gen.id)).state == GenerationState.SUCCEEDED
        assert [e.type async for e in runtime.events(gen.id)][-1] == "generation.completed"
    assert [b.text for b in (await runtime.get_file(other)).blocks] == ["b ", "b ", "c ", "c "]


async def test_through_the_runtime_a_turn_on_a_dropped_conversation_is_not_found(make_runtime) -> None:
    runtime = await make_runtime(MemoryStore(keep=1), live_retention_s=0.01)
    first = await runtime.start(GenerateRequest(generator="echo", prompt="a "), subscribed=True)
    assert [e.type async for e in runtime.events(first.id)][-1] == "generation.completed"
    second = await runtime.start(GenerateRequest(generator="echo", prompt="b "), subscribed=True)
    assert [e.type async for e in runtime.events(second.id)][-1] == "generation.completed"
    with anyio.fail_after(10):
        while runtime.stats().in_memory:
            await anyio.sleep(0.01)
    with pytest.raises(NotFoundError):
        await runtime.get_file(first.file_id)
    with pytest.raises(NotFoundError):
        await runtime.start(GenerateRequest(generator="echo", prompt="again ", file_id=first.file_id))
    # The kept conversation takes its next turn.
    third = await runtime.start(GenerateRequest(generator="echo", prompt="c ", file_id=second.file_id), subscribed=True)
    assert [e.type async for e in runtime.events(third.id)][-1] == "generation.completed"
    assert [b.text for b in (await runtime.get_file(second.file_id)).blocks] == ["b ", "b ", "c ", "c "]


def test_serve_says_what_is_wrong_with_a_bad_memory_url() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streaming.server.cli", "serve", "--store", "memory://?keep=zero", "--port", "0"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode != 0 and "bad memory store URL parameter" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
