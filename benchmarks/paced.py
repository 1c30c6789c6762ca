"""The paced scenario: many streams at a model's pace, where nothing coalesces.

Real chat traffic is hundreds of streams at once, each at 20-50 tokens/s: a subscriber is
always caught up, so every token is its own event and its own send. Here N streams (500
and 1,000 in the full run) each get 100 chunks, one every 50 ms (echo's ``delay_ms``; the
floor sleeps the same way), over SSE or the WebSocket route, all opened at once.

Figures (one row per server, transport and stream count):

- **server CPU per 1,000 chunks**: utime + stime of the server's process tree (from
  ``/proc/<pid>/stat``, every thread; a worker process is counted with its parent) read
  just before the load and one second after its last stream ended, over the chunks that
  reached the client; for Redis, ``redis-server``'s CPU is a figure of its own;
- **p99 gap between reads**: pooled over every stream, the time between two reads of a
  stream that brought chunks (the pace is 50 ms: a gap of 50 ms is on time);
- **p99 time to finish**: request to last chunk, against the ideal (chunks x delay);
- **server RSS**: the peak of the server tree's ``VmRSS`` sampled every 100 ms during the
  load, and its growth over the RSS before, per stream.

The load client must not be the bottleneck: the streams are spread over several client
processes (:func:`client_processes`; each reports the CPU it used, printed beside the
figures so a saturated client shows). Each client process runs the lean protocol of
:mod:`benchmarks.client` (byte scanning, no SSE or JSON decoding); the WebSocket one adds a
minimal RFC 6455 handshake and masked client frames (server frames are never decoded: the
chunk text and the terminal event are found by scanning, as for SSE).

Run as ``python -m benchmarks.paced --child``, this module is one client process: it reads
its spec (one JSON line) on stdin, prints ``ready``, waits for ``go`` and prints its result
as one JSON line.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.client import Request, StreamResult, _StreamProtocol
from benchmarks.procs import ROOT, raise_nofile, tree_cpu_s, tree_pids, tree_rss_kib

__all__ = ["PacedLoad", "PacedResult", "client_processes", "pct", "run_paced", "ws_frame"]

#: the terminal events of a stream (the runtime's and the floor's WebSocket)
_ENDS = (b'"generation.completed"', b'"generation.failed"', b'"generation.cancelled"')
_END_TAIL = max(len(e) for e in _ENDS) - 1
#: streams one client process drives at most (one process drives 1,000 paced streams
#: with ~20% of a core: see docs/benchmarks.md)
STREAMS_PER_CLIENT = 500


def client_processes(streams: int, requested: int = 0) -> int:
    """How many client processes drive ``streams`` paced streams (``requested`` if > 0)."""
    return requested if requested > 0 else max(1, math.ceil(streams / STREAMS_PER_CLIENT))


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


# -- the WebSocket client protocol ----------------------------------------------------------


def ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One final client frame (text by default), masked as RFC 6455 requires of clients."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 1 << 16:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    full = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(full, "big")).to_bytes(n, "big") if n else b""
    return head + mask + masked


_WS_CLOSE = 0x8


def ws_handshake(host: str, port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


class _WsProtocol(_StreamProtocol):
    """A WebSocket stream: the handshake, one ``generate`` frame once the 101 came, the
    chunks counted as for SSE, a close frame after the terminal event."""

    def __init__(self, handshake: bytes, frame: bytes) -> None:
        super().__init__(handshake, record_gaps=True)
        self.frame = frame
        self._frame_sent = False
        self._closing = False
        self._tail_end = b""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        transport = self.transport
        if transport is None:
            return
        if not self._frame_sent and self._in_body:
            self._frame_sent = True
            if self.result.status == 101:
                transport.write(self.frame)
            else:
                transport.close()
                return
        if self._closing:
            return
        buf = self._tail_end + data
        if any(end in buf for end in _ENDS):
            self._closing = True
            transport.write(ws_frame(b"\x03\xe8", _WS_CLOSE))  # 1000, normal closure
            # the server answers with its close frame and closes the TCP connection
        self._tail_end = buf[-_END_TAIL:]


# -- one client process -------------------------------------------------------------------


@dataclass(frozen=True)
class PacedLoad:
    """What one client process opens: ``streams`` streams of one kind to one server."""

    host: str
    port: int
    kind: str  # "sse" | "ws"
    path: str
    streams: int
    method: str = "GET"
    body: Any = None  # sse: the JSON body; ws: the one frame sent after the handshake
    timeout_s: float = 300.0
    connect_concurrency: int = 256


async def _run_load(load: PacedLoad) -> list[StreamResult]:
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(load.connect_concurrency)
    if load.kind == "ws":
        frame = ws_frame(json.dumps(load.body).encode())

        def factory() -> _StreamProtocol:
            return _WsProtocol(ws_handshake(load.host, load.port, load.path), frame)
    else:
        raw = Request(load.host, load.port, load.method, load.path, load.body).encode()

        def factory() -> _StreamProtocol:
            return _StreamProtocol(raw, record_gaps=True)

    async def one() -> StreamResult:
        async with sem:
            try:
                _, proto = await loop.create_connection(factory, load.host, load.port)
            except OSError as exc:
                return StreamResult(error=f"connect: {exc}")
        return await proto.done

    tasks = [asyncio.ensure_future(one()) for _ in range(load.streams)]
    done, pending = await asyncio.wait(tasks, timeout=load.timeout_s)
    for task in pending:
        task.cancel()
    return [t.result() if t in done and t.exception() is None else StreamResult(error="timed out")
            for t in tasks]


def _child() -> None:
    """``python -m benchmarks.paced --child``: spec on stdin, ``ready``, ``go``, result."""
    raise_nofile()
    spec = json.loads(sys.stdin.readline())
    result_path = spec.pop("result_path")
    load = PacedLoad(**spec)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(asyncio.sleep(0))  # the loop exists before "go"
        print("ready", flush=True)
        sys.stdin.readline()
        cpu0, t0 = os.times(), time.perf_counter()
        results = runner.run(_run_load(load))
        cpu1, wall = os.times(), time.perf_counter() - t0
    streams = [
        {
            "status": r.status, "chunks": r.chunks, "error": r.error,
            "finish_s": (r.last_chunk_at - r.sent_at) if r.chunks else None,
            "gaps_ms": [round(g * 1000, 3) for g in r.gaps],
        }
        for r in results
    ]
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    # (A file, not stdout: the result of 1,000 streams is a MiB of JSON.)
    with open(result_path, "w") as f:
        json.dump({"cpu_s": cpu, "wall_s": wall, "streams": streams}, f)


# -- the load, from the harness -------------------------------------------------------------


@dataclass
class PacedResult:
    figures: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


async def run_paced(
    load: PacedLoad, *, server_pid: int, chunks: int, delay_ms: float, clients: int = 0,
    store_pid: int | None = None, settle_s: float = 1.0,
) -> PacedResult:
    """Drive ``load.streams`` paced streams from client processes and measure the server."""
    out = PacedResult()
    n_clients = min(client_processes(load.streams, clients), load.streams)
    shares = [load.streams // n_clients + (1 if i < load.streams % n_clients else 0) for i in range(n_clients)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs: list[asyncio.subprocess.Process] = []
    results = tempfile.TemporaryDirectory(prefix="paced-")
    try:
        for n, share in enumerate(shares):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "benchmarks.paced", "--child", cwd=ROOT, env=env,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )
            procs.append(proc)
            spec = {**load.__dict__, "streams": share, "result_path": os.path.join(results.name, f"{n}.json")}
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(spec).encode() + b"\n")
            await proc.stdin.drain()
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            if line.strip() != b"ready":
                raise RuntimeError(f"client process did not start: {line[:200]!r}")
        await asyncio.sleep(0.5)  # the client processes' start-up is over; the server is idle
        pids = tree_pids(server_pid)
        rss_before = tree_rss_kib(pids)
        cpu0 = tree_cpu_s(pids)
        store0 = tree_cpu_s([store_pid]) if store_pid else 0.0
        t0 = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        exits = [asyncio.ensure_future(p.wait()) for p in procs]
        rss_peak = rss_before
        while not all(e.done() for e in exits):
            rss_peak = max(rss_peak, tree_rss_kib(pids))
            await asyncio.wait(exits, timeout=0.1)
        load_s = time.perf_counter() - t0
        await asyncio.sleep(settle_s)  # work the server does after the last chunk (write-behind)
        cpu_s = tree_cpu_s(pids) - cpu0
        store_s = tree_cpu_s([store_pid]) - store0 if store_pid else 0.0
        outputs = []
        for n, proc in enumerate(procs):
            if proc.returncode != 0:
                raise RuntimeError(f"paced client process {n} exited with {proc.returncode}")
            outputs.append(json.loads(Path(results.name, f"{n}.json").read_text()))  # noqa: ASYNC240 - the load is over
    finally:
        for proc in procs:
            if proc.returncode is None:
                try:
                    proc.kill()
                except ProcessLookupError:
                    pass
            await proc.wait()
        results.cleanup()

    streams = [s for o in outputs for s in o["streams"]]
    def status_ok(status: int) -> bool:
        return status == 101 if load.kind == "ws" else 200 <= status < 300

    bad = [s["error"] or f"HTTP {s['status']}" if s["error"] or not status_ok(s["status"])
           else f"{s['chunks']} of {chunks} chunks" for s in streams
           if s["error"] or not status_ok(s["status"]) or s["chunks"] != chunks]
    if bad:
        out.notes.append(f"paced {load.kind} {load.streams}: {len(bad)} of {len(streams)} streams failed ({bad[0]})")
    got = sum(s["chunks"] for s in streams)
    if not got:
        return out
    gaps = [g for s in streams for g in s["gaps_ms"]]
    finishes = [s["finish_s"] for s in streams if s["finish_s"] is not None and s["chunks"] == chunks]
    client_pct = [100 * o["cpu_s"] / o["wall_s"] for o in outputs if o["wall_s"] > 0]
    out.figures = {
        "cpu_ms_per_1k": 1000 * cpu_s / (got / 1000),
        "gap_p99_ms": pct(gaps, 99),
        "finish_p99_s": pct(finishes, 99),
        "rss_peak_mib": rss_peak / 1024,
        "rss_kib_per_stream": (rss_peak - rss_before) / load.streams,
        "server_cpu_pct": 100 * cpu_s / load_s,
        "client_cpu_pct_max": max(client_pct, default=0.0),
    }
    if store_pid:
        out.figures["store_cpu_ms_per_1k"] = 1000 * store_s / (got / 1000)
    out.details = {
        "streams": load.streams, "chunks_each": chunks, "delay_ms": delay_ms, "kind": load.kind,
        "chunks": got, "failed": len(bad), "seconds": load_s, "server_cpu_s": cpu_s, "store_cpu_s": store_s,
        "ideal_s": chunks * delay_ms / 1000, "gap_p50_ms": pct(gaps, 50), "gap_max_ms": max(gaps, default=0.0),
        "finish_p50_s": pct(finishes, 50), "finish_max_s": max(finishes, default=0.0),
        "rss_before_mib": rss_before / 1024, "server_pids": len(pids),
        "client_processes": n_clients, "client_cpu_pct": [round(c, 1) for c in client_pct],
    }
    return out


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        _child()
    else:
        sys.exit("usage: python -m benchmarks.paced --child (the harness is python -m benchmarks.run --paced-only)")
