"""Model versions: promote one, or roll back to the previous one."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from callcenter.errors import CallCenterError

from .. import services
from ..models import ModelVersion
from .common import ReviewActions, metric_text


@admin.register(ModelVersion)
class ModelVersionAdmin(ReviewActions, admin.ModelAdmin):
    list_display = ["name", "backbone", "is_active", "promoted_at", "parent", "current_wer", "candidate_wer", "short_sha256", "created"]  # fmt: skip
    list_filter = ["backbone", "is_active", "created"]
    search_fields = ["name", "sha256"]
    readonly_fields = ["name", "backbone", "checkpoint", "sha256", "metrics", "is_active", "parent", "created", "promoted_at"]
    actions = ["promote", "roll_back"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # versions come from meta-training (or the shipped checkpoint)

    @admin.display(description="SHA-256")
    def short_sha256(self, version: ModelVersion) -> str:
        return version.sha256[:12]

    @admin.display(description="held-out WER of its parent")
    def current_wer(self, version: ModelVersion) -> str:
        return metric_text(version.metrics, "current_wer")

    @admin.display(description="held-out WER")
    def candidate_wer(self, version: ModelVersion) -> str:
        return metric_text(version.metrics, "candidate_wer")

    @admin.action(description="Promote (serve this version; its checkpoint is verified first)", permissions=["promote"])
    def promote(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one model version to promote.", messages.ERROR)
            return
        try:
            version = services.model_version_promote(model_version_id=queryset.get().pk, check=True, user=request.user)
        except CallCenterError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        else:
            self.message_user(request, f"{version.name} is now active")

    @admin.action(description="Roll back to the previously promoted version", permissions=["promote"])
    def roll_back(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        try:
            version = services.model_version_rollback(user=request.user)
        except CallCenterError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        else:
            self.message_user(request, f"rolled back: {version.name} is active again")
