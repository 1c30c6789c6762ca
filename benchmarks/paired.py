"""Two servers under the same paced load at the same time: their CPU per chunk side by side,
round after round, and the ratio of the two.

``python -m benchmarks.run`` measures the servers one after another. On this kind of
machine (a VM on a shared host) the same code runs up to 8% faster or slower from one
process to the next, so two medians of four rounds each still differ by a few percent for
no reason of theirs. Running the two loads at once puts both servers under the same spell
of the machine; their ratio, round by round, moves by about 2% where the sequential
figures move by 8% (``docs/benchmarks.md``, "Two servers at once"). This is the instrument
for a difference of a few percent: the floor against a store, or a store against another.

    python -m benchmarks.paired floor sqlite                 # floor/us, as the table's column
    python -m benchmarks.paired memory sqlite --streams 1000 --rounds 8
    git worktree add /tmp/base HEAD~1                        # the code before a change...
    python -m benchmarks.paired sqlite sqlite --b-checkout /tmp/base   # ...against the code now

Each round starts both servers afresh (a new sqlite file, a new redis-server), gives each
its own client processes, and starts their loads together; every other round starts them
in the other order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from benchmarks.from_checkout import package_dirs
from benchmarks.paced import PacedLoad, run_paced
from benchmarks.procs import HERE, ServerProcess, SetupError, free_port, raise_nofile, start_redis
from benchmarks.run import HOST, _floor_paced, _runtime_paced, floor_target, serve_argv

__all__ = ["KINDS", "main", "paired_round"]

KINDS = ("floor", "memory", "sqlite", "redis")


@contextlib.contextmanager
def _server(kind: str, port: int, workdir: Path, name: str, checkout: Path | None = None) -> Iterator[ServerProcess]:
    """``kind``'s server on ``port`` (with its own redis-server or sqlite file); a runtime
    from ``checkout`` if given (``benchmarks.from_checkout``)."""
    logs = HERE / "logs"
    if kind == "floor":
        with ServerProcess(floor_target().argv(port), port, name=name, log_dir=logs) as server:
            yield server
        return
    with contextlib.ExitStack() as stack:
        if kind == "redis":
            redis = stack.enter_context(start_redis(logs))
            url = f"redis://{HOST}:{redis.port}/0"
        elif kind == "sqlite":
            url = f"sqlite:///{workdir / f'{name}.db'}"
        else:
            url = "memory://"
        argv = serve_argv(port, url, module=("benchmarks.from_checkout", str(checkout))) if checkout else serve_argv(port, url)
        yield stack.enter_context(ServerProcess(argv, port, name=name, log_dir=logs))


def _load(kind: str, port: int, transport: str, streams: int, chunks: int, delay_ms: float) -> PacedLoad:
    return replace((_floor_paced if kind == "floor" else _runtime_paced)(port, transport, chunks, delay_ms), streams=streams)


async def paired_round(
    a: str, b: str, *, streams: int, chunks: int, delay_ms: float, workdir: Path, number: int,
    transport: str = "sse", checkouts: tuple[Path | None, Path | None] = (None, None),
) -> tuple[float, float]:
    """One round: the loads of servers ``a`` and ``b`` (of :data:`KINDS`) at once; each
    server's CPU ms per 1,000 chunks. Every other round (by ``number``) starts ``b``'s
    load first.

    Raises:
        SetupError: a server did not start, a stream failed, or the CPU was too little to read.
    """
    sides = [(a, f"paired-a-{number}", checkouts[0]), (b, f"paired-b-{number}", checkouts[1])]
    with contextlib.ExitStack() as stack:
        servers = []
        for kind, name, checkout in sides:
            port = free_port()
            servers.append((kind, port, stack.enter_context(_server(kind, port, workdir, name, checkout))))
        await asyncio.sleep(1.0)  # both servers idle before the loads begin
        runs = [
            run_paced(_load(kind, port, transport, streams, chunks, delay_ms),
                      server_pid=server.pid, chunks=chunks, delay_ms=delay_ms)
            for kind, port, server in servers
        ]
        if number % 2:
            runs.reverse()  # (who starts first alternates)
        results = await asyncio.gather(*runs)
        if number % 2:
            results.reverse()
    figures = []
    for (kind, _, _), result in zip(sides, results, strict=True):
        if result.notes:
            raise SetupError(f"{kind}: {'; '.join(result.notes)}")
        figures.append(result.figures["cpu_ms_per_1k"])
    if not all(figures):
        raise SetupError(
            "a server's CPU over the load was below the clock's resolution (10 ms): "
            "use more streams or chunks")
    return figures[0], figures[1]


async def run(args: argparse.Namespace) -> dict[str, object]:
    rows: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="paired-") as tmp:
        for number in range(args.rounds):
            t0 = time.perf_counter()
            a, b = await paired_round(
                args.a, args.b, streams=args.streams, chunks=args.chunks, delay_ms=args.delay_ms,
                workdir=Path(tmp), number=number, transport=args.transport,
                checkouts=(args.a_checkout, args.b_checkout))
            rows.append((a, b))
            print(f"round {number + 1} of {args.rounds}: {args.a} {a:.1f}, {args.b} {b:.1f} us a chunk; "
                  f"{args.a}/{args.b} {a / b:.3f} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    ratios = sorted(a / b for a, b in rows)
    return {
        "a": args.a, "b": args.b, "streams": args.streams, "chunks": args.chunks, "delay_ms": args.delay_ms,
        "transport": args.transport, "rounds": [{"a": a, "b": b, "ratio": a / b} for a, b in rows],
        "median_a": statistics.median(a for a, _ in rows), "median_b": statistics.median(b for _, b in rows),
        "median_ratio": statistics.median(ratios), "ratios": ratios,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.paired", description=__doc__.split("\n\n")[0])
    parser.add_argument("a", choices=KINDS, help="the first server (the ratio's numerator: a/b)")
    parser.add_argument("b", choices=KINDS, help="the second server")
    parser.add_argument("--streams", type=int, default=500, help="paced streams to each server (default 500)")
    parser.add_argument("--chunks", type=int, default=100, help="chunks a stream (default 100)")
    parser.add_argument("--delay-ms", type=float, default=50.0, help="pace: ms between chunks (default 50)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds (default 6)")
    parser.add_argument("--transport", choices=("sse", "ws"), default="sse")
    for side in ("a", "b"):
        parser.add_argument(f"--{side}-checkout", type=Path, metavar="DIR",
                            help=f"run the runtime {side.upper()} from another checkout of this repository "
                            "(e.g. a git worktree of an older commit)")
    args = parser.parse_args(argv)
    if args.streams < 1 or args.chunks < 1 or args.rounds < 1 or args.delay_ms < 0:
        parser.error("--streams, --chunks and --rounds must be at least 1, --delay-ms at least 0")
    for side in ("a", "b"):
        checkout = getattr(args, f"{side}_checkout")
        if checkout is None:
            continue
        if getattr(args, side) == "floor":
            parser.error(f"--{side}-checkout: the floor is not ours; name a store for {side.upper()}")
        try:
            package_dirs(checkout)
        except ValueError as exc:
            parser.error(f"--{side}-checkout: {exc}")
        setattr(args, f"{side}_checkout", checkout.resolve())
    raise_nofile()
    try:
        out = asyncio.run(run(args))
    except SetupError as exc:
        print(f"paired: {exc}", file=sys.stderr)
        return 1
    a, b = (f"{kind} ({checkout})" if checkout else kind
            for kind, checkout in ((args.a, args.a_checkout), (args.b, args.b_checkout)))
    print(f"{a} against {b}, {args.streams} paced {args.transport} streams of {args.chunks} chunks each, "
          f"both at once, {args.rounds} rounds:")
    print(f"  CPU us a chunk (median): {a} {out['median_a']:.1f}, {b} {out['median_b']:.1f}")
    ratios = out["ratios"]
    assert isinstance(ratios, list)
    print(f"  {a}/{b}: median {out['median_ratio']:.3f}, rounds {', '.join(f'{r:.3f}' for r in ratios)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
