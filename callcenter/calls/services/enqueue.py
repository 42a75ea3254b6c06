"""Where the services queue Celery tasks: by task name (``send_task``), so
that the backend never imports ``tasks/``. The names and keyword arguments
are the tasks' contract (``tasks/recognition.py``, ``tasks/adaptation.py``);
the queue each goes to comes from ``task_routes`` (``callcenter.celery``)."""

from __future__ import annotations

import logging

import kombu.exceptions
import redis.exceptions

from callcenter.ops import metrics
from callcenter.celery import app

logger = logging.getLogger(__name__)

RECOGNITION_TASK = "recognition.segment"
ADAPTATION_TASK = "adaptation.customer"
ANALYTICS_FINAL_TASK = "analytics.final"
ANALYTICS_CALL_TASK = "analytics.call"
BROKER_ERRORS = (kombu.exceptions.OperationalError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def recognition_enqueue(*, segment_id: int, endpoint_at: float | None) -> None:
    """Queue the segment's recognition. With the broker down the segment is
    stored all the same and stays ``pending``: the sweeper queues it once
    the broker is back (``maintenance.sweep``), so this logs and goes on."""
    try:
        # Nobody waits on the task's result (it goes to the database and the
        # agents): without ignore_result the web process would subscribe to
        # it in Redis, and block there for 20 s while Redis is down.
        app.send_task(
            RECOGNITION_TASK, kwargs={"segment_id": segment_id, "endpoint_at": endpoint_at}, ignore_result=True
        )
    except (kombu.exceptions.OperationalError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        metrics.ENQUEUE_FAILURES.inc()
        logger.error("segment #%s: recognition not queued (broker: %s); the sweeper will queue it", segment_id, exc)


def adaptation_enqueue(*, run_id: int) -> None:
    """Queue an adaptation run (``adaptation.customer``)."""
    app.send_task(ADAPTATION_TASK, kwargs={"run_id": run_id})


def analytics_final_enqueue(*, segment_id: int) -> None:
    """Queue category matching (live alerts) on a stored final. With the
    broker down it is logged and skipped: the call's end matches every
    final again (``analytics.call``)."""
    try:
        app.send_task(ANALYTICS_FINAL_TASK, kwargs={"segment_id": segment_id}, ignore_result=True)
    except BROKER_ERRORS as exc:
        metrics.ENQUEUE_FAILURES.inc()
        logger.error("segment #%s: category matching not queued (broker: %s)", segment_id, exc)


def analytics_call_enqueue(*, call_id: int) -> None:
    """Queue the call's analytics (``analytics.call``: it waits for the
    call's last finals). With the broker down it is logged and skipped:
    ``manage.py export_call ID --compute`` computes them later."""
    try:
        app.send_task(ANALYTICS_CALL_TASK, kwargs={"call_id": call_id}, ignore_result=True)
    except BROKER_ERRORS as exc:
        metrics.ENQUEUE_FAILURES.inc()
        logger.error("call #%s: analytics not queued (broker: %s)", call_id, exc)
