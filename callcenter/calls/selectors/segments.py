"""Segments: one by id, a call's in order, counts by status."""

from __future__ import annotations

import datetime as dt

from django.db.models import Count, QuerySet
from django.utils import timezone

from callcenter.errors import NotFound

from ..models import Segment


def segment_get(*, segment_id: int) -> Segment:
    segment = Segment.objects.select_related("call").filter(pk=segment_id).first()
    if segment is None:
        raise NotFound(f"segment #{segment_id} does not exist", segment_id=segment_id)
    return segment


def call_segments(*, call_id: int) -> QuerySet[Segment]:
    return Segment.objects.filter(call_id=call_id).order_by("index")


def segments_by_id(*, segment_ids: list[int]) -> list[Segment]:
    return list(Segment.objects.filter(pk__in=segment_ids).order_by("call_id", "index"))


def segment_status_counts() -> dict[str, int]:
    """How many segments are in each status (every status, zeros included)."""
    counts = dict.fromkeys(Segment.Status.values, 0)
    for row in Segment.objects.values("status").annotate(n=Count("pk")).order_by():
        counts[row["status"]] = row["n"]
    return counts


def segments_waiting_for_recognition(*, exclude_id: int, limit: int, max_age_s: int) -> list[Segment]:
    """Other segments whose audio is stored and whose recognition has not run yet (their tasks
    wait in the queue), oldest first, created in the last ``max_age_s`` seconds: what the worker
    recognizes in one batch with the segment it was given."""
    if limit <= 0:
        return []
    since = timezone.now() - dt.timedelta(seconds=max_age_s)
    return list(
        Segment.objects.select_related("call")
        .filter(status=Segment.Status.PENDING, created__gte=since)
        .exclude(audio="")
        .exclude(pk=exclude_id)
        .order_by("created")[:limit]
    )
