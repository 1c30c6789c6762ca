"""Control messages from other processes to a generation running here (shared stores):
cancel it, answer one of its tool calls, fail it (its lease lapsed and another process
failed it), or say that someone streams it there (restart the disconnect grace, and write
its events to the store at once for a while: ``Run.watched``)."""

from __future__ import annotations

from streaming.errors import StoreError
from streaming.runtime.run import Run
from streaming.runtime.subscriptions import Subscriptions
from streaming.runtime.tool_rounds import ToolRounds
from streaming.stores.base import Store

__all__ = ["obey_control", "presence_window"]


def presence_window(store: Store) -> float:
    """How long a follower's presence in another process counts: three of its pings (the
    store's ``presence_s``, 1 s on Redis)."""
    return 3 * float(getattr(store, "presence_s", 1.0))


async def obey_control(run: Run, store: Store, rounds: ToolRounds, subscriptions: Subscriptions) -> None:
    """Act on ``run``'s control messages until it ends (a child task of the run)."""
    watch_s = presence_window(store)
    async with store.control(run.id) as messages:
        async for msg in messages:
            kind = msg.get("type")
            if kind == "cancel":
                run.request_cancel(str(msg.get("reason") or "cancelled"))
            elif kind == "tool.result":
                rounds.resolve_message(run, msg)
            elif kind == "interrupted":
                run.request_stop(
                    StoreError(
                        "another process failed this generation: it found no lease of the process running "
                        "it in the store (that process stopped renewing it in time, or the store lost "
                        "its data, as a Redis restarted without persistence does)",
                        code="interrupted",
                    )
                )
            elif kind == "subscriber":
                run.watched(watch_s)
                subscriptions.left(run)
