"""Customers, and a returning caller's history for the agent page and the admin."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Count, Q, Sum

from callcenter.errors import NotFound

from ..models import AdaptationRun, Call, Customer, Segment
from .adaptation import customer_accuracy_history
from .model_versions import model_version_active, voice_profile_latest


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


def customer_history(*, customer_id: int, recent: int = 5) -> CustomerHistory:
    """A caller's history for the agent page and the admin: calls, audio and
    verified audio, whether a voice profile exists for the active model, and
    how much adaptation improved recognition (``NotFound`` for an unknown id)."""
    customer = customer_get(customer_id=customer_id)
    calls = Call.objects.filter(customer_id=customer_id)
    totals = calls.aggregate(n=Count("id"), ended=Count("id", filter=Q(status=Call.Status.ENDED)))
    segments = Segment.objects.filter(call__customer_id=customer_id, speaker=Segment.Speaker.CUSTOMER)
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
