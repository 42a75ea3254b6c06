"""Meta-training runs (read-only)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from ..models import TrainingRun
from .common import metric_text


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ["id", "created", "status", "base", "candidate", "current_wer", "candidate_wer", "reason"]
    list_filter = ["status", "created"]
    readonly_fields = ["status", "base", "candidate", "metrics", "reason", "created", "finished_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: TrainingRun | None = None) -> bool:
        return False

    @admin.display(description="current WER")
    def current_wer(self, run: TrainingRun) -> str:
        return metric_text(run.metrics, "current_wer")

    @admin.display(description="candidate WER")
    def candidate_wer(self, run: TrainingRun) -> str:
        return metric_text(run.metrics, "candidate_wer")
