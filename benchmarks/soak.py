"""Soak: many concurrent streams for a while, with random cancels, disconnects, resumes
and tool answers; every generation's log is checked against the invariants of
docs/protocol.md, and the server's memory is reported before and after (it must not grow
once drained).

    python -m benchmarks.soak --seconds 120 --streams 200
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from streaming.client.client import StreamingClient

from streaming.wire import Event, EventDecoder, GenerationFold, ProtocolError

TOOL = {
    "name": "get_time",
    "description": "The time on the user's device.",
    "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
}


@dataclass
class Tally:
    generations: int = 0
    by_scenario: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def check_log(events: list[dict[str, Any]]) -> str | None:
    """The invariants of docs/protocol.md; the reason for the first violation, or None."""
    try:
        GenerationFold(strict=True).apply_all(events).check_complete()
    except ProtocolError as exc:
        return str(exc)
    return None


async def full_log(http: httpx.AsyncClient, gen_id: str) -> list[dict[str, Any]]:
    r = await http.get(f"/generations/{gen_id}/events", timeout=60)
    return [ev.to_dict() for ev in EventDecoder().decode(r.content)]


async def scenario(client: StreamingClient, http: httpx.AsyncClient, rng: random.Random, tally: Tally) -> None:
    kind = rng.choice(["complete", "cancel", "resume", "tool", "abandon"])
    tally.by_scenario[kind] = tally.by_scenario.get(kind, 0) + 1
    words = "".join(f"w{i} " for i in range(rng.randint(20, 200)))
    seen: list[Event] = []
    if kind == "tool":
        gen = await client.generate(
            "scripted", prompt="x", tools=[TOOL],
            options={"rounds": [[{"tool_call": {"name": "get_time", "args": {"tz": "UTC"}}}],
                                [{"echo_tool_results": True}]]},
        )
        gen.on_tool_call("get_time", lambda args: "noon")
        seen = [ev async for ev in gen]
    else:
        # An abandoned stream must outlive the disconnect grace period to be cancelled.
        options = {"delay_ms": 2, "repeat": 50} if kind == "abandon" else {"delay_ms": rng.choice([0, 1, 3])}
        gen = await client.generate("echo", prompt=words, options=options)
        stop_after = rng.randint(1, 30)
        async for ev in gen:
            seen.append(ev)
            deltas = sum(1 for e in seen if e.type == "block.delta")
            if kind == "cancel" and deltas == stop_after:
                await gen.cancel()
            if kind in ("resume", "abandon") and deltas == stop_after:
                break
        await gen.aclose()
        if kind == "resume" and not seen[-1].terminal:
            await anyio.sleep(rng.random() * 0.2)
            rest = await client.attach(gen.id, after=seen[-1].seq)
            seen += [ev async for ev in rest]
    tally.generations += 1
    if kind == "abandon":
        tally.abandoned.append(gen.id)  # checked at the end, once the server cancelled it
        return
    log = await full_log(http, gen.id)
    problem = check_log(log)
    if problem is None and [e.to_dict() for e in seen] != log:
        problem = "the client did not see the log exactly once"
    if problem:
        tally.violations.append(f"{gen.id} ({kind}): {problem}")
    tally.checked.append(gen.id)
    tally.outcomes[log[-1]["type"]] = tally.outcomes.get(log[-1]["type"], 0) + 1


async def soak(url: str, seconds: float, streams: int, seed: int) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + seconds
    async with StreamingClient(url, backoff_s=0.05) as client, httpx.AsyncClient(base_url=url) as http:

        async def worker(n: int) -> None:
            rng = random.Random(seed * 100_003 + n)
            while time.monotonic() < deadline:
                try:
                    await scenario(client, http, rng, tally)
                except Exception as exc:  # a soak reports, it does not stop
                    tally.violations.append(f"worker {n}: {type(exc).__name__}: {exc}")

        async with anyio.create_task_group() as tg:
            for n in range(streams):
                tg.start_soon(worker, n)
        # The abandoned ones: the server must have cancelled each, with a whole log.
        await anyio.sleep(1.0)
        for gen_id in tally.abandoned:
            log = await full_log(http, gen_id)
            problem = check_log(log) or (
                None if log[-1]["type"] == "generation.cancelled" else f"ended {log[-1]['type']}"
            )
            if problem:
                tally.violations.append(f"{gen_id} (abandon): {problem}")
            tally.outcomes[log[-1]["type"]] = tally.outcomes.get(log[-1]["type"], 0) + 1
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--store", default="", help="store URL (default: sqlite in a temp dir)")
    args = parser.parse_args(argv)

    from tests.procs import ServeProcess

    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or f"sqlite:///{tmp}/soak.db"
        try:
            server = ServeProcess("--store", store, "--disconnect-grace", "0.5", "--live-retention", "1")
        except RuntimeError:
            server = ServeProcess("--store", "memory://", "--disconnect-grace", "0.5", "--live-retention", "1")
            store = "memory://"
        try:
            # Warm up at the same load, so "before" already holds what a steady server
            # holds (allocator pools, caches); growth after the main run is then a leak.
            anyio.run(soak, server.url, max(5.0, args.seconds / 3), args.streams, args.seed + 1)
            time.sleep(2)
            before = rss_kib(server.proc.pid)
            started = time.monotonic()
            tally = anyio.run(soak, server.url, args.seconds, args.streams, args.seed)
            elapsed = time.monotonic() - started
            time.sleep(3)  # abandoned generations are cancelled, finished ones leave memory
            running = httpx.get(f"{server.url}/healthz").json()["running"]
            after = rss_kib(server.proc.pid)
        finally:
            server.stop()
    report = {
        "store": store,
        "seconds": round(elapsed, 1),
        "streams": args.streams,
        "generations": tally.generations,
        "scenarios": tally.by_scenario,
        "outcomes": tally.outcomes,
        "violations": tally.violations[:20],
        "running_after_drain": running,
        "rss_kib_before": before,
        "rss_kib_after": after,
        "rss_growth_kib": after - before,
    }
    print(json.dumps(report, indent=2))
    return 1 if tally.violations or running else 0


if __name__ == "__main__":
    sys.exit(main())
