"""Double texting across processes: two real ``streaming serve`` on one Redis; a turn
starts through A and the next message comes through B, with each ``multitask`` strategy
(the scenarios of ``tests/test_multitask.py``, where A and B were one server)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.redis_server import RedisServer
from tests.server_process import server_pair
from tests.test_multitask import GENERATORS, SCENARIOS

pytestmark = pytest.mark.anyio

GENERATOR_ARGS = [arg for name, target in GENERATORS.items() for arg in ("--generator", f"{name}={target}")]


@pytest.mark.parametrize("strategy", list(SCENARIOS))
async def test_strategy_across_two_processes(redis_server: RedisServer, tmp_path: Path, strategy: str) -> None:  # noqa: F811
    url = f"{redis_server.url}?prefix=multitask-{strategy}:"
    with server_pair(tmp_path, url, *GENERATOR_ARGS) as (a, b):
        async with httpx.AsyncClient(base_url=a.url, timeout=30) as on_a, \
                httpx.AsyncClient(base_url=b.url, timeout=30) as on_b:
            await SCENARIOS[strategy](on_a, on_b)
