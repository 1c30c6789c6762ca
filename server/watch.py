"""Watch a client that may leave while its request's work runs.

The work runs in the request's task; one plain asyncio task (the listener) waits for
``http.disconnect``. When the client leaves, the listener cancels the work once and marks
the watch ``left``; the work also stops at its next step if something under it swallowed
that cancellation. The request's task owns the listener: it stops it when the work ends and
awaits its exit. (Plain asyncio rather than an anyio task group: an idle stream is mostly
this state, and a task group with its cancel scopes costs a few KiB more per stream.)

Used by every streaming response (server/sse.py, which also sends heartbeats from the
listener) and by routes that answer once but wait for a generation first (non-streaming
``/v1/chat/completions``). Needs asyncio, as uvicorn runs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from starlette.types import Receive

__all__ = ["ClientGone", "ClientWatch"]

T = TypeVar("T")


class ClientGone(Exception):
    """The client went away before the work was done (the work was cancelled)."""


class ClientWatch:
    """Run work in the request's task while a listener task watches the client (see the
    module's doc). ``left`` says the client went away (or the listener ended otherwise)."""

    __slots__ = ("left", "_done")

    def __init__(self) -> None:
        self.left = False
        self._done = False

    async def watch(self, receive: Receive, work: Awaitable[T]) -> T:
        """``await work``, cancelled if the client leaves first.

        Raises:
            ClientGone: the client left and the work was cancelled.
        """
        me = asyncio.current_task()
        assert me is not None
        listener = asyncio.get_running_loop().create_task(self._listen(receive, me))
        try:
            return await work
        except asyncio.CancelledError:
            if not self.left or me.cancelling() > 1:
                raise  # the server is cancelling us (too), not only the listener
            raise ClientGone from None
        finally:
            self._done = True  # (before any await: the listener will not cancel us now)
            if self.left:
                # The listener's one cancel: delivered above, or swallowed under the work.
                me.uncancel()
            listener.cancel()
            await asyncio.wait((listener,))  # its exit, whatever it was

    def _stop(self, work: asyncio.Task[Any]) -> None:
        """The listener has ended: stop the work (once), unless it has ended already."""
        if not self._done:
            self.left = True
            work.cancel()

    async def _listen(self, receive: Receive, work: asyncio.Task[Any]) -> None:
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        finally:
            self._stop(work)
