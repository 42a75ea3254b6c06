"""Data model of the call center: who called, what was said, how the
recognizer was adapted to them.

Writes go through ``services.py`` and reads through ``selectors.py``; the
constraints below hold whatever path a row takes (admin, shell, a bug).
"""

from __future__ import annotations

import re

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

E164_REGEX = r"^\+[1-9][0-9]{1,14}$"
SHA256_REGEX = r"^[0-9a-f]{64}$"


class CallStatus(models.TextChoices):
    LIVE = "live", "live"
    ENDED = "ended", "ended"
    FAILED = "failed", "failed"


class CallDirection(models.TextChoices):
    INBOUND = "inbound", "inbound"
    OUTBOUND = "outbound", "outbound"


class CallProtocol(models.TextChoices):
    TWILIO = "twilio", "Twilio Media Streams"
    PCM = "pcm", "plain PCM"


class Speaker(models.TextChoices):
    """Who speaks in a segment: the caller (Twilio's ``inbound`` track, PCM
    channel 0) or the agent (``outbound``, channel 1)."""

    CUSTOMER = "customer", "customer"
    AGENT = "agent", "agent"


class SegmentStatus(models.TextChoices):
    PENDING = "pending", "pending"
    RECOGNIZED = "recognized", "recognized"
    FAILED = "failed", "failed"


class Agent(models.Model):
    """A person who takes calls; logs in as a Django user."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agent")
    display_name = models.CharField(max_length=200, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["display_name", "id"]

    def __str__(self) -> str:
        return self.display_name or self.user.get_username()


class Customer(models.Model):
    """A caller, identified by phone number (E.164) or by an id the telephony
    side passes in the stream's custom parameters."""

    phone = models.CharField(
        "phone number",
        max_length=16,
        unique=True,
        help_text="E.164, e.g. +4915112345678",
        error_messages={"unique": "A customer with this phone number already exists."},
    )
    name = models.CharField(max_length=200, blank=True)
    notes = models.TextField(blank=True)
    external_id = models.CharField(
        "external id",
        max_length=128,
        unique=True,
        null=True,
        blank=True,
        help_text="Customer id from the telephony stream's custom parameters.",
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created", "-id"]
        permissions = [
            ("adapt_customer", "Can trigger adaptation of a caller's voice profile"),
            ("forget_customer", "Can forget a caller (delete audio, transcripts and profiles)"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(phone__regex=E164_REGEX),
                name="customer_phone_e164",
                violation_error_message="Phone number must be in E.164 form, e.g. +4915112345678.",
            ),
            models.CheckConstraint(
                condition=~Q(external_id=""),
                name="customer_external_id_not_empty",
                violation_error_message="External id must be null or non-empty.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.phone})" if self.name else self.phone


class Line(models.Model):
    """A media line (trunk): what a telephony integrator points at the media
    endpoint. Its secret token is shown once at creation; only its SHA-256
    is stored."""

    name = models.CharField(max_length=100, unique=True)
    token_hash = models.CharField(
        "token SHA-256", max_length=64, unique=True, editable=False, help_text="Hex SHA-256 of the line's token."
    )
    enabled = models.BooleanField(default=True, help_text="A disabled line refuses new calls.")
    vocabulary = models.TextField(
        blank=True,
        help_text="Product names and words the recognizer should favour on this line, one per line "
        "(or comma-separated). A stream can add its own (PCM phrase_list, Twilio customParameters).",
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(token_hash__regex=SHA256_REGEX), name="line_token_hash_sha256_hex"),
            models.CheckConstraint(condition=~Q(name=""), name="line_name_not_empty"),
        ]

    def __str__(self) -> str:
        return self.name if self.enabled else f"{self.name} (disabled)"

    def vocabulary_list(self) -> list[str]:
        """The line's vocabulary: one phrase per line or comma, whitespace collapsed, no duplicates."""
        return split_vocabulary(self.vocabulary)


MAX_VOCABULARY = 100


def split_vocabulary(text: str) -> list[str]:
    """Phrases from text with one per line or comma-separated."""
    phrases: list[str] = []
    for part in re.split(r"[,\n]", text or ""):
        phrase = " ".join(part.split())
        if phrase and phrase not in phrases:
            phrases.append(phrase)
    return phrases


class Call(models.Model):
    """One telephone call, live or finished."""

    Status = CallStatus
    Direction = CallDirection
    Protocol = CallProtocol

    # Indexed through the composite indexes below.
    customer = models.ForeignKey(
        Customer, on_delete=models.PROTECT, related_name="calls", null=True, blank=True, db_index=False
    )
    agent = models.ForeignKey(
        Agent, on_delete=models.SET_NULL, related_name="calls", null=True, blank=True, db_index=False
    )
    line = models.ForeignKey(
        Line,
        on_delete=models.SET_NULL,
        related_name="calls",
        null=True,
        blank=True,
        help_text="Media line it came in on.",
    )
    direction = models.CharField(max_length=8, choices=CallDirection.choices, default=CallDirection.INBOUND)
    protocol = models.CharField(max_length=8, choices=CallProtocol.choices)
    external_id = models.CharField(
        "external id", max_length=128, blank=True, default="", help_text="Stream sid or call sid."
    )
    status = models.CharField(max_length=8, choices=CallStatus.choices, default=CallStatus.LIVE)
    started_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    failure_reason = models.TextField(blank=True)
    vocabulary = models.JSONField(
        default=list, blank=True,
        help_text="Words and names the recognizer favours on this call: the line's vocabulary and the stream's list.",
    )  # fmt: skip

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["protocol", "external_id"],
                condition=~Q(external_id=""),
                name="call_unique_external_id_per_protocol",
                violation_error_message="A call with this protocol and external id already exists.",
            ),
            models.CheckConstraint(condition=Q(status__in=CallStatus.values), name="call_status_valid"),
            models.CheckConstraint(condition=Q(direction__in=CallDirection.values), name="call_direction_valid"),
            models.CheckConstraint(condition=Q(protocol__in=CallProtocol.values), name="call_protocol_valid"),
            models.CheckConstraint(
                condition=(Q(status="live") & Q(ended_at__isnull=True))
                | (~Q(status="live") & Q(ended_at__isnull=False)),
                name="call_ended_at_matches_status",
                violation_error_message="A live call has no end time; an ended or failed call has one.",
            ),
            models.CheckConstraint(
                condition=Q(ended_at__isnull=True) | Q(ended_at__gte=F("started_at")),
                name="call_ends_after_start",
                violation_error_message="A call cannot end before it started.",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "started_at"], name="call_status_started"),
            models.Index(fields=["customer", "started_at"], name="call_customer_started"),
            models.Index(fields=["agent", "started_at"], name="call_agent_started"),
        ]

    def __str__(self) -> str:
        ref = self.external_id or f"#{self.pk}"
        return f"{self.get_protocol_display()} call {ref} ({self.status})"

    @property
    def duration_s(self) -> float | None:
        if self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()


