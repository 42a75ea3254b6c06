"""Reads of the agent page: which calls a viewer sees, one call with its
segments, the segments a page missed, the caller's history."""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from callcenter.calls import selectors as calls_selectors
from callcenter.calls.models import Call, Segment, VoiceProfile
from callcenter.errors import Forbidden, InvalidInput

from .access import QUEUE_WINDOW, Viewer

logger = logging.getLogger(__name__)

# Ended calls stay in the list this long, so an agent sees the call they just had
# (and unassigned ones stay in the queue as long: ``access.QUEUE_WINDOW``).
RECENTLY_ENDED = QUEUE_WINDOW
MAX_LISTED = 100


def _visible(calls: QuerySet[Call], viewer: Viewer, now: dt.datetime | None = None) -> QuerySet[Call]:
    """``calls`` narrowed to those the viewer sees (``Viewer.sees`` in SQL)."""
    if viewer.supervisor:
        return calls
    since = (now or timezone.now()) - QUEUE_WINDOW
    in_queue = Q(agent__isnull=True) & (Q(ended_at__isnull=True) | Q(ended_at__gte=since))
    if viewer.agent_id is None:
        return calls.filter(in_queue)
    return calls.filter(in_queue | Q(agent_id=viewer.agent_id))


def calls_for_viewer(*, viewer: Viewer, now: dt.datetime | None = None) -> list[Call]:
    """Live calls and calls that ended in the last 30 minutes that the viewer
    sees, live ones first, newest first."""
    since = (now or timezone.now()) - RECENTLY_ENDED
    # A call that ended since then started at most the longest call before:
    # both arms use the (status, started_at) index.
    started_after = since - dt.timedelta(seconds=settings.STREAM_MAX_CALL_S)
    recently_ended = Q(status__in=[Call.Status.ENDED, Call.Status.FAILED], started_at__gte=started_after,
                       ended_at__gte=since)  # fmt: skip
    calls = Call.objects.filter(Q(status=Call.Status.LIVE) | recently_ended).select_related("customer", "agent__user")
    listed = list(_visible(calls, viewer, now).order_by("-started_at", "-id")[:MAX_LISTED])
    return sorted(listed, key=lambda c: c.status != Call.Status.LIVE)


def call_for_viewer(*, viewer: Viewer, call_id: int) -> Call:
    """One call the viewer may see: ``NotFound``, or ``Forbidden`` when it is
    another agent's or an unassigned call that left the queue."""
    call = calls_selectors.call_get(call_id=call_id)
    if not viewer.sees(agent_id=call.agent_id, ended_at=call.ended_at):
        if call.agent_id is None:
            raise Forbidden(f"call #{call_id} left the queue more than {QUEUE_WINDOW.seconds // 60} minutes ago",
                            call_id=call_id)  # fmt: skip
        raise Forbidden(f"call #{call_id} is assigned to another agent", call_id=call_id)
    return call


def call_visible(*, viewer: Viewer, call_id: int) -> bool:
    """Whether the viewer sees the call (``NotFound`` when there is none):
    the agents' feed asks it of each call it is not sure of."""
    call = calls_selectors.call_get(call_id=call_id)
    return viewer.sees(agent_id=call.agent_id, ended_at=call.ended_at)


def segments_after(*, viewer: Viewer, call_id: int, after: int | None = None) -> list[Segment]:
    """The call's segments with an id above ``after`` (all of them without),
    in order: what a page that has every segment up to ``after`` missed."""
    call_for_viewer(viewer=viewer, call_id=call_id)
    if after is not None and after < 0:
        raise InvalidInput(f"after must be a segment id (>= 0), got {after}", after=after)
    segments = calls_selectors.call_segments(call_id=call_id)
    if after is not None:
        segments = segments.filter(pk__gt=after)
    return list(segments)


def caller_history(*, viewer: Viewer, call: Call, limit: int = 10) -> dict:
    """The caller's earlier calls that the viewer may see (an agent: their
    own and the queue's, never another agent's transcript or name) and what
    the recognizer knows about the caller: whether it has a voice profile and
    how much adaptation improved recognition (``calls.selectors.customer_history``)."""
    if call.customer_id is None:
        return {"customer": None, "earlier_calls": [], "profile": None}
    earlier_calls = Call.objects.filter(customer_id=call.customer_id, started_at__lt=call.started_at)
    earlier = list(
        _visible(earlier_calls, viewer)
        .exclude(pk=call.pk)
        .select_related("agent__user")
        .order_by("-started_at", "-id")[:limit]
    )
    texts = _first_words(earlier)
    try:
        history = calls_selectors.customer_history(customer_id=call.customer_id)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        # Adaptation metrics are free-form JSON: a malformed one must not hide the call.
        logger.warning("call #%s: the caller's adaptation history could not be read: %r", call.pk, exc)
        latest = VoiceProfile.objects.filter(customer_id=call.customer_id).order_by("-created", "-id").first()
        profile = None if latest is None else {"version": latest.version, "model": None, "adaptations": None,
                                               "improvement": None}  # fmt: skip
        return {"customer": call.customer, "earlier_calls": [(c, texts.get(c.pk, "")) for c in earlier],
                "calls_total": None, "profile": profile}  # fmt: skip
    return {
        "customer": call.customer,
        "earlier_calls": [(c, texts.get(c.pk, "")) for c in earlier],
        "calls_total": history.calls,
        "profile": _profile(history),
    }


def _profile(history) -> dict | None:
    if not getattr(history, "has_profile", False):
        return None
    improvement = getattr(history, "improvement", None)
    if not isinstance(improvement, (int, float)) or isinstance(improvement, bool):
        improvement = None
    return {
        "version": getattr(history, "profile_version", None),
        "model": getattr(history, "profile_model_version", None),
        "adaptations": getattr(history, "adaptations", None),
        "improvement": improvement,
    }


def _first_words(calls: list[Call], length: int = 80) -> dict[int, str]:
    """What each call began with (its first recognized segment), for the history list."""
    out: dict[int, str] = {}
    if not calls:
        return out
    segments = (
        Segment.objects.filter(call_id__in=[c.pk for c in calls], status=Segment.Status.RECOGNIZED)
        .exclude(text="")
        .order_by("call_id", "index")
        .only("call_id", "text", "verified_text", "verified_at")
    )
    for segment in segments:
        if segment.call_id not in out:
            text = segment.best_text
            out[segment.call_id] = text if len(text) <= length else text[: length - 1] + "…"
    return out
