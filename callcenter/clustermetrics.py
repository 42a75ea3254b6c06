"""Metrics of the whole system, for ``GET /metrics`` of any web process.

A process's own ``prometheus_client`` metrics (``callcenter.metrics``) only
describe that process, and Celery workers serve no HTTP. What an operator
needs across processes and machines is computed at scrape time instead
(``SystemCollector``): calls live and segments by status (database), the
recognition queue's depth and the workers whose model is loaded (Redis), and
recognition outcomes and latency, which every worker process adds to
counters in Redis (``recognition_record``) as it finishes a segment.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

LATENCY_KEY = "callcenter:metrics:recognition-latency"
OUTCOMES_KEY = "callcenter:metrics:recognitions"
LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)


def recognition_record(*, outcome: str, latency_s: float | None) -> None:
    """One finished recognition task: its outcome and, where the endpoint
    time is known, seconds from the endpoint to the stored result."""
    from callcenter import redisconn

    pipe = redisconn.client().pipeline(transaction=False)
    pipe.hincrby(OUTCOMES_KEY, outcome, 1)
    if latency_s is not None and latency_s >= 0:
        for bound in LATENCY_BUCKETS:
            if latency_s <= bound:
                pipe.hincrby(LATENCY_KEY, f"le:{bound}", 1)
        pipe.hincrby(LATENCY_KEY, "count", 1)
        pipe.hincrbyfloat(LATENCY_KEY, "sum", latency_s)
    pipe.execute()


class SystemCollector(Collector):
    def collect(self) -> Iterator:
        yield from self._database()
        yield from self._redis()

    def _database(self) -> Iterator:
        from callcenter.calls import selectors

        try:
            counts = selectors.segment_status_counts()
            live = selectors.calls_live_count()
        except Exception as exc:  # noqa: BLE001 - a scrape must answer; /readyz says why
            logger.warning("metrics: database unavailable: %s", exc)
            return
        segments = GaugeMetricFamily("callcenter_segments_stored", "Segments stored, by status (database)", labels=["status"])
        for status, n in counts.items():
            segments.add_metric([status], n)
        yield segments
        yield GaugeMetricFamily("callcenter_calls_live_all", "Calls live in the database (all web processes)", value=live)

    def _redis(self) -> Iterator:
        from callcenter import redisconn

        try:
            r = redisconn.client()
            depth = redisconn.queue_depth()
            workers = redisconn.workers_ready()
            outcomes = r.hgetall(OUTCOMES_KEY)
            latency = r.hgetall(LATENCY_KEY)
        except Exception as exc:  # noqa: BLE001
            logger.warning("metrics: Redis unavailable: %s", exc)
            return
        yield GaugeMetricFamily("callcenter_queue_depth", "Tasks waiting in the recognition queue", value=depth)
        yield GaugeMetricFamily(
            "callcenter_workers_ready", "Worker processes with the recognizer loaded (heartbeat)", value=len(workers)
        )
        recognitions = CounterMetricFamily(
            "callcenter_recognitions_all", "Recognition task outcomes, all workers", labels=["outcome"]
        )
        for outcome, n in sorted(outcomes.items()):
            recognitions.add_metric([outcome], int(n))
        yield recognitions
        buckets = [(str(bound), int(latency.get(f"le:{bound}", 0))) for bound in LATENCY_BUCKETS]
        count = int(latency.get("count", 0))
        buckets.append(("+Inf", count))
        yield HistogramMetricFamily(
            "callcenter_recognition_latency_seconds",
            "Endpoint detected -> final stored, all workers (queue wait + recognition)",
            buckets=buckets,
            sum_value=float(latency.get("sum", 0.0)),
        )


_registered = False


def register() -> None:
    """Add the collector to the default registry (once per process)."""
    global _registered
    if not _registered:
        from prometheus_client import REGISTRY

        REGISTRY.register(SystemCollector())
        _registered = True
