"""The Celery application: ``celery -A callcenter worker``.

Broker and result backend come from the settings (``REDIS_URL``); the
delivery policy is fixed here because the tasks are written for it:

- A worker reserves no more tasks than it has free processes
  (``worker_disable_prefetch``): nothing waits in a busy worker's memory
  while another worker is idle, and nothing sits there unacknowledged long
  enough to be redelivered behind its back.
- Tasks are acknowledged when they start, except those that opt in to
  broker redelivery (``acks_late=True, reject_on_worker_lost=True``: the
  idempotent, short ``recognition.segment``). Such a task is acknowledged
  only after it ran, so one held by a worker that dies comes back: at once
  when only its pool process died, and ``VISIBILITY_MARGIN_S`` after its
  hard time limit when the whole worker was SIGKILLed (Redis's
  ``visibility_timeout``: any live worker puts unacknowledged messages
  older than it back in their queue; the sweeper's much later re-queue
  stays as the last resort).
- The visibility timeout is one for the whole broker, whichever queue a
  message came from, and a message still running past it is handed out
  again. So only a task whose hard time limit (plus its longest retry
  countdown) is under it may opt in; adaptation (minutes) and training
  (hours) must not: see their decorators.

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


# Over the longest opted-in task's hard limit (recognition: its soft limit + 5 s)
# and its longest retry countdown (10 s), with room for the handover to a process.
VISIBILITY_MARGIN_S = 15
RECOGNITION_RETRY_COUNTDOWN_MAX_S = 10


def visibility_timeout_s(recognition_time_limit_s: int) -> int:
    """Seconds after its delivery that an unacknowledged message is given
    to another worker (60 s with the default 30 s recognition limit)."""
    return recognition_time_limit_s + 5 + RECOGNITION_RETRY_COUNTDOWN_MAX_S + VISIBILITY_MARGIN_S


def _broker_transport_options() -> dict[str, object]:
    """Read from the settings when the app configures itself (after
    ``_settings_or_exit``), not at import."""
    from django.conf import settings

    return {
        "broker_transport_options": {
            "visibility_timeout": visibility_timeout_s(settings.RECOGNITION_TIME_LIMIT_S),
            # Each worker looks for messages past it every 5 s (kombu's default: every 100 s).
            "unacked_restore_interval": 5,
            "unacked_restore_throttle": 1,
        }
    }


app.config_from_object("django.conf:settings", namespace="CELERY")
app.add_defaults(_broker_transport_options)
app.conf.update(
    # Per task: acks_late/reject_on_worker_lost opt in to redelivery (above).
    task_acks_late=False,
    task_reject_on_worker_lost=False,
    worker_prefetch_multiplier=1,
    worker_disable_prefetch=True,
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
