"""Double texting (:mod:`streaming.runtime.multitask`) on an in-process runtime: a message
for a conversation busy with another generation is enqueued, interrupts it, or rolls it back."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from streaming.errors import ConflictError
from streaming.model import Generation, GenerationState
from streaming.requests import GenerateRequest
from streaming.runtime import Runtime
from tests.test_runtime_conversations import Gated  # writes "a " once its gate opens

pytestmark = pytest.mark.anyio


async def _ended(runtime: Runtime, generation_id: str) -> Generation:
    with anyio.fail_after(20):
        async for event in runtime.events(generation_id):
            if event.terminal:
                break
    return await runtime.get_generation(generation_id)


def _request(generator: str, prompt: str, file_id: str | None = None, multitask: str = "reject") -> GenerateRequest:
    return GenerateRequest(
        generator=generator, prompt=prompt, file_id=file_id, multitask=multitask, on_disconnect="continue"
    )


async def test_reject_refuses_a_busy_conversation(make_runtime: Any) -> None:
    gated = Gated()
    runtime = await make_runtime(generators={"gated": gated})
    first = await runtime.start(_request("gated", "a "))
    with pytest.raises(ConflictError):
        await runtime.start(_request("echo", "b ", first.file_id))
    gated.gate.set()
    assert (await _ended(runtime, first.id)).state is GenerationState.SUCCEEDED


async def test_enqueue_waits_its_turn_then_sees_the_turn_before(make_runtime: Any) -> None:
    gated = Gated()
    runtime = await make_runtime(generators={"gated": gated})
    first = await runtime.start(_request("gated", "a "))
    second = await runtime.start(_request("echo", "b ", first.file_id, "enqueue"))
    assert second.state is GenerationState.WAITING
    gated.gate.set()
    assert (await _ended(runtime, second.id)).state is GenerationState.SUCCEEDED
    texts = [b.text for b in (await runtime.get_file(first.file_id)).blocks]
    assert texts == ["a ", "a ", "b ", "b "]


async def test_a_waiting_generation_cancelled_never_runs(make_runtime: Any) -> None:
    gated = Gated()
    runtime = await make_runtime(generators={"gated": gated})
    first = await runtime.start(_request("gated", "a "))
    second = await runtime.start(_request("echo", "b ", first.file_id, "enqueue"))
    await runtime.cancel(second.id, "changed my mind")
    ended = await _ended(runtime, second.id)
    assert ended.state is GenerationState.CANCELLED and not ended.output_block_ids
    types = [e.type for e in await runtime.store.read_events(second.id)]
    assert types == ["generation.started", "generation.cancelled"]
    gated.gate.set()
    assert (await _ended(runtime, first.id)).state is GenerationState.SUCCEEDED


async def test_interrupt_keeps_the_partial_turn_and_rollback_takes_it_out(make_runtime: Any) -> None:
    gated = Gated()
    runtime = await make_runtime(generators={"gated": gated})
    first = await runtime.start(_request("gated", "a "))
    second = await runtime.start(_request("echo", "b ", first.file_id, "interrupt"))
    assert (await runtime.get_generation(first.id)).state is GenerationState.CANCELLED
    assert (await _ended(runtime, second.id)).state is GenerationState.SUCCEEDED
    kept = [b.text for b in (await runtime.get_file(first.file_id)).blocks]
    assert kept[0] == "a " and kept[-2:] == ["b ", "b "]  # the interrupted turn stays (aborted)

    third = await runtime.start(_request("gated", "c ", first.file_id))
    fourth = await runtime.start(_request("echo", "d ", first.file_id, "rollback"))
    assert (await runtime.get_generation(third.id)).state is GenerationState.CANCELLED
    assert (await _ended(runtime, fourth.id)).state is GenerationState.SUCCEEDED
    texts = [b.text for b in (await runtime.get_file(first.file_id)).blocks]
    assert "c " not in texts and texts[-2:] == ["d ", "d "] and texts[: len(kept)] == kept
