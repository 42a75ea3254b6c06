"""The Celery application: ``celery -A callcenter worker``.

Broker and result backend come from the settings (``REDIS_URL``); the
delivery policy is fixed here because the tasks are written for it: a task is
acknowledged only after it ran (a worker killed mid-task gives it back to
the queue), so tasks must be idempotent, and each worker process reserves one
task at a time because recognition tasks are long and uneven.

Tasks are routed by domain to two queues, so that recognition of live calls
never waits behind caller adaptation or meta-training (seconds to hours per
task): ``recognition`` (the default: ``recognition.*`` and the small
``system.*`` and ``maintenance.*`` tasks) and ``adaptation``
(``adaptation.*``, ``training.*``). A worker started without ``-Q``
consumes both; a deployment runs ``-Q recognition`` workers for live calls
and one ``-Q adaptation`` worker beside them. The names are part of the
deployment (compose files, the main command), so they are fixed here.
"""

from __future__ import annotations

from celery import Celery, signals
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from callcenter.entry import exit_on_configuration_error, use_project_settings

use_project_settings()

RECOGNITION_QUEUE = "recognition"
ADAPTATION_QUEUE = "adaptation"

app = Celery("callcenter")


@app.on_configure.connect
def _settings_or_exit(sender: Celery, **kwargs: object) -> None:
    """Evaluate the Django settings as the app configures itself, so that a
    misconfigured variable stops the worker at start with one line."""
    from django.conf import settings

    try:
        settings.INSTALLED_APPS  # noqa: B018 - imports the settings module
    except ImproperlyConfigured as exc:
        exit_on_configuration_error(exc)


@signals.setup_logging.connect
def _django_logging(**kwargs: object) -> None:
    """Workers and beat log as the web server does (``settings.LOGGING``:
    the call on every line, secrets redacted), not in Celery's own format."""
    import logging.config

    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)


@signals.task_prerun.connect
def _bind_log_context(task: object = None, kwargs: dict | None = None, **extra: object) -> None:
    """A task about a call or a segment (``call_id=``/``segment_id=``) logs
    with it on every line."""
    from callcenter import logs

    kwargs = kwargs or {}
    call, segment = kwargs.get("call_id"), kwargs.get("segment_id")
    if call is None and isinstance(segment, int):
        call = _call_of_segment(segment)
    logs.bind(call=call, segment=segment)


def _call_of_segment(segment_id: int) -> int | None:
    from django.db import DatabaseError

    from callcenter.calls.models import Segment

    try:
        return Segment.objects.filter(pk=segment_id).values_list("call_id", flat=True).first()
    except DatabaseError:
        return None  # the task itself will meet (and report) the database error


@signals.task_postrun.connect
def _clear_log_context(**extra: object) -> None:
    from callcenter import logs

    logs.bind()


app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=24 * 3600,
    broker_connection_retry_on_startup=True,
    task_track_started=True,
    # Default limits; long tasks (training) set their own.
    task_soft_time_limit=300,
    task_time_limit=360,
    # Every domain module of the top-level `tasks` package is imported by
    # tasks/__init__.py, so importing the package registers all tasks.
    imports=("tasks",),
    task_queues=(Queue(RECOGNITION_QUEUE), Queue(ADAPTATION_QUEUE)),
    task_default_queue=RECOGNITION_QUEUE,
    task_routes={
        "adaptation.*": {"queue": ADAPTATION_QUEUE},
        "training.*": {"queue": ADAPTATION_QUEUE},
    },
)


def consumes(queue: str) -> bool:
    """Whether this worker process consumes ``queue`` (``-Q``; a worker
    started without it consumes every queue)."""
    return queue in app.amqp.queues.consume_from
