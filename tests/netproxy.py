"""A loopback TCP proxy that cuts each connection after a chosen number of bytes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class CuttingProxy:
    """Forward 127.0.0.1:<port> to ``target_port``. The *n*-th request for an event stream
    (a path with ``/events``) has its connection cut, both sides closed, after
    ``cut_after(n)`` bytes of response (None: never)."""

    def __init__(self, target_port: int, cut_after: Callable[[int], int | None]) -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        self.connections = 0
        self.cuts = 0
        self.streams = 0
        self._server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        self.connections += 1
        state: dict[str, int | None] = {"limit": None, "sent": 0}
        sreader, swriter = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def upstream() -> None:
            try:
                while data := await creader.read(65536):
                    if b"/events" in data:
                        state["limit"] = self.cut_after(self.streams)
                        state["sent"] = 0
                        self.streams += 1
                    swriter.write(data)
                    await swriter.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                swriter.close()

        async def downstream() -> None:
            try:
                while data := await sreader.read(65536):
                    limit, sent = state["limit"], state["sent"] or 0
                    if limit is not None and sent + len(data) >= limit:
                        cwriter.write(data[: max(0, limit - sent)])
                        await cwriter.drain()
                        self.cuts += 1
                        return
                    cwriter.write(data)
                    state["sent"] = sent + len(data)
                    await cwriter.drain()
            except ConnectionError:
                pass
            finally:
                cwriter.close()
                swriter.close()

        up = asyncio.ensure_future(upstream())
        await downstream()
        up.cancel()
