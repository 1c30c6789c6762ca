"""Run the benchmark: ``python -m benchmarks.run [--quick] [--only KEY ...] [--paced-only] [--profile]``.

Starts each server as a real process on a free loopback port, one at a time, drives it
with the same lean client (:mod:`benchmarks.client`), prints one table with every figure
side by side (value, ratio to the floor (a) and to LangServe (b), the issue's goal and
whether it is met) and writes the results as JSON (``benchmarks/results.json``).

Servers: (a) ``floor`` a bare sse-starlette endpoint; (b) ``langserve`` LangServe's
``/stream`` over a RunnableGenerator, in its own virtualenv; (c) ``runtime`` this runtime
on the memory store with its defaults (coalescing on) and ``runtime-nocoalesce``;
(d) ``sqlite`` and (e) ``redis`` stores where they exist; (f) ``model`` the local model
direct vs through the runtime, where that generator exists.

The paced scenario (:mod:`benchmarks.paced`: many streams at a model's pace, server CPU per
chunk from /proc) runs on the floor, the runtime (SSE and WebSocket) and the stores, and is
printed as a second table with its own goals. Its CPU goals are judged on further rounds in
which each store's load runs beside the floor's, both at once (:mod:`benchmarks.paired`;
``--paired-rounds``): taken one after another, two servers' figures differ by the
machine's speed of the moment as much as by their own. ``--http-server granian|hypercorn`` adds the
runtime under that HTTP server (:mod:`benchmarks.servers.runtime_host`) beside
``streaming serve`` (uvicorn).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks import dialects
from benchmarks.client import Request, StreamResult, open_idle, run_streams
from benchmarks.paced import PacedLoad, pct, run_paced
from benchmarks.procs import (
    HERE,
    ServerProcess,
    SetupError,
    free_port,
    langserve_python,
    raise_nofile,
    start_redis,
    tree_pids,
    tree_rss_kib,
)
from streaming.generators.echo import MAX_DELAY_MS

__all__ = ["FULL", "QUICK", "Sizes", "main"]

HOST = "127.0.0.1"
IDLE_S = 3600.0


@dataclass(frozen=True)
class Sizes:
    single: int  # chunks in the one-stream run
    ttfd: int  # sequential requests for time to first delta
    ttfd_chunks: int
    conc: tuple[tuple[int, int], ...]  # (streams, chunks each)
    idle: int  # open idle streams
    warmup: int = 3
    single_runs: int = 3  # the one-stream figure is the median run
    model_tokens: int = 128  # max_tokens of each local-model run (f)
    model_runs: int = 15  # paired runs; the ratio moves a few percent from run to run
    paced: tuple[int, ...] = (500, 1000)  # concurrent streams of the paced scenario
    paced_chunks: int = 100
    paced_delay_ms: float = 50.0  # 20 chunks/s, a model's pace
    #: rounds of each store's paced SSE load beside the floor's, both at once, which judge
    #: the CPU goals (0: judged on the figures measured one server after another)
    paired_rounds: int = 5


FULL = Sizes(single=100_000, ttfd=200, ttfd_chunks=8, conc=((100, 1000), (1000, 100)), idle=10_000)
QUICK = Sizes(
    single=2_000, ttfd=10, ttfd_chunks=8, conc=((10, 100), (20, 50)), idle=100, warmup=1,
    single_runs=1, model_tokens=16, model_runs=1, paced=(10,), paced_chunks=10, paced_delay_ms=20.0,
    paired_rounds=0,
)
HTTP_SERVERS = ("uvicorn", "granian", "hypercorn")


# -- what is compared --------------------------------------------------------------------


@dataclass
class Target:
    """One server configuration under test."""

    key: str
    label: str
    argv: Callable[[int], list[str]]
    stream: Callable[[int, int], Request]  # (port, chunks) -> request
    idle: Callable[[int], Request]
    phases: tuple[str, ...] = ("single", "ttfd", "conc", "idle", "paced")
    #: transports of the paced scenario ("sse", "ws") and the load of one stream
    paced: tuple[str, ...] = ()
    paced_load: Callable[[int, str, int, float], PacedLoad] | None = None
    #: a process whose CPU is the store's (redis-server), read during the paced load
    store_pid: Callable[[], int | None] = lambda: None
    status: str = "ok"  # ok | skipped | failed
    note: str = ""
    setup: Callable[[], Any] | None = None  # returns a context manager (e.g. redis) or None
    env: dict[str, str] = field(default_factory=dict)


def floor_target() -> Target:
    return Target(
        key="floor",
        label="(a) floor: sse-starlette",
        argv=lambda port: [sys.executable, "-m", "benchmarks.servers.floor", "--port", str(port)],
        stream=lambda port, n: Request(HOST, port, "GET", f"/stream?n={n}"),
        idle=lambda port: Request(HOST, port, "GET", f"/stream?n=1&idle_s={IDLE_S:g}"),
        paced=("sse", "ws"),
        paced_load=_floor_paced,
    )


def _floor_paced(port: int, kind: str, chunks: int, delay_ms: float) -> PacedLoad:
    if kind == "ws":
        return PacedLoad(HOST, port, "ws", "/ws", 0, body={"n": chunks, "delay_ms": delay_ms})
    return PacedLoad(HOST, port, "sse", f"/stream?n={chunks}&delay_ms={delay_ms:g}", 0)


def _runtime_paced(port: int, kind: str, chunks: int, delay_ms: float) -> PacedLoad:
    body = _runtime_body(chunks, delay_ms)
    if kind == "ws":
        return PacedLoad(HOST, port, "ws", "/ws", 0, body={"type": "generate", **body})
    return PacedLoad(HOST, port, "sse", "/generations", 0, method="POST", body=body)


def langserve_target(install: bool) -> Target:
    target = Target(
        key="langserve",
        label="(b) LangServe /stream",
        argv=lambda port: [],
        stream=lambda port, n: Request(HOST, port, "POST", "/stream", {"input": {"n": n}}),
        idle=lambda port: Request(HOST, port, "POST", "/stream", {"input": {"n": 1, "idle_s": IDLE_S}}),
    )
    try:
        python = langserve_python(install=install)
    except SetupError as exc:
        target.status, target.note = "skipped", f"LangServe unavailable: {exc}"
        return target
    target.argv = lambda port: [python, "-m", "benchmarks.servers.langserve_app", "--port", str(port)]
    return target


def _runtime_body(n: int, delay_ms: float = 0) -> dict[str, Any]:
    options: dict[str, Any] = {"repeat": n}
    if delay_ms:
        options["delay_ms"] = delay_ms
    return {"generator": "echo", "prompt": "tok ", "options": options}


def serve_argv(port: int, store: str, extra: Sequence[str] = (), module: Sequence[str] = ("streaming.server.cli",)) -> list[str]:
    """``streaming serve`` on ``port`` with ``store`` (``module``: what ``python -m`` runs,
    with its own first arguments)."""
    return [sys.executable, "-m", *module, "serve", "--store", store, "--port", str(port), "--log-level", "warning", *extra]


def runtime_target(
    key: str, label: str, store: Callable[[], str], extra: list[str] | None = None, *,
    paced: tuple[str, ...] = ("sse",), http_server: str = "uvicorn",
) -> Target:
    """``streaming serve`` (uvicorn), or the same app under another HTTP server."""

    def argv(port: int) -> list[str]:
        if http_server != "uvicorn":
            return [
                sys.executable, "-m", "benchmarks.servers.runtime_host", "--server", http_server,
                "--port", str(port), "--store", store(), *(extra or []),
            ]
        return serve_argv(port, store(), extra or [])

    if http_server != "uvicorn":
        key, label = f"{key}@{http_server}", f"{label} [{http_server}]"
    target = Target(
        key=key,
        label=label,
        argv=argv,
        stream=lambda port, n: Request(HOST, port, "POST", "/generations", _runtime_body(n)),
        # echo refuses a pause over MAX_DELAY_MS (a minute): plenty for the idle phase.
        idle=lambda port: Request(HOST, port, "POST", "/generations", _runtime_body(1, min(IDLE_S * 1000, MAX_DELAY_MS))),
        paced=paced,
        paced_load=_runtime_paced,
    )
    if http_server != "uvicorn" and not _has_module(http_server):
        target.status, target.note = "skipped", f"{http_server} is not installed (pip install -e '.[bench]')"
    return target


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def store_targets(workdir: Path, http_server: str = "uvicorn") -> list[Target]:
    out: list[Target] = []
    counter = iter(range(1_000_000))

    def sqlite_url() -> str:  # a fresh file per server start
        return f"sqlite:///{workdir / f'bench-{http_server}-{next(counter)}.db'}"

    sqlite = runtime_target("sqlite", "(d) runtime, sqlite store", sqlite_url, http_server=http_server)
    if not _has_module("streaming.stores.sqlite"):
        sqlite.status, sqlite.note = "skipped", "streaming/stores/sqlite.py does not exist yet"
    out.append(sqlite)

    redis_url: dict[str, Any] = {}
    redis = runtime_target("redis", "(e) runtime, redis store", lambda: redis_url["url"], http_server=http_server)
    if not _has_module("streaming.stores.redis"):
        redis.status, redis.note = "skipped", "streaming/stores/redis.py does not exist yet"
    else:

        def setup() -> ServerProcess:
            server = start_redis(workdir)
            redis_url["url"] = f"redis://{HOST}:{server.port}/0"
            redis_url["server"] = server
            return server

        redis.setup = setup
        redis.store_pid = lambda: redis_url["server"].pid if "server" in redis_url else None
    out.append(redis)
    return out


def targets(args: argparse.Namespace, workdir: Path) -> list[Target]:
    langserve = None
    if _wanted(args, "langserve") and not args.paced_only:  # LangServe has no paced endpoint
        langserve = langserve_target(install=not args.no_install)
    all_targets = [
        floor_target(),
        langserve,
        runtime_target("runtime", "(c) runtime, memory, defaults", lambda: "memory://", paced=("sse", "ws")),
        # At a model's pace nothing coalesces: the paced scenario is the same without coalescing.
        runtime_target("runtime-nocoalesce", "(c) runtime, memory, --no-coalesce", lambda: "memory://",
                       ["--no-coalesce"], paced=()),
        *store_targets(workdir),
    ]
    for server in dict.fromkeys(args.http_server):
        if server == "uvicorn":  # the rows above: `streaming serve` itself
            continue
        all_targets += [
            runtime_target("runtime", "(c) runtime, memory, defaults", lambda: "memory://", paced=("sse", "ws"),
                           http_server=server),
            *store_targets(workdir, server),
        ]
    out: list[Target] = []
    for t in all_targets:
        if t is None or not _wanted(args, t.key):
            continue
        if not args.all_idle and t.key.split("@")[0] in ("runtime-nocoalesce", "sqlite", "redis"):
            # idle memory does not depend on coalescing; stores on request
            t.phases = tuple(p for p in t.phases if p != "idle")
        if args.paced_only:
            t.phases = ("paced",)
        if args.no_paced:
            t.phases = tuple(p for p in t.phases if p != "paced")
        if not t.paced:
            t.phases = tuple(p for p in t.phases if p != "paced")
        if t.phases:
            out.append(t)
    return out


def _wanted(args: argparse.Namespace, key: str) -> bool:
    return not args.only or key.split("@")[0] in args.only or key == "floor"


# -- measuring ---------------------------------------------------------------------------


def _failures(results: list[StreamResult], expected: int | None) -> list[str]:
    bad: list[str] = []
    for r in results:
        if r.error:
            bad.append(r.error)
        elif not 200 <= r.status < 300:
            bad.append(f"HTTP {r.status}")
        elif expected is not None and r.chunks != expected:
            bad.append(f"{r.chunks} of {expected} chunks")
    return bad


class Measurer:
    """Runs the phases against one started server and collects figures and notes."""

    def __init__(self, target: Target, sizes: Sizes, port: int) -> None:
        self.t = target
        self.sizes = sizes
        self.port = port
        self.figures: dict[str, float] = {}
        self.details: dict[str, Any] = {}
        self.notes: list[str] = []

    def req(self, n: int) -> Request:
        return self.t.stream(self.port, n)

    def _check(self, phase: str, results: list[StreamResult], expected: int | None) -> bool:
        bad = _failures(results, expected)
        if bad:
            self.notes.append(f"{phase}: {len(bad)} of {len(results)} streams failed ({bad[0]})")
        return len(bad) < len(results)

    async def warmup(self) -> None:
        results = await run_streams([self.req(50) for _ in range(self.sizes.warmup)], timeout_s=60)
        self._check("warm-up", results, 50)

    async def single(self) -> None:
        """The median run of ``single_runs`` (one stream at a time)."""
        n = self.sizes.single
        runs: list[tuple[float, StreamResult]] = []
        for _ in range(self.sizes.single_runs):
            [r] = await run_streams([self.req(n)], timeout_s=300)
            if self._check("one stream", [r], n) and r.chunks:
                runs.append((r.last_chunk_at - r.sent_at, r))
        if not runs:
            return
        runs.sort(key=lambda pair: pair[0])
        elapsed, r = runs[len(runs) // 2]
        self.figures["single_chunks_per_s"] = r.chunks / elapsed
        self.figures["single_events_per_s"] = r.events / elapsed
        self.details["single"] = {
            "chunks": r.chunks, "events": r.events, "seconds": elapsed,
            "runs_seconds": [round(t, 4) for t, _ in runs],
        }

    async def ttfd(self) -> None:
        times: list[float] = []
        results: list[StreamResult] = []
        for _ in range(self.sizes.ttfd):
            [r] = await run_streams([self.req(self.sizes.ttfd_chunks)], timeout_s=30)
            results.append(r)
            if r.ttfc is not None:
                times.append(r.ttfc * 1000)
        self._check("first delta", results, self.sizes.ttfd_chunks)
        if times:
            self.figures["ttfd_median_ms"] = statistics.median(times)
            self.figures["ttfd_p99_ms"] = pct(times, 99)

    async def conc(self) -> None:
        for streams, chunks in self.sizes.conc:
            results = await run_streams([self.req(chunks) for _ in range(streams)], timeout_s=300)
            if not self._check(f"{streams} streams", results, chunks):
                continue
            ok = [r for r in results if r.chunks]
            start = min(r.sent_at for r in ok)
            end = max(r.last_chunk_at for r in ok)
            total = sum(r.chunks for r in ok)
            gaps = [g for r in ok for g in r.gaps]
            firsts = [r.ttfc * 1000 for r in ok if r.ttfc is not None]
            self.figures[f"conc{streams}_chunks_per_s"] = total / (end - start)
            self.figures[f"conc{streams}_gap_p99_ms"] = pct(gaps, 99) * 1000
            if not gaps:
                self.notes.append(f"{streams} streams: each stream's chunks came in one read (no gap to measure)")
            self.figures[f"conc{streams}_ttfd_p99_ms"] = pct(firsts, 99)
            self.details[f"conc{streams}"] = {
                "streams": streams, "chunks_each": chunks, "seconds": end - start,
                "events": sum(r.events for r in ok), "gaps": len(gaps),
                "gap_p50_ms": pct(gaps, 50) * 1000, "gap_max_ms": max(gaps, default=0.0) * 1000,
                "first_delta_p50_ms": pct(firsts, 50), "first_delta_p99_ms": pct(firsts, 99),
            }

    async def idle(self, pid: int, memprofile: Path | None = None) -> None:
        n = self.sizes.idle
        await asyncio.sleep(0.3)
        pids = tree_pids(pid)  # a server's worker may be a child process (granian)
        before = tree_rss_kib(pids)
        if memprofile is not None:
            os.kill(pid, signal.SIGUSR1)  # tracemalloc baseline
        t0 = time.perf_counter()
        transports, results = await open_idle([self.t.idle(self.port) for _ in range(n)], timeout_s=240)
        opened_s = time.perf_counter() - t0
        try:
            await asyncio.sleep(1.0)  # let the server settle (its tasks reach their sleep)
            after = tree_rss_kib(pids)
            if memprofile is not None:
                memprofile.unlink(missing_ok=True)  # noqa: ASYNC240 (nothing else runs now)
                os.kill(pid, signal.SIGUSR2)
                for _ in range(3000):  # tracemalloc takes its time
                    if memprofile.exists():  # noqa: ASYNC240
                        break
                    await asyncio.sleep(0.1)
                self.details["memprofile"] = str(memprofile)
        finally:
            for tr in transports:
                tr.close()
        bad = [r.error or f"HTTP {r.status}" for r in results if r.error or not 200 <= r.status < 300]
        if bad:
            self.notes.append(f"idle: {len(bad)} of {n} streams did not open ({bad[0]})")
        opened = len(transports)
        if opened:
            self.figures["idle_kib_per_stream"] = (after - before) / opened
            self.figures["idle_open_per_s"] = opened / opened_s
        self.details["idle"] = {
            "opened": opened, "rss_before_kib": before, "rss_after_kib": after, "open_seconds": opened_s,
        }


    async def paced(self, kind: str, streams: int, server_pid: int, clients: int) -> None:
        """One paced load (``streams`` at once over ``kind``) against a fresh server."""
        assert self.t.paced_load is not None
        load = replace(self.t.paced_load(self.port, kind, self.sizes.paced_chunks, self.sizes.paced_delay_ms),
                       streams=streams)
        r = await run_paced(load, server_pid=server_pid, chunks=self.sizes.paced_chunks,
                            delay_ms=self.sizes.paced_delay_ms, clients=clients, store_pid=self.t.store_pid())
        for name, value in r.figures.items():
            self.figures[f"paced_{kind}{streams}_{name}"] = value
        self.details[f"paced_{kind}{streams}"] = r.details
        self.notes.extend(r.notes)


async def measure(
    target: Target, sizes: Sizes, logdir: Path, profile: bool, memprofile: bool = False, paced_clients: int = 0,
) -> Measurer:
    """All phases of one target; each server process is started fresh for the idle phase."""
    port = free_port()
    m = Measurer(target, sizes, port)
    busy = [p for p in ("single", "ttfd", "conc") if p in target.phases]
    if busy:
        with ServerProcess(target.argv(port), port, name=target.key, log_dir=logdir, env=target.env) as server:
            await m.warmup()
            recorder = None
            if profile:
                from benchmarks.profile import Recorder

                recorder = Recorder(server.pid, logdir.parent / "profiles" / f"{target.key}.raw")
            for phase in busy:
                await getattr(m, phase)()
            if recorder is not None:
                summary = recorder.stop() or ""
                path = logdir.parent / "profiles" / f"{target.key}.txt"
                path.write_text(summary + "\n")
                m.details["profile"] = str(path)
    if "idle" in target.phases and sizes.idle:
        port = free_port()
        m.port = port
        argv = target.argv(port)
        memout: Path | None = None
        if memprofile and argv[1:3] == ["-m", "streaming.server.cli"]:
            memout = logdir.parent / "profiles" / f"{target.key}-idle-memory.txt"
            memout.parent.mkdir(parents=True, exist_ok=True)
            argv = [argv[0], "-m", "benchmarks.memprofile", str(memout), *argv[3:]]
        with ServerProcess(argv, port, name=f"{target.key}-idle", log_dir=logdir, env=target.env) as server:
            await m.warmup()
            recorder = None
            if profile:
                from benchmarks.profile import Recorder

                recorder = Recorder(server.pid, logdir.parent / "profiles" / f"{target.key}-idle.raw")
            await m.idle(server.pid, memout)
            if recorder is not None:
                path = logdir.parent / "profiles" / f"{target.key}-idle.txt"
                path.write_text((recorder.stop() or "") + "\n")
                m.details["profile_idle"] = str(path)
    if "paced" in target.phases:
        for kind in target.paced:
            for streams in sizes.paced:
                # A fresh server for each load: its RSS and CPU are this load's alone.
                port = free_port()
                m.port = port
                print(f"   paced: {streams} streams over {kind}", file=sys.stderr, flush=True)
                name = f"{target.key}-paced-{kind}{streams}"
                with ServerProcess(target.argv(port), port, name=name, log_dir=logdir, env=target.env) as server:
                    await m.warmup()
                    recorder = None
                    if profile:
                        from benchmarks.profile import Recorder

                        recorder = Recorder(server.pid, logdir.parent / "profiles" / f"{name}.raw")
                    await m.paced(kind, streams, server.pid, paced_clients)
                    if recorder is not None:
                        path = logdir.parent / "profiles" / f"{name}.txt"
                        path.write_text((recorder.stop() or "") + "\n")
                        m.details[f"profile_paced_{kind}{streams}"] = str(path)
    return m


# -- the table -----------------------------------------------------------------------------


@dataclass
class Figure:
    key: str
    label: str
    unit: str
    higher_is_better: bool


def figure_list(sizes: Sizes) -> list[Figure]:
    figs = [
        Figure("single_chunks_per_s", f"one stream of {sizes.single:,} chunks: chunks/s", "chunks/s", True),
        Figure("single_events_per_s", f"one stream of {sizes.single:,} chunks: SSE events/s", "events/s", True),
        Figure("ttfd_median_ms", "request to first delta, median", "ms", False),
        Figure("ttfd_p99_ms", "request to first delta, p99", "ms", False),
    ]
    for streams, chunks in sizes.conc:
        figs.append(Figure(f"conc{streams}_chunks_per_s", f"{streams:,} streams x {chunks:,} chunks: aggregate chunks/s", "chunks/s", True))
        figs.append(Figure(f"conc{streams}_gap_p99_ms", f"{streams:,} streams: p99 gap between deltas", "ms", False))
        figs.append(Figure(f"conc{streams}_ttfd_p99_ms", f"{streams:,} streams: p99 request to first delta", "ms", False))
    figs.append(Figure("idle_kib_per_stream", f"{sizes.idle:,} idle open streams: RSS per stream", "KiB", False))
    figs.append(Figure("idle_open_per_s", f"{sizes.idle:,} idle open streams: opened per second", "streams/s", True))
    figs.append(Figure("model_tokens_per_s", f"local model, {sizes.model_tokens} greedy tokens: tokens/s", "tokens/s", True))
    figs.append(Figure("model_ratio", "local model: runtime / direct, median of paired runs", "x", True))
    return figs


@dataclass
class Goal:
    figure: str
    server: str
    text: str
    met: bool | None  # None: cannot be judged (a reference is missing)
    value: float | None = None


def goals(res: dict[str, dict[str, float]], sizes: Sizes) -> list[Goal]:
    def v(server: str, key: str) -> float | None:
        return res.get(server, {}).get(key)

    def judge(cond: Callable[[], bool], *needed: float | None) -> bool | None:
        return None if any(x is None for x in needed) else cond()

    out: list[Goal] = []
    floor, ls = v("floor", "single_chunks_per_s"), v("langserve", "single_chunks_per_s")
    nc = v("runtime-nocoalesce", "single_chunks_per_s")
    out.append(Goal("single_chunks_per_s", "runtime-nocoalesce", ">= 0.8x (a)",
                    judge(lambda: nc >= 0.8 * floor, nc, floor), nc))  # type: ignore[operator]
    rt = v("runtime", "single_chunks_per_s")
    out.append(Goal("single_chunks_per_s", "runtime", ">= 5x (a)", judge(lambda: rt >= 5 * floor, rt, floor), rt))  # type: ignore[operator]
    out.append(Goal("single_chunks_per_s", "runtime", ">= 1.5x (b)", judge(lambda: rt >= 1.5 * ls, rt, ls), rt))  # type: ignore[operator]
    big = max(s for s, _ in sizes.conc)
    fa, ra = v("floor", f"conc{big}_chunks_per_s"), v("runtime", f"conc{big}_chunks_per_s")
    out.append(Goal(f"conc{big}_chunks_per_s", "runtime", ">= 1x (a)", judge(lambda: ra >= fa, ra, fa), ra))  # type: ignore[operator]
    gap = v("runtime", f"conc{big}_gap_p99_ms")
    out.append(Goal(f"conc{big}_gap_p99_ms", "runtime", "< 250 ms", judge(lambda: gap < 250, gap), gap))  # type: ignore[operator]
    kib = v("runtime", "idle_kib_per_stream")
    # 40 KB read strictly: 40,000 bytes (39.06 KiB).
    out.append(Goal("idle_kib_per_stream", "runtime", "< 40 KB", judge(lambda: kib * 1024 < 40_000, kib), kib))  # type: ignore[operator]
    ft, rtt = v("floor", "ttfd_median_ms"), v("runtime", "ttfd_median_ms")
    out.append(Goal("ttfd_median_ms", "runtime", "<= (a) + 2 ms", judge(lambda: rtt <= ft + 2, rtt, ft), rtt))  # type: ignore[operator]
    for store in ("sqlite", "redis"):
        sv = v(store, "single_chunks_per_s")
        out.append(Goal("single_chunks_per_s", store, ">= 0.5x memory (c)", judge(lambda sv=sv: sv >= 0.5 * rt, sv, rt), sv))  # type: ignore[misc,operator]
    ratio = v("model-runtime", "model_ratio")
    out.append(Goal("model_ratio", "model-runtime", ">= 0.98x direct", judge(lambda: ratio >= 0.98, ratio), ratio))  # type: ignore[operator]
    return out


# -- the paced table ---------------------------------------------------------------------------

#: (figure suffix, column header, format)
PACED_COLUMNS = (
    ("cpu_ms_per_1k", "CPU ms/1k chunks", "{:,.1f}"),
    ("gap_p99_ms", "p99 gap ms", "{:,.1f}"),
    ("finish_p99_s", "p99 finish s", "{:,.2f}"),
    ("rss_peak_mib", "RSS peak MiB", "{:,.1f}"),
    ("rss_kib_per_stream", "KiB/stream", "{:,.1f}"),
    ("server_cpu_pct", "server CPU %", "{:,.0f}"),
    ("store_cpu_ms_per_1k", "redis ms/1k", "{:,.1f}"),
    ("client_cpu_pct_max", "client CPU % (max)", "{:,.0f}"),
)
#: CPU per chunk: the floor's over ours, at least this (by store); the p99 gap at most 1.5x the floor's
PACED_CPU_GOALS = {"runtime": 1.0, "sqlite": 1.0, "redis": 0.8}
PACED_GAP_GOAL = 1.5


def paced_goals(res: dict[str, dict[str, float]], sizes: Sizes) -> list[Goal]:
    """The issue's goals for the paced scenario (SSE; the floor is the reference). The CPU
    goal is judged on the rounds beside the floor (``paired_ratio``) where they ran, else on
    the figures measured one server after another."""
    out: list[Goal] = []
    for streams in sizes.paced:
        prefix = f"paced_sse{streams}_"
        floor = res.get("floor", {})
        f_cpu, f_gap = floor.get(prefix + "cpu_ms_per_1k"), floor.get(prefix + "gap_p99_ms")
        for key, least in PACED_CPU_GOALS.items():
            figures = res.get(key, {})
            cpu, gap = figures.get(prefix + "cpu_ms_per_1k"), figures.get(prefix + "gap_p99_ms")
            if key not in res and key != "runtime":  # a store that did not run: no goal row
                continue
            paired = figures.get(prefix + "paired_ratio")
            ratio = paired if paired is not None else f_cpu / cpu if f_cpu and cpu else None
            # (two equal medians, each summed from /proc's ticks in floating point, may
            # divide to 0.9999999999999999: equal is "at most the floor's")
            how = ", both at once" if paired is not None else ""
            out.append(Goal(prefix + "cpu_ms_per_1k", key, f"CPU floor/us >= {least:g}{how}",
                            None if ratio is None else ratio >= least - 1e-9, ratio))
            gap_ratio = gap / f_gap if gap is not None and f_gap else None
            out.append(Goal(prefix + "gap_p99_ms", key, f"p99 gap <= {PACED_GAP_GOAL:g}x (a)",
                            None if gap_ratio is None else gap_ratio <= PACED_GAP_GOAL, gap_ratio))
    return out


def paced_rows(
    res: dict[str, dict[str, float]], labels: dict[str, str], sizes: Sizes, goal_list: list[Goal]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for kind in ("sse", "ws"):
        for streams in sizes.paced:
            prefix = f"paced_{kind}{streams}_"
            floor = res.get("floor", {})
            for key, label in labels.items():
                figures = res.get(key, {})
                if prefix + "cpu_ms_per_1k" not in figures:
                    continue
                values = {name: figures.get(prefix + name) for name, _, _ in PACED_COLUMNS}
                f_cpu, f_gap = floor.get(prefix + "cpu_ms_per_1k"), floor.get(prefix + "gap_p99_ms")
                cpu, gap = values["cpu_ms_per_1k"], values["gap_p99_ms"]
                rows.append({
                    "server": key, "server_label": label, "transport": kind, "streams": streams,
                    "values": values,
                    "floor_over_us_cpu": f_cpu / cpu if f_cpu and cpu else None,
                    "floor_over_us_paired": figures.get(prefix + "paired_ratio"),
                    "gap_vs_floor": gap / f_gap if gap is not None and f_gap else None,
                    "goals": [{"goal": g.text, "met": g.met} for g in goal_list
                              if g.server == key and g.figure.startswith(prefix)],
                })
    return rows


def render_paced(rows: list[dict[str, Any]]) -> str:
    header = ["server", "via", "streams", PACED_COLUMNS[0][1], "floor/us", "at once", PACED_COLUMNS[1][1], "x (a)",
              *(title for _, title, _ in PACED_COLUMNS[2:]), "goals"]
    lines: list[list[str]] = []
    for row in rows:
        v = row["values"]

        def cell(name: str, fmt: str, v: dict[str, Any] = v) -> str:
            return "-" if v.get(name) is None else fmt.format(v[name])

        goals_ = "; ".join(f"{g['goal']}: {'yes' if g['met'] else 'n/a' if g['met'] is None else 'NO'}"
                           for g in row["goals"])
        lines.append([
            row["server_label"], row["transport"], f"{row['streams']:,}",
            cell(*PACED_COLUMNS[0][::2]),
            "-" if row["floor_over_us_cpu"] is None else f"{row['floor_over_us_cpu']:.2f}x",
            "-" if row.get("floor_over_us_paired") is None else f"{row['floor_over_us_paired']:.3f}x",
            cell(*PACED_COLUMNS[1][::2]),
            "-" if row["gap_vs_floor"] is None else f"{row['gap_vs_floor']:.2f}x",
            *(cell(name, fmt) for name, _, fmt in PACED_COLUMNS[2:]),
            goals_,
        ])
    widths = [max(len(h), *(len(r[i]) for r in lines)) if lines else len(h) for i, h in enumerate(header)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in (0, 1, len(cells) - 1) else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    out = [fmt(header), fmt(["-" * w for w in widths])]
    prev: tuple[str, int] | None = None
    for row, cells in zip(rows, lines, strict=True):
        group = (row["transport"], row["streams"])
        if prev is not None and group != prev:
            out.append("")
        out.append(fmt(cells))
        prev = group
    return "\n".join(out)


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("ms", "x"):
        return f"{value:,.2f}"
    if unit == "KiB":
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def _ratio(value: float | None, ref: float | None) -> str:
    if value is None or not ref:
        return "-"
    return f"{value / ref:.2f}x"


def build_rows(
    figs: list[Figure], res: dict[str, dict[str, float]], labels: dict[str, str], goal_list: list[Goal]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    by_cell: dict[tuple[str, str], list[Goal]] = {}
    for g in goal_list:
        by_cell.setdefault((g.figure, g.server), []).append(g)
    for fig in figs:
        for server, label in labels.items():
            value = res.get(server, {}).get(fig.key)
            cell_goals = by_cell.get((fig.key, server), [])
            if value is None and not cell_goals:
                continue
            floor, ls = res.get("floor", {}).get(fig.key), res.get("langserve", {}).get(fig.key)
            rows.append({
                "figure": fig.key, "figure_label": fig.label, "unit": fig.unit,
                "higher_is_better": fig.higher_is_better, "server": server, "server_label": label,
                "value": value,
                "vs_floor": None if value is None or not floor else value / floor,
                "vs_langserve": None if value is None or not ls else value / ls,
                "goals": [{"goal": g.text, "met": g.met} for g in cell_goals],
            })
    return rows


def render_table(rows: list[dict[str, Any]]) -> str:
    header = ["figure", "server", "value", "unit", "x (a)", "x (b)", "goal", "met"]
    lines: list[list[str]] = []
    last_fig = None
    for row in rows:
        goals_ = row["goals"] or [{"goal": "", "met": None}]
        for i, g in enumerate(goals_):
            first = i == 0
            fig = row["figure_label"] if row["figure"] != last_fig and first else ""
            met = "" if not g["goal"] else ("yes" if g["met"] else "n/a" if g["met"] is None else "NO")
            value = row["value"]
            lines.append([
                fig,
                row["server_label"] if first else "",
                _fmt(value, row["unit"]) if first else "",
                row["unit"] if first else "",
                (f"{row['vs_floor']:.2f}x" if row["vs_floor"] else "-") if first else "",
                (f"{row['vs_langserve']:.2f}x" if row["vs_langserve"] else "-") if first else "",
                g["goal"],
                met,
            ])
            if first:
                last_fig = row["figure"]
    widths = [max(len(h), *(len(r[i]) for r in lines)) if lines else len(h) for i, h in enumerate(header)]
    right = {2, 4, 5}

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    out = [fmt(header), fmt(["-" * w for w in widths])]
    prev = None
    for r in lines:
        if r[0] and prev is not None:
            out.append("")
        out.append(fmt(r))
        prev = r
    return "\n".join(out)


async def run_model(
    args: argparse.Namespace, sizes: Sizes, logdir: Path, servers: dict[str, Any], results: dict[str, dict[str, float]]
) -> None:
    """(f): the local model direct and through the runtime, or a note saying why not."""
    from benchmarks.model import measure_model, model_available

    direct = servers["model-direct"] = {"label": "(f) local model, direct"}
    through = servers["model-runtime"] = {"label": "(f) local model, through the runtime"}
    why = model_available()
    if why is not None:
        for entry in (direct, through):
            entry["status"], entry["note"] = "skipped", why
        return
    print("-- (f) local model ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        out = await measure_model(sizes.model_tokens, sizes.model_runs, logdir)
    except Exception as exc:  # the model is optional: its failure is a note, not a crash
        for entry in (direct, through):
            entry["status"], entry["note"] = "failed", f"{type(exc).__name__}: {exc}"
        return
    for key, entry in (("model-direct", direct), ("model-runtime", through)):
        figures = out["figures"].get(key)
        entry["status"] = "ok" if figures else "failed"
        entry["note"] = "; ".join(out["notes"])
        if figures:
            entry["figures"] = figures
            results[key] = figures
    through["details"] = out["details"]
    through["seconds"] = round(time.perf_counter() - t0, 1)


def median_figures(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the rounds that measured it."""
    keys = {k for run in runs for k in run}
    return {k: statistics.median(run[k] for run in runs if k in run) for k in keys}


