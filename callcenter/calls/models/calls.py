"""Calls and their segments (what was said, and what the recognizer made of it)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from callcenter.calls.models.customers import Agent, Customer
from callcenter.calls.models.lines import Line


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
    avg_logprob = models.FloatField(
        null=True, blank=True,
        help_text="Whisper: the mean token log-prob of the text as the recognizer's search scored it (none: not known).",
    )  # fmt: skip
    scored_by = models.CharField(
        max_length=32, blank=True,
        help_text="The recognizer's weights and decoding settings the score is comparable under (its scoring key).",
    )  # fmt: skip
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
