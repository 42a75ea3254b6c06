"""Reads of the calls app: keyword-only arguments, querysets or model
instances out, ``NotFound`` where the caller asked for one thing that is not
there."""

from __future__ import annotations

from django.db.models import QuerySet

from callcenter.errors import NotFound

from .models import Call, Customer, ModelVersion, Segment, VoiceProfile


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
    recognizer's version), or None."""
    return (
        VoiceProfile.objects.filter(customer_id=customer_id, model_version__sha256=model_sha256)
        .order_by("-version", "-id")
        .first()
    )


def segments_by_id(*, segment_ids: list[int]) -> list[Segment]:
    return list(Segment.objects.filter(pk__in=segment_ids).order_by("call_id", "index"))
