"""The worker tier's numbers in ``GET /metrics`` of an API process (``--role api``): queue
depth and oldest wait per generator, live workers, generations running per worker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from streaming.stores.redis_queue import QueueSnapshot

__all__ = ["queue_metrics"]


def queue_metrics(snap: QueueSnapshot) -> Iterator[Any]:
    depth = GaugeMetricFamily("streaming_queue_depth", "Generations waiting for a worker, by generator.", labels=["generator"])
    oldest = GaugeMetricFamily(
        "streaming_queue_oldest_wait_seconds", "How long the oldest waiting generation has waited, by generator.",
        labels=["generator"],
    )
    for name in sorted(snap.depth):
        depth.add_metric([name], snap.depth[name])
        oldest.add_metric([name], snap.oldest_wait_s.get(name, 0.0))
    yield depth
    yield oldest
    yield GaugeMetricFamily("streaming_workers_live", "Live workers (announced, lease held).", value=len(snap.workers))
    per = GaugeMetricFamily(
        "streaming_worker_generations_running", "Generations running on each live worker (as last announced).",
        labels=["worker"],
    )
    for worker in snap.workers:
        per.add_metric([worker.id], worker.running)
    yield per
