"""Adaptations of a caller's voice profile."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from callcenter.calls.models.calls import Call
from callcenter.calls.models.customers import Customer
from callcenter.calls.models.model_versions import Backbone, ModelVersion, VoiceProfile


class AdaptationStatus(models.TextChoices):
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    ACCEPTED = "accepted", "accepted (new profile version)"
    REJECTED = "rejected", "rejected by the guard"
    FAILED = "failed", "failed"


class AdaptationTrigger(models.TextChoices):
    CALL_ENDED = "call_ended", "call ended"
    MANUAL = "manual", "requested in the admin"
    PROMOTION = "promotion", "new model version"


class AdaptationRun(models.Model):
    """One adaptation of a caller's profile: why it ran, what it did, and the
    profile version it made (when the guard accepted it)."""

    Status = AdaptationStatus
    Trigger = AdaptationTrigger

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="adaptation_runs", db_index=False)
    call = models.ForeignKey(
        Call, on_delete=models.SET_NULL, null=True, blank=True, related_name="adaptation_runs",
        help_text="The call whose end triggered it.",
    )  # fmt: skip
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.SET_NULL, null=True, blank=True, related_name="adaptation_runs"
    )
    trigger = models.CharField(max_length=12, choices=AdaptationTrigger.choices)
    backbone = models.CharField(
        max_length=16, choices=Backbone.choices, default=Backbone.SMALL,
        help_text="Whose profile it adapts: the small model's (partials, and finals by default) or the "
        "Whisper final pass's.",
    )  # fmt: skip
    status = models.CharField(max_length=10, choices=AdaptationStatus.choices, default=AdaptationStatus.QUEUED)
    mode = models.CharField(max_length=12, blank=True, help_text="supervised or label-free")
    profile = models.ForeignKey(
        VoiceProfile, on_delete=models.SET_NULL, null=True, blank=True, related_name="adaptation_runs",
        help_text="The profile version it stored.",
    )  # fmt: skip
    metrics = models.JSONField(default=dict, blank=True)
    reason = models.TextField(blank=True, help_text="Why it failed or was rejected.")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["call", "backbone"],
                condition=Q(trigger="call_ended"),
                name="adaptationrun_once_per_call",
                violation_error_message="This call's adaptation was already scheduled.",
            ),
            models.CheckConstraint(condition=Q(status__in=AdaptationStatus.values), name="adaptationrun_status_valid"),
            models.CheckConstraint(
                condition=Q(trigger__in=AdaptationTrigger.values), name="adaptationrun_trigger_valid"
            ),
        ]
        indexes = [models.Index(fields=["customer", "created"], name="adaptationrun_customer_created")]

    def __str__(self) -> str:
        return f"adaptation #{self.pk} of customer #{self.customer_id} ({self.status})"
