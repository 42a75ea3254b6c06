"""Callers' voice profiles (read-only: adaptation makes them)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from ..models import VoiceProfile
from .common import before_after


@admin.register(VoiceProfile)
class VoiceProfileAdmin(admin.ModelAdmin):
    list_display = ["customer", "model_version", "version", "state_size", "held_out", "created"]
    list_filter = ["model_version", "created"]
    search_fields = ["customer__phone", "customer__name", "customer__external_id"]
    list_select_related = ["customer", "model_version"]
    autocomplete_fields = ["customer"]
    readonly_fields = ["customer", "model_version", "version", "state_size", "metrics", "created"]
    exclude = ["state"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Profiles are made by adaptation, never typed in.
        return False

    def has_change_permission(self, request: HttpRequest, obj: VoiceProfile | None = None) -> bool:
        return False

    @admin.display(description="state (bytes)")
    def state_size(self, profile: VoiceProfile) -> int:
        return len(profile.state or b"")

    @admin.display(description="held-out before → after")
    def held_out(self, profile: VoiceProfile) -> str:
        return before_after(profile.metrics)