#: the paired instrument's name of each server whose paced CPU has a goal
PAIRED_KINDS = {"runtime": "memory", "sqlite": "sqlite", "redis": "redis"}


async def run_paired(
    sizes: Sizes, workdir: Path, servers: dict[str, Any], results: dict[str, dict[str, float]]
) -> None:
    """Each store's paced SSE load beside the floor's, both at once, ``sizes.paired_rounds``
    times (:mod:`benchmarks.paired`): the median of the rounds' floor/us ratios judges the
    CPU goal. Measured one after another, each server process carries the machine's speed
    of its moment (up to 8% apart on a shared VM); at once, both carry the same."""
    from benchmarks.paired import paired_round

    for streams in sizes.paced:
        prefix = f"paced_sse{streams}_"
        for key, kind in PAIRED_KINDS.items():
            if prefix + "cpu_ms_per_1k" not in results.get(key, {}):
                continue  # (the store did not run, or its paced load did not)
            rounds: list[dict[str, float]] = []
            print(f"-- {servers[key]['label']} beside the floor, {streams} paced streams, both at once "
                  f"({sizes.paired_rounds} rounds) ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            try:
                for number in range(sizes.paired_rounds):
                    floor, ours = await paired_round(
                        "floor", kind, streams=streams, chunks=sizes.paced_chunks, delay_ms=sizes.paced_delay_ms,
                        workdir=workdir, number=number)
                    rounds.append({"floor": floor, "ours": ours, "ratio": floor / ours})
            except SetupError as exc:
                servers[key]["note"] = "; ".join(filter(None, [servers[key].get("note"), f"paired {streams}: {exc}"]))
                continue
            ratio = statistics.median(r["ratio"] for r in rounds)
            results[key][prefix + "paired_ratio"] = ratio
            servers[key].setdefault("paired", {})[f"sse{streams}"] = rounds
            servers[key]["seconds"] = round(servers[key].get("seconds", 0) + time.perf_counter() - t0, 1)


# -- main ------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = QUICK if args.quick else FULL
    if args.idle is not None:
        sizes = replace(sizes, idle=args.idle)
    if args.paced:
        sizes = replace(sizes, paced=tuple(args.paced))
    if args.paced_chunks:
        sizes = replace(sizes, paced_chunks=args.paced_chunks)
    if args.paired_rounds is not None:
        sizes = replace(sizes, paired_rounds=max(0, args.paired_rounds))
    nofile = raise_nofile()
    if nofile < sizes.idle + 200:  # the client's sockets (each server has its own limit)
        sizes = Sizes(**{**asdict(sizes), "idle": max(0, nofile - 200)})
    logdir = HERE / "logs"
    started = time.time()
    results: dict[str, dict[str, float]] = {}
    servers: dict[str, Any] = {}
    rounds = max(1, args.paced_rounds if args.paced_rounds is not None else (1 if args.quick else 4))
    paced_runs: dict[str, list[dict[str, float]]] = {}  # key -> the paced figures of each round
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        target_list = targets(args, Path(tmp))
        for round_no in range(rounds):
            # Later rounds run only the paced loads, the servers taken in turn again, so that
            # a slow spell of the machine falls on every server rather than on one; every
            # other round in the reverse order, so that the machine's drift over a round
            # (the floor's own figure moved 29 -> 25 us a chunk across one run's rounds)
            # does not always favour the servers measured last.
            for target in (target_list if round_no % 2 == 0 else target_list[::-1]):
                entry: dict[str, Any] = servers.setdefault(target.key, {"label": target.label})
                if round_no and ("paced" not in target.phases or target.status != "ok" or target.key not in results):
                    continue
                if target.status == "ok":
                    what = f" (paced, round {round_no + 1} of {rounds})" if round_no else ""
                    print(f"-- {target.label}{what} ...", file=sys.stderr, flush=True)
                    t0 = time.perf_counter()
                    profile = args.profile and target.key not in ("floor", "langserve") and not round_no
                    measured = replace(target, phases=("paced",)) if round_no else target
                    try:
                        ctx = target.setup() if target.setup else nullcontext()
                    except SetupError as exc:  # e.g. no redis-server: skipped, with the reason
                        target.status, target.note = "skipped", str(exc)
                        ctx = None
                    try:
                        if ctx is None:
                            m = None
                        else:
                            with ctx:
                                m = await measure(measured, sizes, logdir, profile, args.memprofile, args.paced_clients)
                    except SetupError as exc:
                        target.status, target.note = "failed", f"could not start: {exc}"
                        m = None
                    if m is not None:
                        paced_runs.setdefault(target.key, []).append(
                            {k: v for k, v in m.figures.items() if k.startswith("paced_")})
                        if not round_no:
                            results[target.key] = m.figures
                            entry["figures"] = m.figures
                            entry["details"] = m.details
                            target.note = "; ".join(m.notes)
                    entry["seconds"] = round(entry.get("seconds", 0) + time.perf_counter() - t0, 1)
                entry["status"], entry["note"] = target.status, target.note
        for key, runs in paced_runs.items():
            if len(runs) > 1 and key in results:
                results[key].update(median_figures(runs))
                servers[key]["paced_rounds"] = runs
        if sizes.paired_rounds > 0 and not args.no_paced:
            await run_paired(sizes, Path(tmp), servers, results)
        if _wanted(args, "model") and not args.paced_only:
            await run_model(args, sizes, logdir, servers, results)
    labels = {k: v["label"] for k, v in servers.items() if v.get("figures")}
    figs = figure_list(sizes)
    goal_list = [] if args.paced_only else goals(results, sizes)
    rows = build_rows(figs, results, labels, goal_list)
    p_goals = paced_goals(results, sizes)
    p_rows = paced_rows(results, labels, sizes, p_goals)
    return {
        "meta": {
            "mode": "quick" if args.quick else "full",
            "sizes": asdict(sizes),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": round(time.time() - started, 1),
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "chunk": "tok ",
            "paced_rounds": rounds,
            "commit": _commit(),
        },
        "servers": servers,
        "rows": rows,
        "paced_rows": p_rows,
        "goals": [asdict(g) for g in goal_list + p_goals],
    }


def _commit() -> str:
    """The measured code's commit (``+dirty`` with uncommitted changes), if in a checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE,
                               capture_output=True, text=True, timeout=10).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    # The results of an earlier run are not the measured code.
    dirty = [line for line in dirty if not line.endswith(("benchmarks/results.json", "benchmarks/results-quick.json"))]
    return head + ("+dirty" if dirty else "") if head else "unknown"


def report(data: dict[str, Any]) -> str:
    lines = [
        f"Benchmark ({data['meta']['mode']}, commit {data['meta'].get('commit', '?')}, {data['meta']['machine']}, "
        f"Python {data['meta']['python']}, "
        f"{data['meta']['seconds']:.0f} s); x (a) = ratio to the floor, x (b) = ratio to LangServe",
        "",
        render_table(data["rows"]) if data["rows"] else "(no figures: --paced-only)",
        "",
    ]
    if data.get("paced_rows"):
        sizes = data["meta"]["sizes"]
        lines += [
            f"Paced: each stream {sizes['paced_chunks']} chunks, one every {sizes['paced_delay_ms']:g} ms "
            f"(ideal {sizes['paced_chunks'] * sizes['paced_delay_ms'] / 1000:g} s); CPU = the server's, "
            "from /proc; floor/us = the floor's CPU per chunk over this one's; x (a) = ratio to the floor"
            + (f"; each figure the median of {data['meta']['paced_rounds']} rounds"
               if data["meta"].get("paced_rounds", 1) > 1 else "")
            + (f"; at once = floor/us, the median of {sizes['paired_rounds']} rounds of the store's SSE load "
               "beside the floor's, both at once (this judges the CPU goal)"
               if sizes.get("paired_rounds") else ""),
            "",
            render_paced(data["paced_rows"]),
            "",
        ]
    for s in data["servers"].values():
        if s["status"] != "ok" or s.get("note"):
            lines.append(f"{s['label']}: {s['status']}{' - ' + s['note'] if s.get('note') else ''}")
    judged = [g for g in data["goals"] if g["met"] is not None]
    lines.append(f"goals met: {sum(1 for g in judged if g['met'])} of {len(judged)} judged ({len(data['goals']) - len(judged)} not judged)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the CI smoke test)")
    parser.add_argument("--only", action="append", default=[], metavar="KEY",
                        help="only these servers (the floor always runs): langserve, runtime, runtime-nocoalesce, sqlite, redis, model")
    parser.add_argument("--idle", type=int, default=None, help="open idle streams (default 10,000; quick 100)")
    parser.add_argument("--all-idle", action="store_true",
                        help="also measure idle memory for --no-coalesce, sqlite and redis (slower)")
    parser.add_argument("--no-install", action="store_true", help="do not create the LangServe virtualenv")
    parser.add_argument("--setup", action="store_true",
                        help="only create the LangServe virtualenv (a setup step, like pip install) and exit")
    parser.add_argument("--profile", action="store_true", help="py-spy the runtime servers (benchmarks/profiles/)")
    parser.add_argument("--memprofile", action="store_true",
                        help="tracemalloc our servers' idle phase (benchmarks/profiles/*-idle-memory.txt)")
    parser.add_argument("--paced-only", action="store_true",
                        help="only the paced scenario (many streams at a model's pace): floor, runtime (SSE and "
                        "WebSocket), sqlite, redis")
    parser.add_argument("--no-paced", action="store_true", help="leave the paced scenario out")
    parser.add_argument("--paced", type=int, action="append", default=None, metavar="STREAMS",
                        help="concurrent streams of the paced scenario (repeatable; default 500 and 1,000; quick 10)")
    parser.add_argument("--paced-chunks", type=int, default=None, help="chunks of each paced stream (default 100)")
    parser.add_argument("--paced-rounds", type=int, default=None, metavar="N",
                        help="rounds of the paced loads, the servers in turn in each (every other round in the "
                        "reverse order); every paced figure is the median of its rounds (default 4; quick 1)")
    parser.add_argument("--paired-rounds", type=int, default=None, metavar="N",
                        help="rounds of each store's paced SSE load beside the floor's, both at once, whose median "
                        "floor/us judges the CPU goals (default 5; quick 0: judged on the figures taken in turn)")
    parser.add_argument("--paced-clients", type=int, default=0, metavar="N",
                        help="client processes of the paced load (default: one per 500 streams)")
    parser.add_argument("--http-server", action="append", default=[], choices=HTTP_SERVERS,
                        help="also run the runtime (and the stores picked with --only) under this HTTP server "
                        "(repeatable); `streaming serve` (uvicorn) always runs")
    parser.add_argument("--out", type=Path, default=None,
                        help="results JSON (default benchmarks/results.json; quick: benchmarks/results-quick.json; "
                        "--paced-only: benchmarks/results-paced.json)")
    args = parser.parse_args(argv)
    if args.setup:
        try:
            print(f"LangServe virtualenv: {langserve_python(install=True)}")
        except SetupError as exc:
            print(f"LangServe virtualenv not made: {exc}")
        return 0
    default = "results-quick.json" if args.quick else "results-paced.json" if args.paced_only else "results.json"
    out = args.out or HERE / default
    runner = _runner()
    data = runner(run(args))
    if not args.paced_only and _wanted(args, "runtime"):
        data["dialects"] = dialects.run(2_000 if args.quick else 50_000, 1 if args.quick else 3)
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(report(data))
    for table in data.get("dialects", []):
        print("\n" + dialects.report(table))
    print(f"\nresults: {out}")
    return 0


def _runner() -> Callable[[Any], Any]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return lambda coro: asyncio.Runner(loop_factory=uvloop.new_event_loop).run(coro)


if __name__ == "__main__":
    sys.exit(main())
