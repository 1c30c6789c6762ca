"""py-spy on a running server: record while a phase runs, then sum up where the time went.

``py-spy record --format raw`` writes collapsed stacks (``frame;frame;... count``); the
summary lists the functions with the most samples on top of the stack (self) and anywhere
in it (inclusive), which is what the lead needs to pick what to optimise.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path

__all__ = ["Recorder", "summarize"]

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


class Recorder:
    """``py-spy record`` attached to ``pid`` until :meth:`stop`; None-safe if py-spy is missing."""

    def __init__(self, pid: int, out: Path, *, rate: int = 200) -> None:
        self.out = out
        self.proc: subprocess.Popen[bytes] | None = None
        self.error: str | None = None
        out.parent.mkdir(parents=True, exist_ok=True)  # (the summary goes beside it, either way)
        binary = shutil.which("py-spy")
        if binary is None:
            self.error = "py-spy is not installed (pip install py-spy)"
            return
        self.proc = subprocess.Popen(
            [binary, "record", "--pid", str(pid), "--format", "raw", "--rate", str(rate),
             "--nonblocking", "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )

    def stop(self) -> str | None:
        """Stop recording; return the summary text (or why there is none)."""
        if self.proc is None:
            return self.error
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.out.exists():
            return f"py-spy wrote nothing: {err.decode(errors='replace')[-300:]}"
        return summarize(self.out)


def _short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({path})"


def summarize(raw: Path, top: int = 25) -> str:
    """Top functions by self and inclusive samples from a py-spy raw (collapsed) file."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    callees: dict[str, Counter[str]] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
        seen: set[str] = set()
        for i, f in enumerate(frames):  # what each function of ours spends its time in
            if f in seen or not _ours(f):
                continue
            seen.add(f)
            below = frames[i + 1] if i + 1 < len(frames) else "(its own code)"
            callees.setdefault(f, Counter())[below] += n
    if not total:
        return "no samples"
    lines = [f"{total} samples", "", "self (on top of the stack):"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += ["", "inclusive (anywhere in the stack):"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top) if not _boring(f)]
    lines += ["", "our functions with >= 3% inclusive, and what they call:"]
    for f, n in inclusive.most_common():
        if not _ours(f) or n < 0.03 * total or f not in callees:
            continue
        lines.append(f"  {100 * n / total:5.1f}%  {f}")
        lines += [f"      {100 * m / total:5.1f}%  {g}" for g, m in callees[f].most_common(8)]
    return "\n".join(lines)


def _ours(frame: str) -> bool:
    return ("(streaming/" in frame or "(server/" in frame) and "server/cli.py" not in frame


def _boring(frame: str) -> bool:
    """The frames every sample has (interpreter start, uvicorn's run loop)."""
    return any(m in frame for m in ("<frozen runpy>", "server/cli.py", "uvicorn/server.py", "asyncio/runners.py", "uvicorn/_compat.py"))
