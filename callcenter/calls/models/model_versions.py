"""Recognizer checkpoints and the callers' voice profiles made for them."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from callcenter.calls.models.customers import Customer
from callcenter.calls.models.patterns import SHA256_REGEX


class Backbone(models.TextChoices):
    SMALL = "small", "small streaming model"
    WHISPER_TINY = "whisper-tiny", "Whisper tiny (final pass)"
    WHISPER_BASE = "whisper-base", "Whisper base (final pass)"


class ModelVersion(models.Model):
    """A recognizer checkpoint. Small-model versions are meta-trained,
    promoted and rolled back; at most one is active (the one that serves).
    Whisper versions are recorded when ``ASR_FINAL_BACKBONE`` serves them,
    so that callers' profiles for them have a version to belong to; they
    are never active (the setting chooses them)."""

    Backbone = Backbone

    name = models.CharField(max_length=100, unique=True)
    backbone = models.CharField(max_length=16, choices=Backbone.choices, default=Backbone.SMALL)
    checkpoint = models.CharField(max_length=500, help_text="Path of the checkpoint file.")
    sha256 = models.CharField("SHA-256", max_length=64, help_text="Hex digest of the checkpoint file.")
    metrics = models.JSONField(default=dict, blank=True)
    is_active = models.BooleanField(default=False)
    parent = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="children",
        help_text="The version it was meta-trained from.",
    )
    created = models.DateTimeField(auto_now_add=True)
    promoted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        permissions = [
            ("promote_modelversion", "Can promote or roll back model versions"),
            ("train_modelversion", "Can start meta-training of a new model version"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["is_active"],
                condition=Q(is_active=True),
                name="modelversion_at_most_one_active",
                violation_error_message="Another model version is already active.",
            ),
            models.CheckConstraint(condition=Q(sha256__regex=SHA256_REGEX), name="modelversion_sha256_hex"),
            models.CheckConstraint(
                condition=Q(is_active=False) | Q(backbone="small"), name="modelversion_only_small_is_active"
            ),
            models.CheckConstraint(
                condition=Q(is_active=False) | Q(promoted_at__isnull=False),
                name="modelversion_active_was_promoted",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} (active)" if self.is_active else self.name


class VoiceProfile(models.Model):
    """One version of a caller's adaptation state for one model version."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="voice_profiles", db_index=False)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="voice_profiles")
    version = models.PositiveIntegerField()
    state = models.BinaryField(help_text="Serialized speaker-adaptive parameters.")
    metrics = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["customer_id", "model_version_id", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "model_version", "version"],
                name="voiceprofile_unique_version",
                violation_error_message="This profile version already exists.",
            ),
            models.CheckConstraint(condition=Q(version__gte=1), name="voiceprofile_version_positive"),
        ]

    def __str__(self) -> str:
        return f"profile v{self.version} of customer #{self.customer_id} for model #{self.model_version_id}"
