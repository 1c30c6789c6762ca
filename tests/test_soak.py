"""A short soak: concurrent streams with random cancels, disconnects, resumes and tool
answers; every generation's log holds the invariants of docs/protocol.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_short_soak_holds_the_invariants() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.soak", "--seconds", "6", "--streams", "24"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert report["violations"] == [], report["violations"]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert report["generations"] > 50
    assert set(report["scenarios"]) == {"complete", "cancel", "resume", "tool", "abandon"}
    assert report["running_after_drain"] == 0
    assert report["outcomes"].get("generation.cancelled", 0) >= report["scenarios"]["abandon"]
