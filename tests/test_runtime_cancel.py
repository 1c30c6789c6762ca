"""Cancelling a generation on an in-process runtime."""

from __future__ import annotations

import pytest

from streaming.requests import GenerateRequest

pytestmark = pytest.mark.anyio


async def test_cancel_answers_with_the_last_seq_of_the_log(make_runtime) -> None:
    runtime = await make_runtime()
    gen = await runtime.start(
        GenerateRequest(generator="counting", prompt="x", options={"key": "cancel-seq", "delay_ms": 5}),
        subscribed=True,
    )
    async for event in runtime.events(gen.id):
        if event.type == "block.delta":
            break
    cancelled = await runtime.cancel(gen.id)
    assert cancelled.state.value == "cancelled"
    read = await runtime.get_generation(gen.id)
    assert cancelled.last_seq == read.last_seq
    events = [e async for e in runtime.events(gen.id)]
    assert events[-1].type == "generation.cancelled" and events[-1].seq == cancelled.last_seq
