"""Admission and the asyncio helpers, on their own."""

from __future__ import annotations

import logging

import anyio
import anyio.lowlevel
import pytest

from streaming.errors import LimitExceededError
from streaming.runtime.admission import Admission
from streaming.runtime.aio import LazyEvent, wake_future
from streaming.runtime.settings import RuntimeSettings
from streaming.tasks import TaskOwner


def test_admission_refuses_until_it_accepts_then_counts_limits() -> None:
    admission = Admission(RuntimeSettings(max_running=2, max_running_per_owner=1))
    with pytest.raises(LimitExceededError, match="shutting down"):
        admission.check(None)
    admission.accepting = True
    admission.check("k1")
    admission.admit("k1")
    with pytest.raises(LimitExceededError, match="this key"):
        admission.check("k1")
    admission.check("k2")
    admission.admit(None)
    with pytest.raises(LimitExceededError, match="already running"):
        admission.check("k3")
    admission.release("k1")
    admission.release(None)
    assert admission.running == 0 and admission.running_for("k1") == 0
    admission.check("k1")


@pytest.mark.anyio
async def test_a_task_owner_sees_failures_and_awaits_what_it_cancels(caplog) -> None:
    owner = TaskOwner("test")
    finished: list[str] = []

    async def fails() -> None:
        raise ValueError("seen")

    async def sleeps() -> None:
        try:
            await anyio.sleep(60)
        finally:
            finished.append("sleeper")

    with caplog.at_level(logging.ERROR, logger="streaming.runtime"):
        owner.spawn(fails(), name="failing child")
        owner.spawn(sleeps(), name="sleeping child")
        await owner.wait(timeout_s=0.05)
        assert len(owner) == 1
        await owner.aclose()
    assert finished == ["sleeper"] and len(owner) == 0
    failure = next(r for r in caplog.records if "failing child" in r.getMessage())
    assert isinstance(failure.exc_info[1], ValueError)


@pytest.mark.anyio
async def test_lazy_event_and_wake_futures() -> None:
    event = LazyEvent()
    woke: list[int] = []

    async def waiter(i: int) -> None:
        await event.wait()
        woke.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(waiter, i)
        await anyio.lowlevel.checkpoint()
        event.set()
    assert sorted(woke) == [0, 1, 2] and event.is_set()
    await event.wait()  # set: returns at once

    woken, wake = wake_future()
    assert not woken.done()
    wake()
    wake()  # a second wake-up (after a cancel, say) is harmless
    await woken
