"""Run the ``streaming`` CLI under tracemalloc, to see what an idle stream keeps alive.

``python -m benchmarks.memprofile OUT serve --port P ...``: SIGUSR1 takes the baseline
snapshot, SIGUSR2 writes to OUT the allocations made since, by line and by file (Python
allocations only: the rest of the RSS growth is the C side, e.g. socket buffers and the
event loop's handles). The harness sends both around its idle phase with ``--memprofile``.
"""

from __future__ import annotations

import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType

__all__ = ["main"]


def main() -> int:
    out = Path(sys.argv[1])
    argv = sys.argv[2:]
    tracemalloc.start(10)
    state: dict[str, tracemalloc.Snapshot] = {}

    def baseline(signum: int, frame: FrameType | None) -> None:
        state["base"] = tracemalloc.take_snapshot()

    def dump(signum: int, frame: FrameType | None) -> None:
        snap = tracemalloc.take_snapshot()
        base = state.get("base", snap)
        lines: list[str] = []
        for key in ("filename", "lineno"):
            stats = snap.compare_to(base, key)
            total = sum(s.size_diff for s in stats)
            lines.append(f"by {key}: {total / 1024:,.0f} KiB allocated since the baseline")
            for s in stats[:40]:
                lines.append(f"  {s.size_diff / 1024:10,.1f} KiB {s.count_diff:+9,d} blocks  {s.traceback}")
            lines.append("")
        # Who asked for it: the innermost frame of ours (streaming/, server/) in each stack.
        ours: dict[str, list[int]] = {}
        for s in snap.compare_to(base, "traceback"):
            frames = [f for f in s.traceback if "/streaming/" in f.filename or "/server/" in f.filename]
            if not s.size_diff:
                continue
            # frames run from the oldest to the most recent call
            where = f"{'/'.join(frames[-1].filename.rsplit('/', 2)[-2:])}:{frames[-1].lineno}" if frames else "(none of ours)"
            acc = ours.setdefault(where, [0, 0])
            acc[0] += s.size_diff
            acc[1] += s.count_diff
        total = sum(v[0] for v in ours.values())
        lines.append(f"by the innermost line of ours in the stack: {total / 1024:,.0f} KiB")
        for where, (size, count) in sorted(ours.items(), key=lambda kv: -kv[1][0])[:40]:
            lines.append(f"  {size / 1024:10,.1f} KiB {count:+9,d} blocks  {where}")
        out.write_text("\n".join(lines))

    signal.signal(signal.SIGUSR1, baseline)
    signal.signal(signal.SIGUSR2, dump)
    from streaming.server.cli import main as cli

    return cli(argv)


if __name__ == "__main__":
    sys.exit(main())
