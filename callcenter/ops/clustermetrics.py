"""Metrics of the whole system, for ``GET /metrics`` of any web process.

A process's own ``prometheus_client`` metrics (``callcenter.ops.metrics``) only
describe that process, and Celery workers serve no HTTP. What an operator
needs across processes and machines is computed at scrape time instead
(``SystemCollector``): calls live and segments by status (database), the
depth of the recognition and adaptation queues and the workers whose model
is loaded (Redis), and recognition outcomes and latency, and caller
adaptation runs and their WER deltas, which every worker process adds to
counters in Redis
(``recognition_record``, ``adaptation_record``) as it finishes a task.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from callcenter.calls import selectors
from callcenter.celery import ADAPTATION_QUEUE, RECOGNITION_QUEUE
from callcenter.ops import redisconn

logger = logging.getLogger(__name__)

LATENCY_KEY = "callcenter:metrics:recognition-latency"
OUTCOMES_KEY = "callcenter:metrics:recognitions"
LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
ADAPTATIONS_KEY = "callcenter:metrics:adaptations"
WER_DELTA_KEY = "callcenter:metrics:adaptation-wer-delta"
WER_DELTA_BUCKETS = (-0.5, -0.2, -0.1, -0.05, -0.02, -0.01, 0.0, 0.01, 0.02, 0.05, 0.1, 0.5)


def _record(pipe, *, outcomes_key: str, outcome: str, key: str, buckets: tuple, value: float | None) -> None:
    pipe.hincrby(outcomes_key, outcome, 1)
    if value is not None:
        for bound in buckets:
            if value <= bound:
                pipe.hincrby(key, f"le:{bound}", 1)
        pipe.hincrby(key, "count", 1)
        pipe.hincrbyfloat(key, "sum", value)


def recognition_record(*, outcome: str, latency_s: float | None) -> None:
    """One finished recognition task: its outcome and, where the endpoint
    time is known, seconds from the endpoint to the stored result."""
    pipe = redisconn.client().pipeline(transaction=False)
    latency = latency_s if latency_s is not None and latency_s >= 0 else None
    _record(pipe, outcomes_key=OUTCOMES_KEY, outcome=outcome, key=LATENCY_KEY, buckets=LATENCY_BUCKETS, value=latency)
    pipe.execute()


def adaptation_record(*, status: str, wer_delta: float | None) -> None:
    """One finished caller adaptation: its status and, when it was measured
    on verified audio, the held-out WER after minus before."""
    pipe = redisconn.client().pipeline(transaction=False)
    _record(pipe, outcomes_key=ADAPTATIONS_KEY, outcome=status, key=WER_DELTA_KEY, buckets=WER_DELTA_BUCKETS,
            value=wer_delta)  # fmt: skip
    pipe.execute()


def _histogram(name: str, documentation: str, stored: dict, buckets: tuple) -> HistogramMetricFamily:
    counts = [(str(bound), int(stored.get(f"le:{bound}", 0))) for bound in buckets]
    counts.append(("+Inf", int(stored.get("count", 0))))
    return HistogramMetricFamily(name, documentation, buckets=counts, sum_value=float(stored.get("sum", 0.0)))


def _counter(name: str, documentation: str, stored: dict) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=["outcome"])
    for outcome, n in sorted(stored.items()):
        family.add_metric([outcome], int(n))
    return family


class SystemCollector(Collector):
    def collect(self) -> Iterator:
        yield from self._database()
        yield from self._redis()

    def _database(self) -> Iterator:
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
        try:
            r = redisconn.client()
            depths = {queue: redisconn.queue_depth(queue=queue) for queue in (RECOGNITION_QUEUE, ADAPTATION_QUEUE)}
            workers = redisconn.workers_ready()
            stored = {key: r.hgetall(key) for key in (OUTCOMES_KEY, LATENCY_KEY, ADAPTATIONS_KEY, WER_DELTA_KEY)}
        except Exception as exc:  # noqa: BLE001
            logger.warning("metrics: Redis unavailable: %s", exc)
            return
        queue_depth = GaugeMetricFamily(
            "callcenter_queue_depth", "Tasks waiting in each Celery queue", labels=["queue"]
        )
        for queue, depth in depths.items():
            queue_depth.add_metric([queue], depth)
        yield queue_depth
        yield GaugeMetricFamily(
            "callcenter_workers_ready", "Worker processes with the recognizer loaded (heartbeat)", value=len(workers)
        )
        yield _counter("callcenter_recognitions_all", "Recognition task outcomes, all workers", stored[OUTCOMES_KEY])
        yield _histogram(
            "callcenter_recognition_latency_seconds",
            "Endpoint detected -> final stored, all workers (queue wait + recognition)",
            stored[LATENCY_KEY], LATENCY_BUCKETS,
        )  # fmt: skip
        yield _counter(
            "callcenter_adaptations_all", "Caller adaptation runs by status, all workers", stored[ADAPTATIONS_KEY]
        )
        yield _histogram(
            "callcenter_adaptation_wer_delta_all",
            "Held-out WER after adaptation minus before (negative: better), all workers",
            stored[WER_DELTA_KEY], WER_DELTA_BUCKETS,
        )  # fmt: skip


_registered = False


def register() -> None:
    """Add the collector to the default registry (once per process)."""
    global _registered
    if not _registered:
        REGISTRY.register(SystemCollector())
        _registered = True
