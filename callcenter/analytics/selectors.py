"""Reads of call analytics: the rules, a call's segments, and the export of
a call (``manage.py export_call`` and the supervisors' JSON URL)."""

from __future__ import annotations

from django.db.models import QuerySet

from callcenter.analytics.models import CallAnalytics, CallCategory, CategoryRule
from callcenter.calls.models import Call, Segment
from callcenter.errors import NotFound

PARTIES = ("customer", "agent")


def category_rules_enabled() -> QuerySet[CategoryRule]:
    return CategoryRule.objects.filter(enabled=True).order_by("pk")


def call_segments(*, call_id: int) -> QuerySet[Segment]:
    return Segment.objects.filter(call_id=call_id).order_by("start_ms", "index")


def recognized_segments(*, call_id: int) -> QuerySet[Segment]:
    return call_segments(call_id=call_id).filter(status=Segment.Status.RECOGNIZED)


def recognized_segment_ids(*, call_id: int) -> list[int]:
    return list(recognized_segments(call_id=call_id).values_list("pk", flat=True))


def segments_pending_before(*, call_id: int, before_ms: int | None) -> bool:
    """Whether a segment that starts before ``before_ms`` still waits for its final."""
    pending = Segment.objects.filter(call_id=call_id, status=Segment.Status.PENDING)
    if before_ms is not None:
        pending = pending.filter(start_ms__lte=before_ms)
    return pending.exists()


def call_analytics(*, call_id: int) -> CallAnalytics | None:
    return CallAnalytics.objects.filter(call_id=call_id).first()


def call_categories(*, call_id: int) -> QuerySet[CallCategory]:
    return CallCategory.objects.filter(call_id=call_id).select_related("rule").order_by("at_ms", "pk")


def _by_party(customer, agent) -> dict[str, object]:
    return {"customer": customer, "agent": agent}


def analytics_dict(analytics: CallAnalytics | None, categories: list[str]) -> dict[str, object] | None:
    if analytics is None:
        return None
    return {
        "duration_ms": analytics.duration_ms,
        "talk_ms": _by_party(analytics.talk_ms_customer, analytics.talk_ms_agent),
        "silence_ms": analytics.silence_ms,
        "longest_silence_ms": analytics.longest_silence_ms,
        "overlap_ms": analytics.overlap_ms,
        "interruptions": _by_party(analytics.interruptions_customer, analytics.interruptions_agent),
        "words_per_minute": _by_party(analytics.wpm_customer, analytics.wpm_agent),
        "sentiment": _by_party(analytics.sentiment_customer, analytics.sentiment_agent),
        "categories": categories,
        "computed_at": analytics.computed_at.isoformat(),
    }


def call_export(*, call_id: int) -> dict[str, object]:
    """The call as ``export_call`` prints it and the supervisors' URL serves it:
    the call, its segments in time order, its analytics (None until computed)."""
    call = Call.objects.select_related("customer", "agent__user", "line").filter(pk=call_id).first()
    if call is None:
        raise NotFound(f"call #{call_id} does not exist", call_id=call_id)
    analytics = call_analytics(call_id=call_id)
    sentiments = (analytics.timeline or {}).get("segments", {}) if analytics else {}
    categories = list(call_categories(call_id=call_id))
    segments = [
        {
            "id": s.pk,
            "index": s.index,
            "speaker": s.speaker,
            "start_ms": s.start_ms,
            "end_ms": s.end_ms,
            "speech_start_ms": s.speech_start_ms,
            "speech_end_ms": s.speech_end_ms,
            "status": s.status,
            "text": s.best_text,
            "verified": s.is_verified,
            "words": s.words,
            "sentiment": sentiments.get(str(s.pk)),
        }
        for s in call_segments(call_id=call_id)
    ]
    return {
        "call": {
            "id": call.pk,
            "protocol": call.protocol,
            "status": call.status,
            "external_id": call.external_id,
            "line": call.line.name if call.line_id else None,
            "customer": call.customer.phone if call.customer_id else None,
            "agent": call.agent.user.get_username() if call.agent_id else None,
            "started_at": call.started_at.isoformat(),
            "ended_at": call.ended_at.isoformat() if call.ended_at else None,
        },
        "segments": segments,
        "analytics": analytics_dict(analytics, [c.rule.name for c in categories]),
        "categories": [
            {"name": c.rule.name, "speaker": c.speaker or None, "segment": c.segment_id, "text": c.matched_text,
             "at_ms": c.at_ms}
            for c in categories
        ],  # fmt: skip
    }


def call_alerts_and_analytics(*, call_id: int) -> dict[str, object]:
    """For the agent page's call view: the alerts raised so far and the analytics (None until the call ended)."""
    categories = [c for c in call_categories(call_id=call_id) if c.rule.alert]
    return {
        "alerts": [
            {"type": "alert", "call": call_id, "category": c.rule.name, "speaker": c.speaker or None,
             "segment": c.segment_id, "text": c.matched_text, "at_ms": c.at_ms}
            for c in categories
        ],  # fmt: skip
        "analytics": analytics_dict(call_analytics(call_id=call_id), [c.rule.name for c in call_categories(call_id=call_id)]),
    }
