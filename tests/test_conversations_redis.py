"""One generation at a time per conversation, across two real server processes on one Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from tests.redis_server import RedisServer
from tests.server_process import ServerProcess

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


async def ended(http: httpx.AsyncClient, gen_id: str) -> dict[str, object]:
    with anyio.fail_after(10):
        while True:
            body: dict[str, object] = (await http.get(f"/generations/{gen_id}")).json()
            if body["generation"]["state"] != "running":  # type: ignore[index]
                return body
            await anyio.sleep(0.02)


async def test_two_processes_never_extend_one_conversation_at_once(redis_server: RedisServer, tmp_path: Path) -> None:
    url = f"{redis_server.url}?lease=2&prefix=conv{uuid.uuid4().hex[:8]}:"
    a = ServerProcess(tmp_path / "a.log", store=url).start()
    b = ServerProcess(tmp_path / "b.log", store=url)
    try:
        b.start()
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
            texts = [blk["text"] for blk in (await on_a.get(f"/files/{file_id}")).json()["blocks"]]
            assert texts == ["a ", "a ", "b ", "b " * 20, "c ", "c "]
    finally:
        a.kill()
        b.kill()
