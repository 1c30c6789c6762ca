"""The store writer, on an in-process runtime with a real sqlite store whose writes fail
for a while."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest
from prometheus_client import generate_latest
from streaming.server.metrics import registry_for

from streaming.errors import StoreError
from streaming.events import Event
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
