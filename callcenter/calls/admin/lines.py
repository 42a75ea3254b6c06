"""Media lines: the token is shown once, when a line is added or given a new one."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from callcenter.errors import CallCenterError

from .. import services
from ..models import Line


@admin.register(Line)
class LineAdmin(admin.ModelAdmin):
    """Media lines. Adding one (or issuing a new token) shows its token once,
    in the page's message; only its hash is kept."""

    list_display = ["name", "enabled", "call_count", "created"]
    list_filter = ["enabled"]
    search_fields = ["name"]
    fields = ["name", "enabled", "vocabulary", "created"]
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
        line, token = services.line_create(name=obj.name, enabled=obj.enabled, vocabulary=obj.vocabulary)
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
