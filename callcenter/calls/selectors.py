"""Reads of the calls app: keyword-only arguments, querysets or model
instances out, ``NotFound`` where the caller asked for one thing that is not
there."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from callcenter.errors import InvalidInput, NotFound

from .models import AdaptationRun, Agent, Call, Customer, ModelVersion, Segment, TrainingRun, VoiceProfile


def customer_get(*, customer_id: int) -> Customer:
    customer = Customer.objects.filter(pk=customer_id).first()
    if customer is None:
        raise NotFound(f"customer #{customer_id} does not exist", customer_id=customer_id)
    return customer


def customer_find(*, phone: str | None = None, external_id: str | None = None) -> Customer | None:
    """The customer with this external id, else with this (E.164) phone number."""
    if external_id:
        customer = Customer.objects.filter(external_id=external_id).first()
        if customer is not None:
            return customer
    if phone:
        return Customer.objects.filter(phone=phone).first()
    return None


def customer_count() -> int:
    return Customer.objects.count()


def call_get(*, call_id: int) -> Call:
    call = Call.objects.select_related("customer", "agent__user").filter(pk=call_id).first()
    if call is None:
        raise NotFound(f"call #{call_id} does not exist", call_id=call_id)
    return call


def calls_live() -> QuerySet[Call]:
    return Call.objects.filter(status=Call.Status.LIVE).select_related("customer", "agent__user")


def calls_for_customer(*, customer_id: int, limit: int = 20) -> QuerySet[Call]:
    return Call.objects.filter(customer_id=customer_id).order_by("-started_at")[:limit]


def call_segments(*, call_id: int) -> QuerySet[Segment]:
    return Segment.objects.filter(call_id=call_id).order_by("index")


def segment_get(*, segment_id: int) -> Segment:
    segment = Segment.objects.select_related("call").filter(pk=segment_id).first()
    if segment is None:
        raise NotFound(f"segment #{segment_id} does not exist", segment_id=segment_id)
    return segment


def model_version_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(is_active=True).first()


def voice_profile_latest(*, customer_id: int, model_version_id: int) -> VoiceProfile | None:
    return (
        VoiceProfile.objects.filter(customer_id=customer_id, model_version_id=model_version_id)
        .order_by("-version")
        .first()
    )


def voice_profile_for_model(*, customer_id: int, model_sha256: str) -> VoiceProfile | None:
    """The caller's latest profile made for the model with this SHA-256 (the
    recognizer's version), or None. Its ``state`` bytes are loaded on first
    access: workers cache parsed profiles and rarely need them."""
    return (
        VoiceProfile.objects.filter(customer_id=customer_id, model_version__sha256=model_sha256)
        .defer("state")
        .order_by("-version", "-id")
        .first()
    )


def segments_by_id(*, segment_ids: list[int]) -> list[Segment]:
    return list(Segment.objects.filter(pk__in=segment_ids).order_by("call_id", "index"))


# --- Returning customers: history, profiles, adaptation --------------------


@dataclass(frozen=True)
class CustomerHistory:
    """What an agent or supervisor sees about a returning caller.

    ``improvement`` is the relative change of the held-out error measure the
    latest accepted adaptation reported (WER when supervised, else 1 - mean
    confidence): -0.2 means 20 % fewer errors than before it; None without
    an accepted adaptation.
    """

    customer: Customer
    calls: int
    calls_ended: int
    last_call_at: object
    segments: int
    verified_segments: int
    audio_seconds: float
    has_profile: bool
    profile_version: int | None
    profile_model_version: str | None
    adaptations: int
    improvement: float | None
    recent_calls: list[Call] = field(default_factory=list)
    accuracy_history: list[dict] = field(default_factory=list)


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


def customer_history(*, customer_id: int, recent: int = 5) -> CustomerHistory:
    """A caller's history for the agent page and the admin: calls, audio and
    verified audio, whether a voice profile exists for the active model, and
    how much adaptation improved recognition (``NotFound`` for an unknown id)."""
    customer = customer_get(customer_id=customer_id)
    calls = Call.objects.filter(customer_id=customer_id)
    totals = calls.aggregate(n=Count("id"), ended=Count("id", filter=Q(status=Call.Status.ENDED)))
    segments = Segment.objects.filter(call__customer_id=customer_id)
    seg = segments.aggregate(
        n=Count("id"),
        verified=Count("id", filter=Q(verified_at__isnull=False)),
        ms=Sum("end_ms"),
        start=Sum("start_ms"),
    )
    active = model_version_active()
    profile = (
        voice_profile_latest(customer_id=customer_id, model_version_id=active.pk) if active is not None else None
    )
    history = customer_accuracy_history(customer_id=customer_id)
    accepted = [h for h in history if h["status"] == AdaptationRun.Status.ACCEPTED and h["improvement"] is not None]
    recent_calls = list(calls.order_by("-started_at")[:recent])
    return CustomerHistory(
        customer=customer,
        calls=totals["n"],
        calls_ended=totals["ended"],
        last_call_at=recent_calls[0].started_at if recent_calls else None,
        segments=seg["n"],
        verified_segments=seg["verified"],
        audio_seconds=round(((seg["ms"] or 0) - (seg["start"] or 0)) / 1000, 1),
        has_profile=profile is not None,
        profile_version=profile.version if profile else None,
        profile_model_version=active.name if profile and active else None,
        adaptations=len(history),
        improvement=accepted[0]["improvement"] if accepted else None,
        recent_calls=recent_calls,
        accuracy_history=history,
    )


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
    ``limit`` most recent ones)."""
    recent = (
        Segment.objects.filter(call__customer_id=customer_id)
        .exclude(audio="")
        .order_by("-call__started_at", "-call_id", "-index")[:limit]
    )
    return sorted(recent, key=lambda s: (s.call.started_at, s.call_id, s.index))


