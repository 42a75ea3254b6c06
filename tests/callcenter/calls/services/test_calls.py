"""Calls: started, ended once, with what the caller gave."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from callcenter.calls import selectors, services
from callcenter.errors import Conflict, DuplicateCall, InvalidInput, InvalidState, NotFound


@pytest.mark.django_db
def test_call_start_and_end_record_a_finished_call():
    customer = services.customer_create(phone="+15550100001")
    call = services.call_start(protocol="twilio", external_id="MZ42", customer_id=customer.pk)
    assert call.status == "live" and selectors.calls_live().get() == call

    ended = services.call_end(call_id=call.pk)

    assert ended.status == "ended" and ended.ended_at >= ended.started_at
    assert not selectors.calls_live().exists()
    assert list(selectors.calls_for_customer(customer_id=customer.pk)) == [ended]


@pytest.mark.django_db
def test_call_end_is_idempotent_but_cannot_change_the_outcome():
    call = services.call_start(protocol="pcm")
    first = services.call_end(call_id=call.pk)
    again = services.call_end(call_id=call.pk)
    assert again.ended_at == first.ended_at

    with pytest.raises(InvalidState, match="already ended"):
        services.call_end(call_id=call.pk, status="failed", failure_reason="socket closed")


@pytest.mark.django_db
def test_call_start_refuses_duplicates_unknown_references_and_bad_choices():
    services.call_start(protocol="twilio", external_id="MZ42")
    with pytest.raises(DuplicateCall) as caught:
        services.call_start(protocol="twilio", external_id="MZ42")
    assert isinstance(caught.value, Conflict) and caught.value.details["external_id"] == "MZ42"
    with pytest.raises(NotFound, match="customer #999999"):
        services.call_start(protocol="pcm", customer_id=999999)
    with pytest.raises(InvalidInput, match="protocol must be one of twilio, pcm"):
        services.call_start(protocol="sip")
    with pytest.raises(NotFound):
        services.call_end(call_id=999999)


@pytest.mark.django_db
def test_call_end_keeps_an_end_time_given_by_the_caller():
    call = services.call_start(protocol="pcm", started_at=timezone.now() - dt.timedelta(minutes=3))
    ended_at = timezone.now() - dt.timedelta(minutes=1)
    ended = services.call_end(call_id=call.pk, status="failed", failure_reason="caller hung up", ended_at=ended_at)
    assert (ended.status, ended.ended_at, round(ended.duration_s)) == ("failed", ended_at, 120)
