"""Django admin for supervisors: find calls by phone number or call id, read
transcripts, see callers' profiles and model versions."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.utils.text import Truncator

from callcenter.errors import CallCenterError

from . import services
from .models import Agent, Call, Customer, Line, ModelVersion, Segment, VoiceProfile

admin.site.site_header = "Call center"
admin.site.site_title = "Call center admin"
admin.site.index_title = "Calls, transcripts and voice profiles"


def _short(text: str, length: int = 80) -> str:
    return Truncator(text).chars(length)


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["__str__", "user", "created"]
    search_fields = ["display_name", "user__username", "user__email"]
    list_select_related = ["user"]
    autocomplete_fields = ["user"]


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["phone", "name", "external_id", "call_count", "created"]
    search_fields = ["phone", "name", "external_id"]
    list_filter = ["created"]
    date_hierarchy = "created"
    readonly_fields = ["created", "updated"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Customer]:
        return super().get_queryset(request).annotate(call_count=Count("calls"))

    @admin.display(description="calls", ordering="call_count")
    def call_count(self, customer: Customer) -> int:
        return customer.call_count


@admin.register(Line)
class LineAdmin(admin.ModelAdmin):
    """Media lines. Adding one (or issuing a new token) shows its token once,
    in the page's message; only its hash is kept."""

    list_display = ["name", "enabled", "call_count", "created"]
    list_filter = ["enabled"]
    search_fields = ["name"]
    fields = ["name", "enabled", "created"]
    readonly_fields = ["created"]
    actions = ["issue_new_token", "disable_lines", "enable_lines"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Line]:
        return super().get_queryset(request).annotate(call_count=Count("calls"))

    @admin.display(description="calls", ordering="call_count")
    def call_count(self, line: Line) -> int:
        return line.call_count

    def save_model(self, request: HttpRequest, obj: Line, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        line, token = services.line_create(name=obj.name, enabled=obj.enabled)
        obj.pk, obj.token_hash, obj.created = line.pk, line.token_hash, line.created
        self._show_token(request, line, token)

    @admin.action(description="Issue a new token (the old one stops working)")
    def issue_new_token(self, request: HttpRequest, queryset: QuerySet[Line]) -> None:
        for line in queryset:
            try:
                line, token = services.line_token_rotate(line_id=line.pk)
            except CallCenterError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                self._show_token(request, line, token)

    @admin.action(description="Disable (refuse new calls)")
    def disable_lines(self, request: HttpRequest, queryset: QuerySet[Line]) -> None:
        self.message_user(request, f"{queryset.update(enabled=False)} line(s) disabled")

    @admin.action(description="Enable")
    def enable_lines(self, request: HttpRequest, queryset: QuerySet[Line]) -> None:
        self.message_user(request, f"{queryset.update(enabled=True)} line(s) enabled")

    def _show_token(self, request: HttpRequest, line: Line, token: str) -> None:
        self.message_user(
            request,
            f"Token of line {line.name!r} (shown only now; copy it into the media URL "
            f"/ws/media/twilio/<token> or /ws/media/pcm/<token>): {token}",
            messages.WARNING,
        )


class SegmentInline(admin.TabularInline):
    model = Segment
    fields = [
        "index", "start_ms", "end_ms", "status", "text", "confidence", "failure_reason", "verified_text", "verified_at",
    ]  # fmt: skip
    readonly_fields = fields
    ordering = ["index"]
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Call | None = None) -> bool:
        return False


@admin.register(Call)
class CallAdmin(admin.ModelAdmin):
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
    ]
    list_filter = ["status", "direction", "protocol", "line", "started_at"]
    search_fields = ["external_id", "customer__phone", "customer__name"]
    list_select_related = ["customer", "agent__user", "line"]
    date_hierarchy = "started_at"
    autocomplete_fields = ["customer", "agent"]
    inlines = [SegmentInline]

    @admin.display(description="duration (s)")
    def duration(self, call: Call) -> str:
        return "" if call.duration_s is None else f"{call.duration_s:.0f}"


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
class SegmentAdmin(admin.ModelAdmin):
    list_display = ["id", "call", "index", "status", "short_text", "confidence", "is_verified", "failure", "created"]
    list_filter = ["status", VerifiedFilter, "call__protocol", "created"]
    search_fields = ["text", "verified_text", "call__external_id", "call__customer__phone"]
    list_select_related = ["call"]
    raw_id_fields = ["call"]
    readonly_fields = ["created", "updated", "verified_by", "verified_at"]
    actions = ["recognize_again"]

    @admin.display(description="text")
    def short_text(self, segment: Segment) -> str:
        return _short(segment.best_text)

    @admin.action(description="Queue recognition again (failed or pending segments)")
    def recognize_again(self, request: HttpRequest, queryset: QuerySet[Segment]) -> None:
        queued = services.segments_requeue(segment_ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{queued} segment(s) queued for recognition")

    @admin.display(description="failure")
    def failure(self, segment: Segment) -> str:
        return _short(segment.failure_reason, 60)

    @admin.display(description="verified", boolean=True, ordering="verified_at")
    def is_verified(self, segment: Segment) -> bool:
        return segment.is_verified


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "is_active", "promoted_at", "short_sha256", "checkpoint", "created"]
    list_filter = ["is_active", "created"]
    search_fields = ["name", "sha256"]
    readonly_fields = ["created"]

    @admin.display(description="SHA-256")
    def short_sha256(self, version: ModelVersion) -> str:
        return version.sha256[:12]


@admin.register(VoiceProfile)
class VoiceProfileAdmin(admin.ModelAdmin):
    list_display = ["customer", "model_version", "version", "state_size", "created"]
    list_filter = ["model_version", "created"]
    search_fields = ["customer__phone", "customer__name", "customer__external_id"]
    list_select_related = ["customer", "model_version"]
    autocomplete_fields = ["customer"]
    readonly_fields = ["version", "state_size", "metrics", "created"]
    exclude = ["state"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Profiles are made by adaptation, never typed in.
        return False

    @admin.display(description="state (bytes)")
    def state_size(self, profile: VoiceProfile) -> int:
        return len(profile.state or b"")
