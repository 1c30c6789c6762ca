"""The runner, on an in-process runtime: what happens after a terminal event happens,
whatever raises."""

from __future__ import annotations

import logging

import anyio
import pytest

from streaming.requests import GenerateRequest

pytestmark = pytest.mark.anyio


async def test_a_raising_finish_listener_skips_no_cleanup(make_runtime, caplog) -> None:
    runtime = await make_runtime(live_retention_s=0.01)
    heard: list[str] = []

    def boom(kind: str, generation: object) -> None:
        raise RuntimeError("listener bug")

    runtime.listeners.append(boom)
    runtime.listeners.append(lambda kind, generation: heard.append(generation.id))  # type: ignore[attr-defined]
    with caplog.at_level(logging.ERROR, logger="streaming.runtime"):
        gen = await runtime.start(GenerateRequest(generator="echo", prompt="a b "), subscribed=True)
        events = [e async for e in runtime.events(gen.id)]
        assert events[-1].type == "generation.completed"
        with anyio.fail_after(10):
            while runtime.stats().in_memory:  # forgotten once its retention is over
                await anyio.sleep(0.01)
    assert heard == [gen.id]  # the listener after the raising one still heard it
    assert runtime.running_count == 0
    assert any("finish listener" in r.getMessage() and r.exc_info for r in caplog.records)
    # Its conversation was released: the next turn starts.
    again = await runtime.start(GenerateRequest(generator="echo", prompt="c ", file_id=gen.file_id), subscribed=True)
    assert [e.type async for e in runtime.events(again.id)][-1] == "generation.completed"
    assert [b.text for b in (await runtime.get_file(gen.file_id)).blocks] == ["a b ", "a b ", "c ", "c "]


async def test_a_finished_run_kept_for_its_readers_lets_go_of_its_plugins_copies(make_runtime) -> None:
    """A finished run stays in memory for live_retention_s (late readers, resumes): with
    its log, blocks and conversation, but not the copies of the conversation made for its
    plugin (in a long chat, a copy of every earlier block per turn)."""
    runtime = await make_runtime(live_retention_s=60)
    first = await runtime.start(GenerateRequest(generator="echo", prompt="a b "), subscribed=True)
    assert [e.type async for e in runtime.events(first.id)][-1] == "generation.completed"
    turn = await runtime.start(GenerateRequest(generator="echo", prompt="c ", file_id=first.file_id), subscribed=True)
    run = runtime._runner.live[turn.id]
    assert len(run.conversation) >= 3  # (running: the plugin's view of the conversation)
    assert [e.type async for e in runtime.events(turn.id)][-1] == "generation.completed"
    await run.done.wait()
    assert runtime._runner.live[turn.id] is run  # still kept for its readers
    assert run.conversation == [] and run.context_blocks == []
    assert [b.text for b in (await runtime.get_file(first.file_id)).blocks] == ["a b ", "a b ", "c ", "c "]
    assert [e.type async for e in runtime.events(turn.id)][-1] == "generation.completed"


async def test_closing_the_runtime_ends_a_running_generation_with_a_terminal_event(make_runtime) -> None:
    runtime = await make_runtime(shutdown_grace_s=0.05)
    gen = await runtime.start(
        GenerateRequest(generator="counting", prompt="x", options={"key": "close", "delay_ms": 5}, on_disconnect="continue")
    )
    await runtime.__aexit__(None, None, None)
    stored = await runtime.store.get_generation(gen.id)
    events = await runtime.store.read_events(gen.id)
    assert stored is not None and stored.state.value == "failed" and stored.error.code == "shutdown"
    assert events[-1].type == "generation.failed"


async def test_the_duration_limit_fails_the_generation(make_runtime) -> None:
    runtime = await make_runtime(max_duration_s=0.1)
    gen = await runtime.start(
        GenerateRequest(generator="counting", prompt="x", options={"key": "dur", "delay_ms": 5}), subscribed=True
    )
    events = [e async for e in runtime.events(gen.id)]
    assert events[-1].type == "generation.failed"
    assert events[-1].data["error"]["code"] == "max_duration"
