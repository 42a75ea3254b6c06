"""Caller adaptation: runs, their held-out figures, and the audio a caller's adaptation uses."""

from __future__ import annotations

from callcenter.errors import NotFound

from ..models import AdaptationRun, Segment


def adaptation_improvement(metrics: dict) -> float | None:
    """Relative change of the held-out error the adaptation measured (negative = better)."""
    if "wer_before" in metrics and "wer_after" in metrics:
        before, after = float(metrics["wer_before"]), float(metrics["wer_after"])
    elif "conf_before" in metrics and "conf_after" in metrics:
        before, after = 1 - float(metrics["conf_before"]), 1 - float(metrics["conf_after"])
    else:
        return None
    if before <= 0:
        return 0.0 if after <= 0 else None
    return round((after - before) / before, 4)


def customer_accuracy_history(*, customer_id: int, limit: int = 50) -> list[dict]:
    """The caller's adaptations, newest first, with their held-out figures."""
    runs = (
        AdaptationRun.objects.filter(customer_id=customer_id)
        .select_related("model_version", "profile", "call")
        .order_by("-created", "-id")[:limit]
    )
    return [
        {
            "run": run.pk,
            "created": run.created,
            "trigger": run.trigger,
            "status": run.status,
            "mode": run.mode,
            "model_version": run.model_version.name if run.model_version else None,
            "profile_version": run.profile.version if run.profile else None,
            "call": run.call_id,
            "metrics": run.metrics,
            "improvement": adaptation_improvement(run.metrics),
            "reason": run.reason,
        }
        for run in runs
    ]


def customer_adaptation_segments(*, customer_id: int, limit: int) -> list[Segment]:
    """The caller's segments that have audio, oldest first (at most the
    ``limit`` most recent ones). Only the customer's own track: an agent's
    voice never feeds the customer's profile."""
    recent = (
        Segment.objects.filter(call__customer_id=customer_id, speaker=Segment.Speaker.CUSTOMER)
        .exclude(audio="")
        .order_by("-call__started_at", "-call_id", "-index")[:limit]
    )
    return sorted(recent, key=lambda s: (s.call.started_at, s.call_id, s.index))


def adaptation_run_get(*, run_id: int) -> AdaptationRun:
    run = AdaptationRun.objects.select_related("customer", "call").filter(pk=run_id).first()
    if run is None:
        raise NotFound(f"adaptation run #{run_id} does not exist", run_id=run_id)
    return run
