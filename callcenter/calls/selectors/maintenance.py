"""Maintenance (the sweeper, ``requeue_segments``): calls and segments whose work was lost."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from django.utils import timezone

from callcenter.errors import InvalidInput

from ..models import Call, Segment


def calls_live_started_before(*, seconds_ago: float) -> list[int]:
    """Ids of the calls still ``live`` that started more than ``seconds_ago``."""
    cutoff = timezone.now() - dt.timedelta(seconds=seconds_ago)
    return list(Call.objects.filter(status=Call.Status.LIVE, started_at__lt=cutoff).values_list("pk", flat=True))


def calls_closed_with_segments_without_audio(*, seconds_ago: float) -> list[int]:
    """Ids of ended or failed calls, closed more than ``seconds_ago``, with a
    pending segment that never got its audio."""
    cutoff = timezone.now() - dt.timedelta(seconds=seconds_ago)
    return list(
        Call.objects.exclude(status=Call.Status.LIVE)
        .filter(ended_at__lt=cutoff, segments__status=Segment.Status.PENDING, segments__audio="")
        .values_list("pk", flat=True)
        .distinct()
    )


# Segments unchanged longer than this (10 years) are not asked for: a larger age is a typo.
MAX_REQUEUE_AGE_S = 10 * 365 * 24 * 3600


def segments_to_requeue(
    *, statuses: Sequence[str], older_than_s: float = 0, call_id: int | None = None
) -> list[int]:
    """Ids of segments with audio in one of ``statuses`` (``pending``,
    ``failed``), unchanged for ``older_than_s`` seconds, optionally of one call."""
    unknown = set(statuses) - {Segment.Status.PENDING, Segment.Status.FAILED}
    if unknown or not statuses:
        raise InvalidInput(f"statuses must be among pending, failed; got {sorted(statuses)}", statuses=list(statuses))
    if not 0 <= older_than_s <= MAX_REQUEUE_AGE_S:  # also NaN; a date before year 1 cannot be asked for
        raise InvalidInput(
            f"older_than_s must be seconds from 0 to {MAX_REQUEUE_AGE_S}, got {older_than_s!r}", older_than_s=older_than_s
        )
    segments = Segment.objects.filter(
        status__in=list(statuses), updated__lte=timezone.now() - dt.timedelta(seconds=older_than_s)
    ).exclude(audio="")
    if call_id is not None:
        segments = segments.filter(call_id=call_id)
    return list(segments.order_by("pk").values_list("pk", flat=True))
