"""Django admin for supervisors: find calls by phone number or call id, read
and listen to transcripts, correct and verify them, re-recognize, re-adapt
or forget a caller, follow each caller's profile versions and accuracy, and
promote or roll back model versions.

Permissions beyond Django's view/change: ``calls.verify_segment``,
``calls.rerecognize_segment``, ``calls.adapt_customer``,
``calls.forget_customer``, ``calls.promote_modelversion``. The services check
them again; the admin only hides what a user may not do."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from callcenter.errors import CallCenterError

from . import selectors, services
from .models import AdaptationRun, Agent, Call, Customer, Line, ModelVersion, Segment, TrainingRun, VoiceProfile

LOW_CONFIDENCE = 0.6  # words below this are marked on the review pages

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
        text = self.verified_transcript()
        if text is not None and not text.strip():
            raise forms.ValidationError(
                "A verified transcript cannot be empty: type what the caller said (or leave the segment unverified)."
            )
        return cleaned


class SegmentInline(admin.TabularInline):
    """A call's segments in order: player, recognized text with
    low-confidence words marked, and the editable verified transcript."""

    model = Segment
    form = SegmentReviewForm
    fields = ["index", "audio_player", "times", "status", "marked_text", "confidence", "verified_text", "mark_verified", "verified_by", "verified_at"]  # fmt: skip
    readonly_fields = ["index", "audio_player", "times", "status", "marked_text", "confidence", "verified_by", "verified_at"]  # fmt: skip
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


class ReviewActions:
    """Permission hooks for the custom admin actions."""

    def has_verify_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("calls.verify_segment")

    def has_rerecognize_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("calls.rerecognize_segment")

    def has_adapt_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("calls.adapt_customer")

    def has_forget_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("calls.forget_customer")

    def has_promote_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("calls.promote_modelversion")

    def _verify(self, request: HttpRequest, segment_ids: list[int]) -> None:
        try:
            done, skipped = services.segments_verify_as_recognized(segment_ids=segment_ids, user=request.user)
        except CallCenterError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return
        self.message_user(request, f"{done} segment(s) marked verified")
        if skipped:
            self.message_user(
                request,
                f"{skipped} segment(s) without recognized text were not verified: type their transcript first",
                messages.WARNING,
            )

    def _rerecognize(self, request: HttpRequest, segment_ids: list[int]) -> None:
        try:
            queued = services.segments_rerecognize(segment_ids=segment_ids, user=request.user)
        except CallCenterError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return
        self.message_user(request, f"{queued} segment(s) queued for recognition")

    def _adapt(self, request: HttpRequest, customer_ids: list[int]) -> None:
        for customer_id in sorted(set(customer_ids)):
            try:
                run = services.adaptation_request(customer_id=customer_id, user=request.user)
            except CallCenterError as exc:
                self.message_user(request, f"customer #{customer_id}: {exc.message}", messages.ERROR)
            else:
                self.message_user(request, f"customer #{customer_id}: adaptation #{run.pk} queued")


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
        return _short(segment.best_text)

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
        return _short(segment.failure_reason, 60)

    @admin.display(description="verified", boolean=True, ordering="verified_at")
    def is_verified(self, segment: Segment) -> bool:
        return segment.is_verified


def _metric(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    return "" if value is None else str(value)


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
        return _metric(version.metrics, "current_wer")

    @admin.display(description="held-out WER")
    def candidate_wer(self, version: ModelVersion) -> str:
        return _metric(version.metrics, "candidate_wer")

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
        return _before_after(profile.metrics)


def _before_after(metrics: dict) -> str:
    if "wer_before" in metrics:
        return f"WER {metrics['wer_before']} → {metrics.get('wer_after')}"
    if "conf_before" in metrics:
        return f"confidence {metrics['conf_before']} → {metrics.get('conf_after')}"
    return ""


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
        return _before_after(run.metrics)

    @admin.display(description="seconds")
    def seconds(self, run: AdaptationRun) -> str:
        return _metric(run.metrics, "seconds")


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
        return _metric(run.metrics, "current_wer")

    @admin.display(description="candidate WER")
    def candidate_wer(self, run: TrainingRun) -> str:
        return _metric(run.metrics, "candidate_wer")


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
             _before_after(p.metrics), p.metrics.get("utterances", ""), p.metrics.get("seconds", ""))
            for p in selectors.voice_profiles_for_customer(customer_id=customer.pk)
        ]  # fmt: skip
        if not rows:
            return "no profile yet: calls are recognized with the base model"
        return _table(["model", "version", "created", "mode", "held-out before → after", "utterances", "seconds"], rows)

    @admin.display(description="adaptation and accuracy history")
    def accuracy_history(self, customer: Customer) -> str:
        if not customer.pk:
            return ""
        rows = [
            (h["created"].strftime("%Y-%m-%d %H:%M"), h["trigger"], h["status"], h["mode"],
             _before_after(h["metrics"]),
             "" if h["improvement"] is None else f"{h['improvement'] * 100:+.0f} %",
             f"v{h['profile_version']}" if h["profile_version"] else "", h["reason"])
            for h in selectors.customer_accuracy_history(customer_id=customer.pk)
        ]  # fmt: skip
        if not rows:
            return "no adaptation yet"
        return _table(["when", "trigger", "outcome", "mode", "held-out before → after", "change", "profile", "reason"], rows)

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


def _table(header: list[str], rows: list[tuple]) -> str:
    head = format_html_join("", "<th>{}</th>", ((h,) for h in header))
    body = format_html_join(
        "", "<tr>{}</tr>", ((format_html_join("", "<td>{}</td>", ((c,) for c in row)),) for row in rows)
    )
    return format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", head, body)
