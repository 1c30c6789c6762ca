"""Conversations (``file_id``) on an in-process runtime: the next generation sees every
block of the one before, however the store's reads and writes interleave."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from streaming.model import File, Generation
from streaming.plugin import BlockTypePluginOutput, InvocableResponse, StreamingGenerator
from streaming.requests import GenerateRequest
from streaming.runtime import Runtime
from streaming.stores.sqlite import SqliteStore

pytestmark = pytest.mark.anyio


class Gated(StreamingGenerator):
    """Writes ``"a "`` once its gate opens."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = anyio.Event()

    def determine_output_block_types(self, request: Any) -> InvocableResponse[BlockTypePluginOutput]:
        return InvocableResponse(data=BlockTypePluginOutput(block_types_to_create=["text/plain"]))

    async def run(self, request: Any) -> AsyncIterator[str]:
        await self.gate.wait()
        yield "a "


class HeldFileRead(SqliteStore):
    """A real sqlite store whose next ``get_file`` reads at once but answers only when
    ``release`` is set: a read that is slow to come back (a loaded worker thread)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.held: anyio.Event | None = None
        self.read = anyio.Event()
        self.release = anyio.Event()

    def hold_next_read(self) -> None:
        self.held = self.release

    async def get_file(self, file_id: str) -> File | None:
        file = await super().get_file(file_id)
        held, self.held = self.held, None
        if held is not None:
            self.read.set()
            await held.wait()
        return file


class Finished:
    """Listens to a runtime: which generations have ended and written their last state."""

    def __init__(self, runtime: Runtime) -> None:
        self.ids: set[str] = set()
        self.changed = anyio.Event()
        runtime.listeners.append(self.listener)

    def listener(self, kind: str, generation: Generation) -> None:
        if kind == "finished":
            self.ids.add(generation.id)
            self.changed.set()
            self.changed = anyio.Event()

    async def wait(self, generation_id: str) -> None:
        with anyio.fail_after(20):
            while generation_id not in self.ids:
                await self.changed.wait()


async def test_a_read_of_the_conversation_from_before_the_last_write_is_not_used(make_runtime, tmp_path) -> None:
    # The next turn read the conversation while the turn before was still running, and got
    # the answer only after that turn had written its blocks and dropped its claim. The
    # runtime must not start the next turn from (nor write back) that stale read.
    store = HeldFileRead(f"sqlite:///{tmp_path / 'conv.db'}")
    gated = Gated()
    runtime = await make_runtime(store, generators={"gated": gated})
    finished = Finished(runtime)
    first = await runtime.start(GenerateRequest(generator="gated", prompt="a ", on_disconnect="continue"))
    store.hold_next_read()
    async with anyio.create_task_group() as tg:
        started: list[Generation] = []

        async def next_turn() -> None:
            started.append(await runtime.start(
                GenerateRequest(generator="echo", prompt="b ", file_id=first.file_id, on_disconnect="continue")
            ))

        tg.start_soon(next_turn)
        with anyio.fail_after(20):
            await store.read.wait()  # read while the first turn's output is still empty
        gated.gate.set()
        await finished.wait(first.id)
        store.release.set()
    await finished.wait(started[0].id)
    texts = [b.text for b in (await runtime.get_file(first.file_id)).blocks]
    assert texts == ["a ", "a ", "b ", "b "]
    assert [b.text for b in (await store.get_file(first.file_id)).blocks] == texts
