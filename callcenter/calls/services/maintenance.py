"""Maintenance (the sweeper, ``requeue_segments``): lost recognitions queued
again, orphaned calls closed, segments that never got their audio failed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from django.db import transaction
from django.utils import timezone

from callcenter.errors import InvalidInput, InvalidState

from ..models import Call, Segment
from .calls import call_end
from .enqueue import recognition_enqueue


def segments_requeue_stuck(*, older_than_s: int, limit: int = 1000) -> list[int]:
    """Queue recognition again for segments that have their audio but are
    still ``pending`` ``older_than_s`` seconds after their last change: their
    task was lost (the broker restarted empty, a worker was killed). Their
    ``updated`` time is renewed, so a segment is queued again at most once
    per that period; a task that runs twice stores one result. Returns the
    ids queued."""
    if older_than_s < 0:
        raise InvalidInput(f"older_than_s must be >= 0, got {older_than_s}", older_than_s=older_than_s)
    now = timezone.now()
    with transaction.atomic():
        ids = list(
            Segment.objects.select_for_update(skip_locked=True)
            .filter(status=Segment.Status.PENDING, updated__lt=now - dt.timedelta(seconds=older_than_s))
            .exclude(audio="")
            .order_by("pk")
            .values_list("pk", flat=True)[:limit]
        )
        Segment.objects.filter(pk__in=ids).update(updated=now)
        for segment_id in ids:
            transaction.on_commit(lambda sid=segment_id: recognition_enqueue(segment_id=sid, endpoint_at=None))
    return ids


def call_close_orphaned(*, call_id: int, reason: str) -> Call:
    """Close a live call that no web process holds any more (its process
    stopped) as ``failed`` with ``reason``. Its segments with audio are kept
    (and recognized); those whose audio never reached storage are marked
    ``failed``. ``InvalidState`` when the call was closed meanwhile."""
    with transaction.atomic():
        call = call_end(call_id=call_id, status=Call.Status.FAILED, failure_reason=reason)
        if call.failure_reason != reason:
            raise InvalidState(f"call #{call_id} was already closed", call_id=call_id)
        segments_fail_without_audio(call_ids=[call_id], reason=f"no audio stored: {reason}")
        return call


def segments_fail_without_audio(*, call_ids: Sequence[int], reason: str) -> int:
    """Mark ``failed`` the segments of these calls (which must not be live)
    that were opened at speech onset but never got their audio (the call
    ended before it could be stored). Returns how many."""
    return (
        Segment.objects.filter(call_id__in=list(call_ids), status=Segment.Status.PENDING, audio="")
        .exclude(call__status=Call.Status.LIVE)
        .update(status=Segment.Status.FAILED, failure_reason=reason[:500], updated=timezone.now())
    )
