"""Segments: listen, read the recognized text with low-confidence words
marked, and verify or correct the transcript."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from callcenter.errors import CallCenterError

from .. import services
from ..services.segments import VERIFIED_TEXT_MAX_CHARS
from ..models import Segment
from .common import ReviewActions, short


LOW_CONFIDENCE = 0.6  # words below this are marked on the review pages


def marked_words(segment: Segment) -> str:
    """The recognized text with low-confidence words marked (HTML)."""
    if not segment.words:
        return segment.text
    return format_html_join(
        " ",
        "{}",
        (
            (
                format_html('<mark title="confidence {}">{}</mark>', f"{float(w['conf']):.2f}", w["w"])
                if float(w.get("conf", 1)) < LOW_CONFIDENCE
                else w["w"],
            )
            for w in segment.words
        ),
    )


def audio_player(segment: Segment) -> str:
    if not segment.audio:
        return "—"
    url = reverse("calls:segment_audio", args=[segment.pk])
    return format_html('<audio controls preload="none" src="{}"></audio>', url)


class SegmentReviewForm(forms.ModelForm):
    """A segment's verified transcript, typed or confirmed by a supervisor.
    Saving goes through ``services.segment_verify`` (who and when)."""

    mark_verified = forms.BooleanField(
        required=False, label="verified", help_text="Tick to confirm (the recognized text is used if none is typed)."
    )

    class Meta:
        model = Segment
        fields = ["verified_text"]
        widgets = {"verified_text": forms.Textarea(attrs={"rows": 2, "cols": 50})}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["mark_verified"].initial = self.instance.is_verified

    def verified_transcript(self) -> str | None:
        """The transcript to verify (typed, or the recognized text when only
        the box is ticked), or None when nothing is to be verified. A typed
        transcript that was cleared is returned empty (and refused)."""
        text = " ".join((self.cleaned_data.get("verified_text") or "").split())
        if "verified_text" in self.changed_data:
            return text
        if self.cleaned_data.get("mark_verified") and not self.instance.is_verified:
            return text or self.instance.text.strip()
        return None

    def clean(self) -> dict:
        cleaned = super().clean()
        if "verified_text" in self.errors:
            return cleaned  # the field's own error (a NUL character) says what is wrong; nothing more
        text = self.verified_transcript()
        if text is not None and not text.strip():
            raise forms.ValidationError(
                "A verified transcript cannot be empty: type what the caller said (or leave the segment unverified)."
            )
        if text is not None and len(text) > VERIFIED_TEXT_MAX_CHARS:
            # here, not at save: a refusal at save came with Django's "changed successfully"
            raise forms.ValidationError(f"A verified transcript is at most {VERIFIED_TEXT_MAX_CHARS} characters.")
        return cleaned


class VerifiedFilter(admin.SimpleListFilter):
    title = "verified"
    parameter_name = "verified"

    def lookups(self, request, model_admin):
        return [("yes", "verified"), ("no", "not verified")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Segment]) -> QuerySet[Segment]:
        if self.value() == "yes":
            return queryset.filter(verified_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(verified_at__isnull=True)
        return queryset


@admin.register(Segment)
class SegmentAdmin(ReviewActions, admin.ModelAdmin):
    list_display = ["id", "call", "index", "status", "short_text", "confidence", "is_verified", "failure", "created"]
    list_filter = ["status", VerifiedFilter, "call__protocol", "created"]
    search_fields = ["text", "verified_text", "call__external_id", "call__customer__phone"]
    list_select_related = ["call"]
    form = SegmentReviewForm
    fields = ["call", "index", "audio_player", "status", "marked_text", "confidence", "failure_reason", "verified_text", "mark_verified", "verified_by", "verified_at", "created", "updated"]  # fmt: skip
    readonly_fields = ["call", "index", "audio_player", "status", "marked_text", "confidence", "failure_reason", "verified_by", "verified_at", "created", "updated"]  # fmt: skip
    actions = ["mark_verified", "recognize_again", "rerecognize_all"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # segments come from calls

    def has_change_permission(self, request: HttpRequest, obj: Segment | None = None) -> bool:
        return request.user.has_perm("calls.verify_segment")

    def save_model(self, request: HttpRequest, obj: Segment, form: SegmentReviewForm, change: bool) -> None:
        text = form.verified_transcript()
        if text is None:
            return
        try:
            services.segment_verify(segment_id=obj.pk, text=text, user=request.user)
        except CallCenterError as exc:
            self.message_user(request, exc.message, messages.ERROR)

    @admin.display(description="audio")
    def audio_player(self, segment: Segment) -> str:
        return audio_player(segment)

    @admin.display(description="recognized text")
    def marked_text(self, segment: Segment) -> str:
        return marked_words(segment)

    @admin.display(description="text")
    def short_text(self, segment: Segment) -> str:
        return short(segment.best_text)

    @admin.action(description="Mark verified (as recognized)", permissions=["verify"])
    def mark_verified(self, request: HttpRequest, queryset: QuerySet[Segment]) -> None:
        self._verify(request, list(queryset.values_list("pk", flat=True)))

    @admin.action(description="Queue recognition again (failed or pending segments)")
    def recognize_again(self, request: HttpRequest, queryset: QuerySet[Segment]) -> None:
        queued = services.segments_requeue(segment_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{queued} segment(s) queued for recognition")

    @admin.action(description="Recognize again (also recognized ones)", permissions=["rerecognize"])
    def rerecognize_all(self, request: HttpRequest, queryset: QuerySet[Segment]) -> None:
        self._rerecognize(request, list(queryset.values_list("pk", flat=True)))

    @admin.display(description="failure")
    def failure(self, segment: Segment) -> str:
        return short(segment.failure_reason, 60)

    @admin.display(description="verified", boolean=True, ordering="verified_at")
    def is_verified(self, segment: Segment) -> bool:
        return segment.is_verified
