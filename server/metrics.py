"""``GET /metrics``: the runtime's numbers in Prometheus text format (prometheus_client).

A collector reads the runtime at scrape time, so the hot path never touches a metric
object; each app has its own registry (no module-global state).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from streaming.server.auth import require_key
from streaming.server.context import runtime_of

from streaming.metrics import Histogram
from streaming.runtime import Runtime

__all__ = ["ROUTES", "RuntimeCollector", "registry_for"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _histogram(name: str, doc: str, hist: Histogram) -> HistogramMetricFamily:
    buckets = [("+Inf" if b == float("inf") else repr(b), n) for b, n in hist.cumulative()]
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=hist.total)


class RuntimeCollector(Collector):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Any]:
        stats = self.runtime.stats()
        yield GaugeMetricFamily("streaming_generations_running", "Generations running now.", value=stats.running)
        finished = CounterMetricFamily(
            "streaming_generations_finished", "Generations finished, by outcome.", labels=["outcome"]
        )
        for outcome, count in stats.finished.items():
            finished.add_metric([outcome], count)
        yield finished
        yield CounterMetricFamily("streaming_events", "Events written to generation logs.", value=stats.events)
        yield CounterMetricFamily("streaming_chunks", "Chunks written by plugins.", value=stats.chunks)
        yield GaugeMetricFamily("streaming_subscribers", "Open subscriptions.", value=stats.subscribers)
        tools = CounterMetricFamily("streaming_tool_calls", "Tool calls, by outcome.", labels=["outcome"])
        tools.add_metric(["ok"], stats.tool_calls - stats.tool_errors)
        tools.add_metric(["error"], stats.tool_errors)
        yield tools
        yield CounterMetricFamily("streaming_store_errors", "Store writes that failed.", value=stats.store_errors)
        yield _histogram(
            "streaming_time_to_first_delta_seconds", "From start to the first chunk.", stats.time_to_first_delta
        )
        yield _histogram("streaming_generation_duration_seconds", "From start to the end.", stats.duration)
        if self.runtime.dispatch is not None:  # an API process: the worker tier (read by the route)
            from streaming.server.queue_metrics import queue_metrics

            yield from queue_metrics(self.runtime.dispatch.latest)


def registry_for(runtime: Runtime) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RuntimeCollector(runtime))
    return registry


async def metrics(request: Request) -> Response:
    require_key(request)
    if runtime_of(request).dispatch is not None:
        await runtime_of(request).dispatch.snapshot()
    registry = getattr(request.app.state, "metrics_registry", None)
    if registry is None:
        registry = request.app.state.metrics_registry = registry_for(runtime_of(request))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE)


ROUTES = [Route("/metrics", metrics, methods=["GET"])]
