"""Admin of call analytics: category rules (edited by administrators;
a rule that does not compile is refused with the reason), the categories
calls got, and each call's analytics with its pictures.
``call_analytics_html`` is what the call's own admin page shows."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from callcenter.analytics import pictures, selectors
from callcenter.analytics.models import CallAnalytics, CallCategory, CategoryRule


def _figure(value, unit: str = "") -> str:
    if value is None:
        return "–"
    return f"{value / 1000:.1f} s" if unit == "ms" else f"{value:g}{unit}"


def call_analytics_html(call_id: int | None) -> str:
    """The analytics of a call as the admin shows them: the figures, the
    talk-time bar and the timeline (SVG), and the categories."""
    analytics = selectors.call_analytics(call_id=call_id) if call_id else None
    if analytics is None:
        return format_html("<em>{}</em>", "Not computed yet: they are computed when the call ends.")
    categories = [c.rule.name for c in selectors.call_categories(call_id=call_id)]
    timeline = analytics.timeline or {}
    rows = [
        ("talk time", _figure(analytics.talk_ms_customer, "ms"), _figure(analytics.talk_ms_agent, "ms")),
        ("interruptions", analytics.interruptions_customer, analytics.interruptions_agent),
        ("words per minute", _figure(analytics.wpm_customer), _figure(analytics.wpm_agent)),
        ("sentiment (−1..1)", _figure(analytics.sentiment_customer), _figure(analytics.sentiment_agent)),
    ]
    table = format_html(
        "<table class='call-analytics'><tr><th></th><th>customer</th><th>agent</th></tr>{}</table>",
        format_html_join("", "<tr><th>{}</th><td>{}</td><td>{}</td></tr>", rows),
    )
    summary = format_html(
        "<p>Silence {} (longest {}), overlap {}, call {}. Categories: {}</p>",
        _figure(analytics.silence_ms, "ms"), _figure(analytics.longest_silence_ms, "ms"),
        _figure(analytics.overlap_ms, "ms"), _figure(analytics.duration_ms, "ms"),
        ", ".join(categories) or "none",
    )  # fmt: skip
    # The pictures are built from numbers and escaped labels only (pictures.py).
    bar = mark_safe(
        pictures.talk_bar(
            talk_ms={"customer": analytics.talk_ms_customer, "agent": analytics.talk_ms_agent},
            silence_ms=analytics.silence_ms, overlap_ms=analytics.overlap_ms, duration_ms=analytics.duration_ms,
        )
    )  # fmt: skip
    lanes = mark_safe(
        pictures.timeline(
            speech=timeline.get("speech", {}), silences=timeline.get("silences", []),
            overlaps=timeline.get("overlaps", []), duration_ms=analytics.duration_ms,
        )
    )  # fmt: skip
    return format_html("{}{}<div>{}</div><div>{}</div>", table, summary, bar, lanes)


@admin.register(CategoryRule)
class CategoryRuleAdmin(admin.ModelAdmin):
    list_display = ["name", "match", "party", "window", "alert", "enabled", "updated"]
    list_filter = ["enabled", "alert", "match", "party"]
    search_fields = ["name", "phrases", "description"]
    fields = ["name", "description", "phrases", "match", "party", ("window_start_s", "window_end_s"), "alert", "enabled"]

    @admin.display(description="window")
    def window(self, rule: CategoryRule) -> str:
        if rule.window_start_s is None and rule.window_end_s is None:
            return "whole call"
        end = "end" if rule.window_end_s is None else f"{rule.window_end_s:g} s"
        return f"{rule.window_start_s or 0:g} s – {end}"


@admin.register(CallCategory)
class CallCategoryAdmin(admin.ModelAdmin):
    list_display = ["rule", "call", "speaker", "matched_text", "at", "created"]
    list_filter = ["rule", "speaker"]
    search_fields = ["rule__name", "matched_text"]
    list_select_related = ["rule", "call"]
    readonly_fields = ["call", "rule", "segment", "speaker", "matched_text", "at_ms", "created"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="at (s)", ordering="at_ms")
    def at(self, category: CallCategory) -> str:
        return f"{category.at_ms / 1000:.1f}"


@admin.register(CallAnalytics)
class CallAnalyticsAdmin(admin.ModelAdmin):
    list_display = ["call", "talk_customer", "talk_agent", "silence", "overlap", "interruptions_customer",
                    "interruptions_agent", "sentiment_customer", "sentiment_agent", "computed_at"]  # fmt: skip
    list_select_related = ["call"]
    fields = ["call", "pictures", "computed_at"]
    readonly_fields = ["call", "pictures", "computed_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="analytics")
    def pictures(self, analytics: CallAnalytics) -> str:
        return call_analytics_html(analytics.call_id)

    @admin.display(description="customer talk (s)", ordering="talk_ms_customer")
    def talk_customer(self, a: CallAnalytics) -> str:
        return f"{a.talk_ms_customer / 1000:.1f}"

    @admin.display(description="agent talk (s)", ordering="talk_ms_agent")
    def talk_agent(self, a: CallAnalytics) -> str:
        return f"{a.talk_ms_agent / 1000:.1f}"

    @admin.display(description="silence (s)", ordering="silence_ms")
    def silence(self, a: CallAnalytics) -> str:
        return f"{a.silence_ms / 1000:.1f}"

    @admin.display(description="overlap (s)", ordering="overlap_ms")
    def overlap(self, a: CallAnalytics) -> str:
        return f"{a.overlap_ms / 1000:.1f}"