def voice_profiles_for_customer(*, customer_id: int) -> QuerySet[VoiceProfile]:
    return VoiceProfile.objects.filter(customer_id=customer_id).select_related("model_version").order_by(
        "-model_version__created", "-version"
    )


def adaptation_run_get(*, run_id: int) -> AdaptationRun:
    run = AdaptationRun.objects.select_related("customer", "call").filter(pk=run_id).first()
    if run is None:
        raise NotFound(f"adaptation run #{run_id} does not exist", run_id=run_id)
    return run


def model_version_get(*, model_version_id: int) -> ModelVersion:
    version = ModelVersion.objects.filter(pk=model_version_id).first()
    if version is None:
        raise NotFound(f"model version #{model_version_id} does not exist", model_version_id=model_version_id)
    return version


def verified_segments_since(*, since) -> QuerySet[Segment]:
    """Verified segments with audio (all of them when ``since`` is None)."""
    qs = Segment.objects.filter(verified_at__isnull=False).exclude(audio="").exclude(verified_text="")
    if since is not None:
        qs = qs.filter(verified_at__gt=since)
    return qs


def training_run_latest() -> TrainingRun | None:
    return TrainingRun.objects.order_by("-created", "-id").first()


# --- Agents ------------------------------------------------------------------


def agent_for_user(*, user_id: int) -> Agent | None:
    """The agent a logged-in user is, or None."""
    return Agent.objects.select_related("user").filter(user_id=user_id).first()


def agent_by_username(*, username: str) -> Agent | None:
    """The agent whose user has this username (as telephony passes it in a
    stream's parameters), or None."""
    return Agent.objects.select_related("user").filter(user__username=username).first()


# --- Maintenance (the sweeper, requeue_segments) ----------------------------


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


def segments_to_requeue(
    *, statuses: Sequence[str], older_than_s: float = 0, call_id: int | None = None
) -> list[int]:
    """Ids of segments with audio in one of ``statuses`` (``pending``,
    ``failed``), unchanged for ``older_than_s`` seconds, optionally of one call."""
    unknown = set(statuses) - {Segment.Status.PENDING, Segment.Status.FAILED}
    if unknown or not statuses:
        raise InvalidInput(f"statuses must be among pending, failed; got {sorted(statuses)}", statuses=list(statuses))
    segments = Segment.objects.filter(
        status__in=list(statuses), updated__lte=timezone.now() - dt.timedelta(seconds=older_than_s)
    ).exclude(audio="")
    if call_id is not None:
        segments = segments.filter(call_id=call_id)
    return list(segments.order_by("pk").values_list("pk", flat=True))


def segment_status_counts() -> dict[str, int]:
    """How many segments are in each status (every status, zeros included)."""
    counts = dict.fromkeys(Segment.Status.values, 0)
    for row in Segment.objects.values("status").annotate(n=Count("pk")).order_by():
        counts[row["status"]] = row["n"]
    return counts


def calls_live_count() -> int:
    return Call.objects.filter(status=Call.Status.LIVE).count()
