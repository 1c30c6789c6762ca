"""The worker tier measured: API + worker on Redis beside the in-process default on Redis.

    python -m benchmarks.workers [--streams 200] [--chunks 100] [--out benchmarks/results-workers.json]

For each setup (``all``: one ``streaming serve`` running its generations; ``api+worker``:
one ``streaming serve --role api`` and one ``streaming worker``), on a fresh redis-server:

- throughput: ``--streams`` concurrent SSE streams of ``--chunks`` paced chunks each
  (scripted, 10 ms apart), events/s and chunks/s delivered;
- time to first delta, sequential (so the client adds no queueing): from the POST to the
  first ``block.delta``, median and p90 over 60 generations;
- Redis commands per chunk (``INFO commandstats`` around the throughput run) and Redis
  memory per finished stream and per event (``MEMORY USAGE`` of its keys).

These are the figures docs/deploy.md's estimate rests on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from benchmarks.client import Request, run_streams
from benchmarks.procs import HERE, ROOT, ServerProcess, free_port, start_redis


def _worker(url: str, log_dir: Path) -> subprocess.Popen[bytes]:
    log = log_dir / "worker.log"
    out = open(log, "wb")  # noqa: SIM115 - the child holds it
    proc = subprocess.Popen(
        [sys.executable, "-m", "streaming.server.cli", "worker", "--store", url, "--concurrency", "1000",
         "--log-level", "warning"], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
    )
    deadline = time.monotonic() + 60
    while b"ready" not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("worker did not start: " + log.read_text()[-2000:])
        time.sleep(0.05)
    return proc


def _script(chunks: int) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    for i in range(chunks):
        steps += [{"text": f"w{i:04d} "}, {"sleep_ms": 10}]
    return {"rounds": [steps]}


async def _first_delta(base: str, n: int) -> list[float]:
    times = []
    body = {"generator": "scripted", "prompt": "hi", "options": {"rounds": [[{"text": "first "}, {"text": "second"}]]}}
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        for _ in range(n):
            t0 = time.perf_counter()
            async with http.stream("POST", "/generations", json=body, headers={"Accept": "text/event-stream"}) as resp:
                seen = False
                async for line in resp.aiter_lines():  # read to the end (the stream's last event)
                    if not seen and line == "event: block.delta":
                        times.append(time.perf_counter() - t0)
                        seen = True
    return times


def _memory(r: redis.Redis, prefix: str) -> dict[str, float]:
    """Bytes per finished stream (its generation, log, blocks, conversation, marks) and per event."""
    logs = [k for k in r.scan_iter(f"{prefix}log:*", count=1000)][:50]
    per_stream, per_event = [], []
    for key in logs:
        gen_id = key.split(":")[-1]
        entries = int(r.xlen(key))
        log_bytes = int(r.memory_usage(key, samples=0) or 0)
        data = r.hget(f"{prefix}gen:{gen_id}", "data")
        total = log_bytes + int(r.memory_usage(f"{prefix}gen:{gen_id}", samples=0) or 0)
        if data:
            gen = json.loads(data)
            for blk in gen.get("output_block_ids", []):
                total += int(r.memory_usage(f"{prefix}blk:{blk}", samples=0) or 0)
            if gen.get("file_id"):
                total += int(r.memory_usage(f"{prefix}file:{gen['file_id']}", samples=0) or 0)
        total += int(r.memory_usage(f"{prefix}sent:{gen_id}", samples=0) or 0)
        per_stream.append(total)
        if entries:
            per_event.append(log_bytes / entries)
    return {"bytes_per_stream": statistics.median(per_stream), "bytes_per_event_in_log": statistics.median(per_event),
            "events_per_stream": statistics.median(int(r.xlen(k)) for k in logs)}


async def _measure(role: str, streams: int, chunks: int, log_dir: Path) -> dict[str, Any]:
    with start_redis(log_dir / role) as rs:
        url = f"redis://127.0.0.1:{rs.port}/0"
        r = redis.Redis.from_url(url, decode_responses=True)
        worker = _worker(url, log_dir / role) if role == "api+worker" else None
        port = free_port()
        argv = [sys.executable, "-m", "streaming.server.cli", "serve", "--port", str(port), "--store", url,
                "--log-level", "warning", *(["--role", "api"] if worker else [])]
        try:
            with ServerProcess(argv, port, name=f"serve-{role}", log_dir=log_dir / role):
                base = f"http://127.0.0.1:{port}"
                if worker is not None:
                    async with httpx.AsyncClient(base_url=base) as http:
                        while not (await http.get("/healthz")).json().get("workers"):
                            await asyncio.sleep(0.1)
                await _first_delta(base, 5)  # warm up
                ttfd = await _first_delta(base, 60)
                r.config_resetstat()
                body = {"generator": "scripted", "prompt": "hi", "options": _script(chunks)}
                t0 = time.perf_counter()
                results = await run_streams([Request("127.0.0.1", port, "POST", "/generations", body)] * streams,
                                            record_gaps=False)
                wall = time.perf_counter() - t0
                stats = r.info("commandstats")
                commands = sum(int(v["calls"]) for v in stats.values())
                errors = [x.error for x in results if x.error or x.status != 201]
                memory = _memory(r, "streaming:")
        finally:
            if worker is not None:
                worker.terminate()
                worker.wait(timeout=20)
            r.close()
    ttfd_ms = sorted(t * 1000 for t in ttfd)
    delivered = sum(x.events for x in results)
    return {
        "role": role, "streams": streams, "chunks_per_stream": chunks, "errors": len(errors),
        "wall_s": round(wall, 2), "events_per_s": round(delivered / wall), "chunks_per_s": round(streams * chunks / wall),
        "first_delta_ms_median": round(statistics.median(ttfd_ms), 2),
        "first_delta_ms_p90": round(ttfd_ms[int(len(ttfd_ms) * 0.9)], 2),
        "redis_commands_per_chunk": round(commands / (streams * chunks), 2),
        **{k: round(v, 1) for k, v in memory.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workers", description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--out", default=str(HERE / "results-workers.json"))
    args = parser.parse_args(argv)
    log_dir = HERE / "logs" / "workers"
    rows = []
    for role in ("all", "api+worker"):
        row = asyncio.run(_measure(role, args.streams, args.chunks, log_dir))
        print(json.dumps(row), flush=True)
        rows.append(row)
    hop = rows[1]["first_delta_ms_median"] - rows[0]["first_delta_ms_median"]
    print(f"queue hop adds {hop:.2f} ms to the median time to first delta", flush=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "queue_hop_ms_median": round(hop, 2)}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
