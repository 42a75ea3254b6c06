"""Calls, with their segments inline for review."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from callcenter.errors import CallCenterError

from .. import services
from ..models import Call, Segment
from .common import ReviewActions
from .segments import SegmentReviewForm, audio_player, marked_words


class SegmentInline(admin.TabularInline):
    """A call's segments in order: player, recognized text with
    low-confidence words marked, and the editable verified transcript."""

    model = Segment
    form = SegmentReviewForm
    fields = ["index", "speaker", "audio_player", "times", "status", "marked_text", "confidence", "verified_text", "mark_verified", "verified_by", "verified_at"]  # fmt: skip
    readonly_fields = ["index", "speaker", "audio_player", "times", "status", "marked_text", "confidence", "verified_by", "verified_at"]  # fmt: skip
    ordering = ["index"]
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Call | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Call | None = None) -> bool:
        return request.user.has_perm("calls.verify_segment")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Segment]:
        return super().get_queryset(request).select_related("verified_by")

    @admin.display(description="audio")
    def audio_player(self, segment: Segment) -> str:
        return audio_player(segment)

    @admin.display(description="recognized text")
    def marked_text(self, segment: Segment) -> str:
        if segment.status == Segment.Status.FAILED:
            return format_html("<em>failed: {}</em>", segment.failure_reason)
        return marked_words(segment)

    @admin.display(description="time (s)")
    def times(self, segment: Segment) -> str:
        return f"{segment.start_ms / 1000:.1f}–{segment.end_ms / 1000:.1f}"


class HasUnverifiedFilter(admin.SimpleListFilter):
    title = "unverified segments"
    parameter_name = "unverified"

    def lookups(self, request, model_admin):
        return [("yes", "has unverified segments"), ("no", "all segments verified")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Call]) -> QuerySet[Call]:
        unverified = Segment.objects.filter(call=OuterRef("pk"), verified_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(Exists(unverified))
        if self.value() == "no":
            return queryset.exclude(Exists(unverified))
        return queryset


@admin.register(Call)
class CallAdmin(ReviewActions, admin.ModelAdmin):
    list_display = [
        "id",
        "started_at",
        "status",
        "direction",
        "protocol",
        "customer",
        "agent",
        "external_id",
        "line",
        "duration",
        "segment_count",
        "unverified_count",
    ]
    list_filter = ["status", HasUnverifiedFilter, "agent", "direction", "protocol", "line", "started_at"]
    search_fields = ["external_id", "customer__phone", "customer__name", "customer__external_id"]
    list_select_related = ["customer", "agent__user", "line"]
    date_hierarchy = "started_at"
    autocomplete_fields = ["customer", "agent"]
    readonly_fields = ["analytics_pictures"]
    inlines = [SegmentInline]
    actions = ["mark_verified", "recognize_again", "adapt_callers"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Call]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                segment_total=Count("segments"),
                unverified_total=Count("segments", filter=Q(segments__verified_at__isnull=True)),
            )
        )

    @admin.display(description="analytics")
    def analytics_pictures(self, call: Call) -> str:
        """Talk time, silence, overlap, interruptions, sentiment; a talk-time bar and a timeline (SVG)."""
        from callcenter.analytics.admin import call_analytics_html

        return call_analytics_html(call.pk)

    @admin.display(description="duration (s)")
    def duration(self, call: Call) -> str:
        return "" if call.duration_s is None else f"{call.duration_s:.0f}"

    @admin.display(description="segments", ordering="segment_total")
    def segment_count(self, call: Call) -> int:
        return call.segment_total

    @admin.display(description="unverified", ordering="unverified_total")
    def unverified_count(self, call: Call) -> int:
        return call.unverified_total

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        if formset.model is not Segment:
            return super().save_formset(request, form, formset, change)
        # Verified through the service (who and when), not the formset's save.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for segment_form in formset.forms:
            if not segment_form.has_changed() or not segment_form.instance.pk:
                continue
            text = segment_form.verified_transcript()
            if text is None:
                continue
            try:
                services.segment_verify(segment_id=segment_form.instance.pk, text=text, user=request.user)
            except CallCenterError as exc:
                self.message_user(request, f"segment {segment_form.instance.index}: {exc.message}", messages.ERROR)

    @admin.action(description="Mark all their segments verified (as recognized)", permissions=["verify"])
    def mark_verified(self, request: HttpRequest, queryset: QuerySet[Call]) -> None:
        self._verify(request, list(Segment.objects.filter(call__in=queryset).values_list("pk", flat=True)))

    @admin.action(description="Recognize their segments again", permissions=["rerecognize"])
    def recognize_again(self, request: HttpRequest, queryset: QuerySet[Call]) -> None:
        self._rerecognize(request, list(Segment.objects.filter(call__in=queryset).values_list("pk", flat=True)))

    @admin.action(description="Re-adapt these callers' voice profiles", permissions=["adapt"])
    def adapt_callers(self, request: HttpRequest, queryset: QuerySet[Call]) -> None:
        self._adapt(request, [c for c in queryset.values_list("customer_id", flat=True) if c is not None])
