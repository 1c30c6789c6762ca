"""One generation at a time per conversation, across two real server processes on one Redis."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import anyio
import httpx
import pytest
from streaming.client.client import StreamingClient

from tests.redis_server import RedisServer
from tests.server_process import server_pair

pytestmark = pytest.mark.anyio


async def ended(http: httpx.AsyncClient, gen_id: str) -> dict[str, object]:
    with anyio.fail_after(10):
        while True:
            body: dict[str, object] = (await http.get(f"/generations/{gen_id}")).json()
            if body["generation"]["state"] != "running":  # type: ignore[index]
                return body
            await anyio.sleep(0.02)


async def test_two_processes_never_extend_one_conversation_at_once(redis_server: RedisServer, tmp_path: Path) -> None:
    url = f"{redis_server.url}?lease=2&prefix=conv{uuid.uuid4().hex[:8]}:"
    with server_pair(tmp_path, url) as (a, b):
        async with httpx.AsyncClient(base_url=a.url, timeout=10) as on_a, \
                httpx.AsyncClient(base_url=b.url, timeout=10) as on_b:
            first = (await on_a.post("/generations", json={"generator": "echo", "prompt": "a "})).json()
            file_id = first["generation"]["file_id"]
            await ended(on_a, first["generation"]["id"])
            slow = {"generator": "echo", "prompt": "b ", "file_id": file_id,
                    "options": {"repeat": 20, "delay_ms": 25}}
            answers = await asyncio.gather(*[http.post("/generations", json=slow) for http in (on_a, on_b) * 4])
            codes = sorted(r.status_code for r in answers)
            assert codes == [201] + [409] * 7, [r.text for r in answers]
            winner = next(r.json()["generation"]["id"] for r in answers if r.status_code == 201)
            for r in answers:
                if r.status_code == 409:
                    # Held by the winner, or (in the winner's process) while it was starting.
                    message = r.json()["error"]["message"]
                    assert r.json()["error"]["code"] == "conflict"
                    assert winner in message or "starting" in message, message
            await ended(on_a, winner)
            # Once it has ended, the other process continues the conversation, and sees
            # every block the winner wrote.
            other = on_b if any(r.status_code == 201 for r in answers[0::2]) else on_a
            again = await other.post("/generations", json={"generator": "echo", "prompt": "c ", "file_id": file_id})
            assert again.status_code == 201, again.text
            await ended(other, again.json()["generation"]["id"])
            texts = [blk["text"] for blk in (await other.get(f"/files/{file_id}")).json()["blocks"]]
            assert texts == ["a ", "a ", "b ", "b " * 20, "c ", "c "]


async def test_continuing_at_the_terminal_event_is_never_busy(redis_server: RedisServer, tmp_path: Path) -> None:
    # A client that sends the next turn the moment it reads the terminal event, through
    # the process that ran the turn or through the other one: always accepted, and the
    # conversation holds every turn in order.
    url = f"{redis_server.url}?lease=2&prefix=turns{uuid.uuid4().hex[:8]}:"
    with server_pair(tmp_path, url) as (a, b):
        async with StreamingClient(a.url) as on_a, StreamingClient(b.url) as on_b:
            file_id = None
            for turn in range(12):
                # Odd turns run on A and are read through B; even turns run and are read
                # on B; each next turn goes at once to the other process than the one
                # that ran the turn before.
                runs_on, read_on = (on_a, on_b) if turn % 2 else (on_b, on_b)
                gen = await runs_on.generate("echo", prompt=f"t{turn} ", file_id=file_id,
                                             options={"repeat": 3})
                file_id = gen.file_id if file_id is None else file_id
                if read_on is runs_on:
                    assert await gen.text() == f"t{turn} " * 3
                else:
                    stream = await read_on.attach(gen.id)
                    assert await stream.text() == f"t{turn} " * 3
                    await gen.aclose()
            async with httpx.AsyncClient(base_url=a.url, timeout=10) as http:
                texts = [blk["text"] for blk in (await http.get(f"/files/{file_id}")).json()["blocks"]]
            assert texts == [t for turn in range(12) for t in (f"t{turn} ", f"t{turn} " * 3)]
