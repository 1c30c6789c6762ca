"""Generators for the worker-tier tests."""

from __future__ import annotations

from typing import Any

import anyio

from streaming.generators.scripted import ScriptedGenerator


class SlowPrepareGenerator(ScriptedGenerator):
    """The scripted generator, taking ``prepare_ms`` (an option) to say which blocks it
    writes: a worker is then between taking a generation and starting it for that long."""

    async def determine_output_block_types(self, request: Any) -> Any:  # type: ignore[override]
        await anyio.sleep(float(request.data.options.get("prepare_ms", 0)) / 1000)
        return super().determine_output_block_types(request)
