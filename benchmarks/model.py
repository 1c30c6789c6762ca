"""(f) The local model called directly vs through the runtime, where that generator exists.

Direct: :func:`streaming.generators.llama.generate_direct` in this process (the same chat
template and decode loop as the generator, no runtime). Through the runtime: ``POST
/generations`` with the ``smollm2`` generator and the same greedy sampling, timed from the
request to the end of the stream, tokens from the ``sampled tokens`` usage. Runs alternate
(direct, runtime, direct, ...) so that load from elsewhere hits both alike; the medians
are reported.
"""

from __future__ import annotations

import importlib.util
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.client import Request, run_streams
from benchmarks.procs import ServerProcess, free_port

__all__ = ["PROMPT", "measure_model", "model_available"]

PROMPT = "Write a long story about a lighthouse keeper and the sea."
SAMPLING: dict[str, Any] = {"temperature": 0.0, "top_p": 1.0, "top_k": 40, "repeat_penalty": 1.0}
_SAMPLED = re.compile(rb'"operation_unit":"sampled tokens","operation_amount":([0-9.]+)')


def model_available() -> str | None:
    """None if the local model can run here, else why not."""
    if importlib.util.find_spec("streaming.generators.llama") is None:
        return "no local-model generator (streaming/generators/llama.py) exists"
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (the `local` extra)"
    try:
        from streaming.generators.llama import default_model_path

        default_model_path()
    except Exception as exc:  # ModelUnavailableError and whatever the import raises
        return f"the model is not installed: {exc}"
    return None


def _request(port: int, max_tokens: int) -> Request:
    body = {"generator": "smollm2", "prompt": PROMPT, "options": {"max_tokens": max_tokens, **SAMPLING}}
    return Request("127.0.0.1", port, "POST", "/generations", body)


async def measure_model(max_tokens: int, runs: int, logdir: Path) -> dict[str, Any]:
    """Tokens/s direct and through the runtime: ``{"figures", "details", "notes"}``."""
    from streaming.generators.llama import generate_direct, load_model

    messages = [{"role": "user", "content": PROMPT}]
    pool = load_model()
    generate_direct(messages, pool=pool, max_tokens=4, temperature=0.0)  # warm
    direct: list[float] = []
    through: list[float] = []
    counts: list[tuple[int, int]] = []
    notes: list[str] = []
    port = free_port()
    argv = [sys.executable, "-m", "streaming.server.cli", "serve", "--store", "memory://", "--port", str(port),
            "--log-level", "warning"]
    with ServerProcess(argv, port, name="model-runtime", log_dir=logdir, ready_timeout_s=120):
        [warm] = await run_streams([_request(port, 4)], timeout_s=180)  # loads the model there
        if warm.error or not 200 <= warm.status < 300:
            return {"figures": {}, "details": {}, "notes": [f"runtime warm-up failed: {warm.error or warm.status}"]}
        for _ in range(runs):
            t0 = time.perf_counter()
            _, n_direct = generate_direct(messages, pool=pool, max_tokens=max_tokens, temperature=0.0)
            direct.append(n_direct / (time.perf_counter() - t0))
            [r] = await run_streams([_request(port, max_tokens)], keep_body=True, timeout_s=300)
            found = _SAMPLED.findall(bytes(r.body or b""))
            if r.error or not found:
                notes.append(f"runtime run failed: {r.error or 'no sampled-tokens usage in the stream'}")
                continue
            n_runtime = int(float(found[-1]))
            counts.append((n_direct, n_runtime))
            through.append(n_runtime / (r.ended_at - r.sent_at))
    if any(a != b for a, b in counts):
        notes.append(f"token counts differ between direct and runtime runs: {counts}")
    figures: dict[str, dict[str, float]] = {}
    if direct:
        figures["model-direct"] = {"model_tokens_per_s": statistics.median(direct)}
    if through:
        figures["model-runtime"] = {"model_tokens_per_s": statistics.median(through)}
        if len(through) == len(direct):
            # Each runtime run against the direct run just before it: load from elsewhere
            # moves both alike, so the ratio is steadier than the ratio of the medians.
            ratios = [t / d for t, d in zip(through, direct, strict=True)]
            figures["model-runtime"]["model_ratio"] = statistics.median(ratios)
    details = {"max_tokens": max_tokens, "runs": runs, "direct_tokens_per_s": direct,
               "runtime_tokens_per_s": through, "tokens": counts, "prompt": PROMPT}
    return {"figures": figures, "details": details, "notes": notes}
