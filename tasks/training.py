"""Periodic meta-training over customers (``training.meta_train``; Celery
beat runs it every ``TRAINING_INTERVAL_S``). The rules are the service's
(``callcenter.calls.services.training``); the task checks its arguments,
runs one round, and turns its soft time limit into a failed run.
"""

from __future__ import annotations

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from callcenter.calls import services


# Acknowledged when it starts, and never given back when its worker dies
# (no acks_late, no reject_on_worker_lost): it runs for hours, far past the
# broker-wide visibility timeout (a late-acked run would be started again
# by a second worker every minute), and a training that took its worker down
# (out of memory) would only take the next one down too. Beat asks again at
# its next interval.
@shared_task(
    name="training.meta_train",
    soft_time_limit=settings.TRAINING_TIME_LIMIT_S,
    time_limit=settings.TRAINING_TIME_LIMIT_S + 60,
    acks_late=False,
    reject_on_worker_lost=False,
)
def meta_train_customers(*, outer_steps: int | None = None, force: bool = False) -> dict[str, object]:
    """Beat's entry point; returns ``{"run", "status", "reason", "metrics"}``.
    ``ValueError`` (nothing recorded) for an ``outer_steps`` below 1."""
    if outer_steps is not None and (isinstance(outer_steps, bool) or not isinstance(outer_steps, int)):
        raise ValueError(f"outer_steps must be a whole number, got {outer_steps!r}")
    if not isinstance(force, bool):
        raise ValueError(f"force must be true or false, got {force!r}")
    cfg = services.training_config(outer_steps=outer_steps, force=force)
    run = services.meta_training_run(cfg=cfg, time_limit_errors=(SoftTimeLimitExceeded,))
    return {"run": run.pk, "status": run.status, "reason": run.reason, "metrics": run.metrics}
