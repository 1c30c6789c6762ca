"""The numbered examples run, each as a user would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {
    "01_echo_client.py": ["Streaming, one word at a time. Streaming, one word at a time.", "second answer: And again."],
    "02_write_a_plugin.py": ["5... 4... 3... 2... 1... liftoff!", '{"counted": 5}', "generation.failed"],
    "03_tools.py": [
        "-> get_location({}) on the client",
        "-> get_weather({'city': 'Lisbon', 'unit': 'c'}) on the server",
        "Here is what I found: [get_location result: Lisbon][get_weather result: Sunny, 21°C in Lisbon]",
        "succeeded",
    ],
    "04_local_model.py": ["tool call: get_weather({'city': '", "tool result: ['Sunny, 21 C in ", "[cancelled]", "(succeeded;"],
    "06_multi_process.py": ["streaming it from B", "state seen by B: succeeded", "cancelled through B: cancelled"],
    "10_workers.py": [
        "nginx on http://", "live workers: 2", "201 state: waiting", "text: queued, taken by a worker",
        "10 concurrent streams: 10 exact", "cancelled through API B: cancelled", "a generator no worker hosts: 503 no_worker",
    ],
    "05_openai_sdk.py": ["finish_reason: tool_calls", "tool call: get_weather({'city': '", "answer: ", ": succeeded"],
    "09_responses_and_messages.py": [
        "Hello from the Responses API.", "replayed: events 3 to ", "response.completed",
        "responses tool call: get_weather({'city': 'Paris'})", "responses answer: [get_weather result: Sunny, 21 C]",
        "stream ended: cancelled", "responses status: cancelled", "Hello from the Messages API.",
        "messages stop_reason: end_turn", ": succeeded", "messages tool call: get_weather({'city': 'Paris'}), stop_reason: tool_use",
        "messages answer: [get_weather result: Sunny, 21 C]",
    ],
    "07_train_and_generate.py": [
        "progress: ", "training generation.completed", "status: succeeded", "archive: ngram/default.zip",
        "restarted", "generation generation.completed",
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for needle in EXPECTED[name]:
        assert needle in proc.stdout, (needle, proc.stdout)
