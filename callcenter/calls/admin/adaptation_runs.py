"""Adaptation runs (read-only)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from ..models import AdaptationRun
from .common import before_after, metric_text


@admin.register(AdaptationRun)
class AdaptationRunAdmin(admin.ModelAdmin):
    list_display = ["id", "customer", "trigger", "status", "mode", "held_out", "seconds", "profile", "call", "created"]
    list_filter = ["status", "trigger", "mode", "created"]
    search_fields = ["customer__phone", "customer__name", "reason"]
    list_select_related = ["customer", "profile", "call"]
    readonly_fields = ["customer", "call", "model_version", "trigger", "status", "mode", "profile", "metrics", "reason", "requested_by", "created", "finished_at"]  # fmt: skip

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AdaptationRun | None = None) -> bool:
        return False

    @admin.display(description="held-out before → after")
    def held_out(self, run: AdaptationRun) -> str:
        return before_after(run.metrics)

    @admin.display(description="seconds")
    def seconds(self, run: AdaptationRun) -> str:
        return metric_text(run.metrics, "seconds")
