"""Maintenance: the sweeper (Celery beat) and the worker heartbeat.

``maintenance.sweep`` runs every ``SEGMENT_SWEEP_INTERVAL_S`` (beat) and
repairs what a fault left behind (``services.maintenance_sweep``: stuck
segments queued again, orphaned calls closed, segments that never got their
audio failed), so that no received audio goes unrecognized.

Each worker process that consumes the recognition queue also announces,
every ``WORKER_HEARTBEAT_S``, that its recognizer is loaded (a Redis key that
expires); ``/readyz`` reads it. An ``adaptation``-only worker does not: it
recognizes no live call.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from celery import shared_task
from celery.signals import task_postrun, worker_process_init
from django.conf import settings

from callcenter import asr
from callcenter.calls import services
from callcenter.ops import metrics, redisconn

logger = logging.getLogger(__name__)

WORKER_HEARTBEAT_S = 10
WORKER_HEARTBEAT_TTL_S = 3 * WORKER_HEARTBEAT_S
MAX_LATENCY_S = 3600


@shared_task(name="maintenance.sweep", soft_time_limit=120, time_limit=150)
def sweep() -> dict[str, list[int]]:
    """One pass of the sweeper (``services.maintenance_sweep``); returns what it did, by id."""
    return services.maintenance_sweep(
        stuck_after_s=settings.SEGMENT_STUCK_AFTER_S, heartbeat_s=settings.STREAM_HEARTBEAT_S
    )


# --- worker heartbeat ---------------------------------------------------------


def _heartbeat_forever(name: str) -> None:
    failing = False
    while True:
        try:
            rec = asr.final_model_recognizer()  # waits for the load; cached after
            redisconn.worker_heartbeat(hostname=name, model=asr.model_version(rec), ttl_s=WORKER_HEARTBEAT_TTL_S)
            if failing:
                logger.info("worker heartbeat renewed again")
            failing = False
        except Exception as exc:  # noqa: BLE001 - Redis down or model missing: not ready, try again
            if not failing:
                logger.warning("worker heartbeat failed: %s", exc)
            failing = True
        time.sleep(WORKER_HEARTBEAT_S)


@worker_process_init.connect
def _start_heartbeat(**kwargs: object) -> None:
    from callcenter.celery import RECOGNITION_QUEUE, consumes

    if not consumes(RECOGNITION_QUEUE):
        return
    name = f"{socket.gethostname()}:{os.getpid()}"
    threading.Thread(target=_heartbeat_forever, args=(name,), name="worker-heartbeat", daemon=True).start()


# --- recognition and adaptation figures, for every web process's /metrics --------


@task_postrun.connect
def _record_task_metrics(sender: object = None, kwargs: dict | None = None, retval: object = None, **extra: object) -> None:
    if getattr(sender, "name", None) == "adaptation.customer":
        _record_adaptation(retval)
    elif getattr(sender, "name", None) == "recognition.segment":
        _record_recognition(kwargs or {}, retval)


def _record_recognition(kwargs: dict, retval: object) -> None:
    outcome = retval.get("status", "unknown") if isinstance(retval, dict) else "error"
    record_recognition_latency(outcome=str(outcome), endpoint_at=kwargs.get("endpoint_at"))


def record_recognition_latency(*, outcome: str, endpoint_at: object) -> None:
    """Count a recognition outcome and, for a recognized segment, its latency from the endpoint."""
    from callcenter.ops import clustermetrics

    latency = time.time() - endpoint_at if isinstance(endpoint_at, (int, float)) and outcome == "recognized" else None
    if latency is not None and not 0 <= latency <= MAX_LATENCY_S:
        latency = None  # a clock far off, or a made-up endpoint time: not a latency
    if latency is not None:
        metrics.RECOGNITION_SECONDS.observe(latency)
    try:
        clustermetrics.recognition_record(outcome=str(outcome), latency_s=latency)
    except Exception as exc:  # noqa: BLE001 - metrics never fail a task
        logger.warning("could not record the recognition metrics: %s", exc)


def _record_adaptation(retval: object) -> None:
    from callcenter.ops import clustermetrics

    if not isinstance(retval, dict) or retval.get("already_done"):
        return
    figures = retval.get("metrics") or {}
    before, after = figures.get("wer_before"), figures.get("wer_after")
    delta = after - before if isinstance(before, (int, float)) and isinstance(after, (int, float)) else None
    try:
        clustermetrics.adaptation_record(status=str(retval.get("status", "unknown")), wer_delta=delta)
    except Exception as exc:  # noqa: BLE001 - metrics never fail a task
        logger.warning("could not record the adaptation metrics: %s", exc)
