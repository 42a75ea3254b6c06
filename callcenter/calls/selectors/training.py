"""Periodic meta-training: the verified audio it learns from, its latest run."""

from __future__ import annotations

from django.db.models import QuerySet

from ..models import Segment, TrainingRun


def verified_segments_since(*, since) -> QuerySet[Segment]:
    """Verified customers' segments with audio (all of them when ``since`` is
    None): meta-training treats each customer as a speaker, so agents' tracks stay out."""
    qs = (
        Segment.objects.filter(verified_at__isnull=False, speaker=Segment.Speaker.CUSTOMER)
        .exclude(audio="").exclude(verified_text="")
    )  # fmt: skip
    if since is not None:
        qs = qs.filter(verified_at__gt=since)
    return qs


def training_run_latest() -> TrainingRun | None:
    return TrainingRun.objects.order_by("-created", "-id").first()
