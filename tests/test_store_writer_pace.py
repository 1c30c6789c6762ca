"""How often a running generation's events go to a shared store: every tick while someone
in another process follows it, every ``persist_unwatched_s`` otherwise. On an in-process runtime with a shared memory store that records when each
generation's events were written."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence

import anyio
import pytest

from streaming.events import Event
from streaming.requests import GenerateRequest
from streaming.stores.base import Store
from streaming.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio

UNWATCHED_S = 0.2


class Shared(MemoryStore):
    """A memory store other runtimes could share, noting when each log was appended to."""

    shared = True
    presence_s = 0.1  # (a follower elsewhere would say so this often: the writer's window is 3x)

    def __init__(self) -> None:
        super().__init__()
        self.writes: dict[str, list[float]] = defaultdict(list)

    async def append_many(self, logs: Sequence[tuple[str, Sequence[Event]]]) -> list[Exception | None]:
        now = time.monotonic()
        for generation_id, events in logs:
            if events:
                self.writes[generation_id].append(now)
        return await Store.append_many(self, logs)


def counting(key: str) -> GenerateRequest:
    return GenerateRequest(
        generator="counting", prompt="x", options={"key": key, "limit": 240, "delay_ms": 5}, on_disconnect="continue"
    )


async def test_a_generation_followed_elsewhere_is_written_every_tick_and_others_less_often(make_runtime) -> None:
    store = Shared()
    runtime = await make_runtime(store, persist_interval_s=0.01, persist_unwatched_s=UNWATCHED_S)
    watched = await runtime.start(counting("pace-watched"))
    alone = await runtime.start(counting("pace-alone"))
    with anyio.fail_after(30):
        while (await runtime.get_generation(alone.id)).state.value == "running" or (
            await runtime.get_generation(watched.id)
        ).state.value == "running":
            # A follower in another process says it is there (as Redis's follow does).
            await store.publish_control(watched.id, {"type": "subscriber"})
            await anyio.sleep(store.presence_s)
    alone_writes, watched_writes = store.writes[alone.id], store.writes[watched.id]
    # Unwatched: never two writes closer than persist_unwatched_s (the last, its final
    # write, whenever it ends).
    gaps = [b - a for a, b in zip(alone_writes[:-1], alone_writes[1:-1], strict=False)]
    assert gaps and min(gaps) >= UNWATCHED_S * 0.95
    # Watched (from its first presence on): written every tick, far more often.
    assert len(watched_writes) >= 3 * len(alone_writes)
    # Both logs are whole in the store at the end.
    for gen in (alone, watched):
        stored = await store.read_events(gen.id)
        assert [e.seq for e in stored] == list(range(1, len(stored) + 1)) and stored[-1].terminal


async def test_while_nothing_is_watched_the_writer_sleeps_long_and_a_follower_wakes_it(make_runtime) -> None:
    """With no run watched, the flusher wakes once per ``persist_unwatched_s`` (not every
    tick); a follower showing up elsewhere cuts that sleep short: its run is written at once."""
    store = Shared()
    runtime = await make_runtime(store, persist_interval_s=0.01, persist_unwatched_s=3.0)
    gen = await runtime.start(counting("pace-woken"))
    await anyio.sleep(0.3)
    assert store.writes[gen.id] == []  # (its first write is a long tick away)
    woken = time.monotonic()
    await store.publish_control(gen.id, {"type": "subscriber"})
    with anyio.fail_after(2):
        while not store.writes[gen.id]:
            await anyio.sleep(0.01)
    assert store.writes[gen.id][0] - woken < 0.5
    await runtime.cancel(gen.id)


async def test_under_load_runs_nobody_follows_are_written_less_often_up_to_the_cap(make_runtime) -> None:
    """With hundreds of generations streaming, the interval at which those nobody follows
    elsewhere are written grows with their number (``persist_unwatched_s`` per 100 of
    them), up to ``persist_unwatched_max_s``; with a few it stays ``persist_unwatched_s``.
    Every log is whole in the store either way."""
    store = Shared()
    runtime = await make_runtime(
        store, persist_interval_s=0.01, persist_unwatched_s=0.1, persist_unwatched_max_s=0.25
    )

    def paced(key: str) -> GenerateRequest:
        return GenerateRequest(
            generator="counting", prompt="x", options={"key": key, "limit": 40, "delay_ms": 50}, on_disconnect="continue"
        )

    async def steady_gaps(count: int) -> list[float]:
        """The gaps between the writes of each of ``count`` generations streaming at once
        (their first two writes and their final one left out: the load is still rising or
        falling then), and every log checked whole."""
        gens = [await runtime.start(paced(f"load-{count}-{i}")) for i in range(count)]
        with anyio.fail_after(60):
            for gen in gens:
                while (await runtime.get_generation(gen.id)).state.value == "running":
                    await anyio.sleep(0.05)
        gaps = []
        for gen in gens:
            writes = store.writes[gen.id]
            gaps += [b - a for a, b in zip(writes[1:-2], writes[2:-1], strict=True)]
            stored = await store.read_events(gen.id)
            assert [e.seq for e in stored] == list(range(1, len(stored) + 1)) and stored[-1].terminal
        return gaps

    light = await steady_gaps(3)
    assert light and min(light) >= 0.1 * 0.95 and sorted(light)[len(light) // 2] < 0.2, light
    # 0.1 s per 100 would be 0.3 s: the cap, 0.25 s, holds (shorter again as runs end).
    heavy = sorted(await steady_gaps(300))
    assert heavy and heavy[0] >= 0.1 * 0.95, heavy[0]
    assert 0.2 <= heavy[len(heavy) // 2] < 0.4, heavy[len(heavy) // 2]
