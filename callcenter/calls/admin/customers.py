"""Customers: calls, profile versions and accuracy history; re-adapt and forget."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count, Exists, OuterRef, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.html import format_html

from callcenter.errors import CallCenterError

from .. import selectors, services
from ..models import Customer, ModelVersion, VoiceProfile
from .common import ReviewActions, before_after, html_table


@admin.register(Customer)
class CustomerAdmin(ReviewActions, admin.ModelAdmin):
    """A caller: calls, profile versions with their accuracy history; the
    re-adapt and forget actions."""

    list_display = ["phone", "name", "external_id", "call_count", "has_profile", "created"]
    search_fields = ["phone", "name", "external_id"]
    list_filter = ["created"]
    date_hierarchy = "created"
    readonly_fields = ["created", "updated", "history", "profile_versions", "accuracy_history"]
    actions = ["adapt_callers", "forget_callers"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Customer]:
        active = ModelVersion.objects.filter(is_active=True)
        return (
            super()
            .get_queryset(request)
            .annotate(
                call_count=Count("calls", distinct=True),
                profile_exists=Exists(
                    VoiceProfile.objects.filter(customer=OuterRef("pk"), model_version__in=active)
                ),
            )
        )

    @admin.display(description="calls", ordering="call_count")
    def call_count(self, customer: Customer) -> int:
        return customer.call_count

    @admin.display(description="profile", boolean=True)
    def has_profile(self, customer: Customer) -> bool:
        return customer.profile_exists

    @admin.display(description="history")
    def history(self, customer: Customer) -> str:
        if not customer.pk:
            return ""
        h = selectors.customer_history(customer_id=customer.pk)
        improvement = "—" if h.improvement is None else f"{h.improvement * 100:+.0f} % held-out errors"
        return format_html(
            "{} calls, {} segments ({} verified), {} s of audio; profile for the active model: {}; "
            "last accepted adaptation: {}",
            h.calls,
            h.segments,
            h.verified_segments,
            h.audio_seconds,
            f"v{h.profile_version}" if h.has_profile else "none (base model)",
            improvement,
        )

    @admin.display(description="profile versions")
    def profile_versions(self, customer: Customer) -> str:
        if not customer.pk:
            return ""
        rows = [
            (p.model_version.name, p.version, p.created.strftime("%Y-%m-%d %H:%M"), p.metrics.get("mode", ""),
             before_after(p.metrics), p.metrics.get("utterances", ""), p.metrics.get("seconds", ""))
            for p in selectors.voice_profiles_for_customer(customer_id=customer.pk)
        ]  # fmt: skip
        if not rows:
            return "no profile yet: calls are recognized with the base model"
        return html_table(["model", "version", "created", "mode", "held-out before → after", "utterances", "seconds"], rows)

    @admin.display(description="adaptation and accuracy history")
    def accuracy_history(self, customer: Customer) -> str:
        if not customer.pk:
            return ""
        rows = [
            (h["created"].strftime("%Y-%m-%d %H:%M"), h["trigger"], h["status"], h["mode"],
             before_after(h["metrics"]),
             "" if h["improvement"] is None else f"{h['improvement'] * 100:+.0f} %",
             f"v{h['profile_version']}" if h["profile_version"] else "", h["reason"])
            for h in selectors.customer_accuracy_history(customer_id=customer.pk)
        ]  # fmt: skip
        if not rows:
            return "no adaptation yet"
        return html_table(["when", "trigger", "outcome", "mode", "held-out before → after", "change", "profile", "reason"], rows)

    @admin.action(description="Re-adapt these callers' voice profiles", permissions=["adapt"])
    def adapt_callers(self, request: HttpRequest, queryset: QuerySet[Customer]) -> None:
        self._adapt(request, list(queryset.values_list("pk", flat=True)))

    @admin.action(description="Forget these callers (delete audio, transcripts, profiles)", permissions=["forget"])
    def forget_callers(self, request: HttpRequest, queryset: QuerySet[Customer]) -> HttpResponse | None:
        if request.POST.get("confirm") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "title": "Forget these callers?",
                "customers": list(queryset),
                "opts": self.model._meta,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(request, "admin/calls/customer/forget_confirmation.html", context)
        for customer in list(queryset):
            try:
                counts = services.customer_forget(customer_id=customer.pk, user=request.user)
            except CallCenterError as exc:
                self.message_user(request, f"{customer}: {exc.message}", messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"{customer} forgotten: {counts['calls']} call(s), {counts['segments']} segment(s), "
                    f"{counts['audio_files']} audio file(s), {counts['profiles']} profile(s) deleted",
                )
        return None
