"""Calls: one by id, the live ones, a caller's."""

from __future__ import annotations

from django.db.models import QuerySet

from callcenter.errors import NotFound

from ..models import Call


def call_get(*, call_id: int) -> Call:
    call = Call.objects.select_related("customer", "agent__user").filter(pk=call_id).first()
    if call is None:
        raise NotFound(f"call #{call_id} does not exist", call_id=call_id)
    return call


def calls_live() -> QuerySet[Call]:
    return Call.objects.filter(status=Call.Status.LIVE).select_related("customer", "agent__user")


def calls_live_count() -> int:
    return Call.objects.filter(status=Call.Status.LIVE).count()


def calls_for_customer(*, customer_id: int, limit: int = 20) -> QuerySet[Call]:
    return Call.objects.filter(customer_id=customer_id).order_by("-started_at")[:limit]
