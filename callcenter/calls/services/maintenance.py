"""Maintenance (the sweeper, ``requeue_segments``): lost recognitions queued
again, orphaned calls closed, segments that never got their audio failed.

``maintenance_sweep`` is one pass of the sweeper (the ``maintenance.sweep``
task, run by Celery beat every ``SEGMENT_SWEEP_INTERVAL_S``); it repairs what
a fault left behind, so that no received audio goes unrecognized:

- segments with audio still ``pending`` ``stuck_after_s`` after their last
  change are queued again (their task was lost: Redis restarted empty, a
  worker was killed before its late ack could redeliver it);
- live calls that no web process holds any more (their liveness key in Redis
  expired: the process was killed) are closed as ``failed``, keeping their
  segments; skipped for a while after Redis itself restarted, until every
  web process has renewed its keys;
- segments that never got their audio, of calls that are closed, are marked
  ``failed`` with the reason.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

from django.db import transaction
from django.utils import timezone

from callcenter.errors import InvalidInput, InvalidState
from callcenter.ops import metrics, redisconn
from callcenter.streaming.liveness import TTL_PERIODS

from ..models import Call, Segment
from ..selectors.maintenance import calls_closed_with_segments_without_audio, calls_live_started_before
from .calls import call_end
from .enqueue import recognition_enqueue

logger = logging.getLogger(__name__)


def maintenance_sweep(*, stuck_after_s: int, heartbeat_s: int) -> dict[str, list[int]]:
    """One pass of the sweeper (the module docstring); returns what it did,
    by id: ``calls_closed``, ``segments_requeued``, and ``segments_failed``
    (their number, in a list). ``heartbeat_s`` is the web processes'
    liveness period (``STREAM_HEARTBEAT_S``)."""
    if stuck_after_s < 0 or heartbeat_s <= 0:
        raise InvalidInput(
            f"the sweeper needs stuck_after_s >= 0 and heartbeat_s > 0, got {stuck_after_s} and {heartbeat_s}",
            stuck_after_s=stuck_after_s,
            heartbeat_s=heartbeat_s,
        )
    closed = _calls_close_orphaned(heartbeat_s=heartbeat_s)
    requeued = segments_requeue_stuck(older_than_s=stuck_after_s)
    abandoned = calls_closed_with_segments_without_audio(seconds_ago=stuck_after_s)
    failed = segments_fail_without_audio(call_ids=abandoned, reason="the call ended before this segment's audio was stored")
    metrics.SWEEPS.labels("call_closed").inc(len(closed))
    metrics.SWEEPS.labels("requeued").inc(len(requeued))
    metrics.SWEEPS.labels("segment_failed").inc(failed)
    if closed or requeued or failed:
        logger.warning(
            "sweeper: closed %d orphaned call(s) %s, queued %d stuck segment(s) %s, failed %d segment(s) without audio",
            len(closed), closed, len(requeued), requeued[:50], failed,
        )  # fmt: skip
    return {"calls_closed": closed, "segments_requeued": requeued, "segments_failed": [failed]}


def _calls_close_orphaned(*, heartbeat_s: int) -> list[int]:
    expired_after = heartbeat_s * TTL_PERIODS
    uptime = redisconn.uptime_s()
    if uptime < expired_after + heartbeat_s:
        logger.info("sweeper: Redis restarted %d s ago; live calls are checked once web processes renewed them", uptime)
        return []
    candidates = calls_live_started_before(seconds_ago=expired_after + heartbeat_s)
    alive = redisconn.calls_alive(call_ids=candidates)
    closed = []
    for call_id in candidates:
        if call_id in alive:
            continue
        try:
            call_close_orphaned(call_id=call_id, reason=f"its web process stopped (no heartbeat for {expired_after} s)")
        except InvalidState:
            continue  # closed by its process meanwhile
        closed.append(call_id)
    return closed


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
