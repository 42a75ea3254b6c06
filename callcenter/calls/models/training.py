"""Periodic meta-trainings of the small model."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from callcenter.calls.models.model_versions import ModelVersion


class TrainingStatus(models.TextChoices):
    RUNNING = "running", "running"
    PROMOTED = "promoted", "promoted"
    REJECTED = "rejected", "not better: kept the current model"
    SKIPPED = "skipped", "skipped: not enough new verified audio"
    FAILED = "failed", "failed"


class TrainingRun(models.Model):
    """One periodic meta-training: the model it started from, the candidate
    it made and how both did on held-out callers."""

    Status = TrainingStatus

    status = models.CharField(max_length=10, choices=TrainingStatus.choices, default=TrainingStatus.RUNNING)
    base = models.ForeignKey(
        ModelVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="training_runs"
    )
    candidate = models.ForeignKey(
        ModelVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    metrics = models.JSONField(default=dict, blank=True)
    reason = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=TrainingStatus.values), name="trainingrun_status_valid"),
        ]

    def __str__(self) -> str:
        return f"meta-training #{self.pk} ({self.status})"