class Segment(models.Model):
    """A stretch of one party's speech between two endpoints, and what was
    recognized (and, after review, verified) in it."""

    Status = SegmentStatus
    Speaker = Speaker

    # Indexed through the (call, index) unique constraint.
    call = models.ForeignKey(Call, on_delete=models.CASCADE, related_name="segments", db_index=False)
    index = models.PositiveIntegerField(help_text="Position in the call, from 0.")
    start_ms = models.PositiveIntegerField(help_text="Start, in ms from the start of the call.")
    end_ms = models.PositiveIntegerField(help_text="End, in ms from the start of the call.")
    speaker = models.CharField(
        max_length=8, choices=Speaker.choices, default=Speaker.CUSTOMER,
        help_text="Whose track it came from: the customer's (inbound, channel 0) or the agent's (outbound, channel 1).",
    )  # fmt: skip
    speech_start_ms = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Where the voiced audio begins, in ms from the start of the call (the audio keeps a pre-roll).",
    )  # fmt: skip
    speech_end_ms = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Where the voiced audio ends, in ms from the start of the call (the audio keeps a tail).",
    )  # fmt: skip
    audio = models.FileField(upload_to="segments/%Y/%m/%d/", blank=True)
    sample_rate = models.PositiveIntegerField(default=8000)
    text = models.TextField("recognized text", blank=True)
    words = models.JSONField(
        default=list, blank=True, help_text='[{"w": word, "start": s, "end": s, "conf": 0..1}, ...]'
    )
    confidence = models.FloatField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=SegmentStatus.choices, default=SegmentStatus.PENDING)
    failure_reason = models.TextField(blank=True)
    verified_text = models.TextField(blank=True)
    verified_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        related_name="verified_segments",
        null=True,
        blank=True,
    )
    verified_at = models.DateTimeField(null=True, blank=True)
    voice_profile = models.ForeignKey(
        "VoiceProfile",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The caller's profile the recognizer used (none: the base model).",
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["call_id", "index"]
        permissions = [
            ("verify_segment", "Can verify (correct and confirm) segment transcripts"),
            ("rerecognize_segment", "Can queue segments for recognition again"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["call", "index"],
                name="segment_unique_index_per_call",
                violation_error_message="This call already has a segment with this index.",
            ),
            models.CheckConstraint(
                condition=Q(start_ms__gte=0) & Q(end_ms__gte=F("start_ms")),
                name="segment_times_ordered",
                violation_error_message="A segment needs 0 <= start_ms <= end_ms.",
            ),
            models.CheckConstraint(condition=Q(sample_rate__gt=0), name="segment_sample_rate_positive"),
            models.CheckConstraint(condition=Q(speaker__in=Speaker.values), name="segment_speaker_valid"),
            models.CheckConstraint(
                condition=Q(speech_start_ms__isnull=True)
                | (Q(speech_start_ms__gte=F("start_ms")) & Q(speech_end_ms__gte=F("speech_start_ms"))
                   & Q(speech_end_ms__lte=F("end_ms"))),
                name="segment_speech_within_segment",
                violation_error_message="The voiced part must lie within the segment: start_ms <= speech_start_ms "
                "<= speech_end_ms <= end_ms.",
            ),  # fmt: skip
            models.CheckConstraint(condition=Q(status__in=SegmentStatus.values), name="segment_status_valid"),
            models.CheckConstraint(
                condition=Q(confidence__isnull=True) | Q(confidence__gte=0, confidence__lte=1),
                name="segment_confidence_in_unit_interval",
            ),
        ]
        indexes = [
            # The sweeper looks for segments stuck in "pending" for too long.
            models.Index(fields=["status", "created"], name="segment_status_created"),
            # Meta-training counts verified audio since a date.
            models.Index(fields=["verified_at"], name="segment_verified_at"),
        ]

    def __str__(self) -> str:
        return f"segment {self.index} of call #{self.call_id}"

    @property
    def is_verified(self) -> bool:
        return self.verified_at is not None

    @property
    def best_text(self) -> str:
        """The verified transcript where there is one, else the recognized text."""
        return self.verified_text if self.is_verified else self.text

    @property
    def speech_span_ms(self) -> tuple[int, int]:
        """(start, end) of the voiced part where the endpointer recorded it, else the segment's bounds."""
        if self.speech_start_ms is None or self.speech_end_ms is None:
            return self.start_ms, self.end_ms
        return self.speech_start_ms, self.speech_end_ms


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
