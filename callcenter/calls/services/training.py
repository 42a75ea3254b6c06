"""Periodic meta-training: its runs, and promoting a candidate that beat its parent."""

from __future__ import annotations

from collections.abc import Mapping

from django.db import transaction
from django.utils import timezone

from ..models import AdaptationRun, ModelVersion, Segment, TrainingRun
from ._common import require_choice
from .adaptation import adaptation_request
from .model_versions import model_version_promote, model_version_register


def training_run_start(*, base_id: int | None) -> TrainingRun:
    return TrainingRun.objects.create(base_id=base_id, status=TrainingRun.Status.RUNNING)


def training_run_finish(
    *,
    run_id: int,
    status: str,
    metrics: Mapping[str, object] | None = None,
    reason: str = "",
    candidate_id: int | None = None,
) -> TrainingRun:
    require_choice(status, TrainingRun.Status, "status")
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        run.status = status
        run.metrics = dict(metrics or {})
        run.reason = reason
        run.candidate_id = candidate_id
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "metrics", "reason", "candidate", "finished_at"])
        return run


def model_version_create_promoted(
    *, name: str, checkpoint: str, sha256: str, parent_id: int | None, metrics: Mapping[str, object]
) -> ModelVersion:
    """Record a meta-trained version that beat its parent, verify its
    checkpoint, promote it, and queue re-adaptation of every caller with
    audio for it (in the background)."""
    version = model_version_register(name=name, checkpoint=checkpoint, sha256=sha256, metrics=metrics)
    if parent_id is not None:
        ModelVersion.objects.filter(pk=version.pk).update(parent_id=parent_id)
    version = model_version_promote(model_version_id=version.pk, check=True)
    customers = (
        Segment.objects.exclude(audio="").filter(call__customer__isnull=False)
        .values_list("call__customer_id", flat=True).distinct()
    )  # fmt: skip
    for customer_id in sorted(set(customers)):
        adaptation_request(customer_id=customer_id, trigger=AdaptationRun.Trigger.PROMOTION)
    return version
