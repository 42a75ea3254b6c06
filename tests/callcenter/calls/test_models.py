"""Database constraints of the calls app hold whatever path a row takes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from callcenter.calls import services
from callcenter.calls.models import Agent, Call, Customer, ModelVersion, Segment, VoiceProfile
from callcenter.errors import DuplicateCustomer

pytestmark = pytest.mark.django_db

SHA = "ab" * 32
T0 = dt.datetime(2026, 1, 5, 9, 30, tzinfo=dt.UTC)


@contextmanager
def refused(constraint: str) -> Iterator[None]:
    """The database refuses the statement, naming ``constraint``; the test's
    transaction stays usable."""
    with pytest.raises(IntegrityError, match=constraint), transaction.atomic():
        yield


@pytest.fixture
def call() -> Call:
    return Call.objects.create(protocol=Call.Protocol.TWILIO, external_id="MZ1")


# --- Customer ---


def test_second_customer_with_the_same_phone_is_refused_with_a_clear_error():
    services.customer_create(phone="+4915112345678", name="Ada")

    with pytest.raises(DuplicateCustomer) as caught:
        services.customer_create(phone="+49 151 1234 5678", name="Someone else")

    assert str(caught.value) == "a customer with phone number +4915112345678 already exists"
    assert caught.value.code == "duplicate_customer"
    assert Customer.objects.count() == 1


def test_second_customer_with_the_same_phone_is_refused_by_the_database_and_by_validation():
    Customer.objects.create(phone="+4915112345678")

    with refused("phone"):
        Customer.objects.create(phone="+4915112345678")
    with pytest.raises(ValidationError, match="A customer with this phone number already exists"):
        Customer(phone="+4915112345678").full_clean()


@pytest.mark.parametrize("phone", ["4915112345678", "+0151", "+1", "++1555123456", "+49 151", "+1555x123", ""])
def test_phone_outside_e164_is_refused_by_the_database(phone):
    with refused("customer_phone_e164"):
        Customer.objects.create(phone=phone)


def test_external_id_is_unique_but_may_be_missing_on_many_customers():
    Customer.objects.create(phone="+15550000001", external_id="crm-1")
    Customer.objects.create(phone="+15550000002")
    Customer.objects.create(phone="+15550000003")

    with refused("external_id"):
        Customer.objects.create(phone="+15550000004", external_id="crm-1")
    with refused("customer_external_id_not_empty"):
        Customer.objects.create(phone="+15550000005", external_id="")


# --- Call ---


def test_call_external_id_is_unique_per_protocol_when_given():
    Call.objects.create(protocol="twilio", external_id="MZ1")
    Call.objects.create(protocol="pcm", external_id="MZ1")
    Call.objects.create(protocol="pcm", external_id="")
    Call.objects.create(protocol="pcm", external_id="")

    with refused("call_unique_external_id_per_protocol"):
        Call.objects.create(protocol="twilio", external_id="MZ1")


def test_call_status_and_end_time_agree():
    now = timezone.now()
    with refused("call_ended_at_matches_status"):
        Call.objects.create(protocol="pcm", status="live", ended_at=now)
    with refused("call_ended_at_matches_status"):
        Call.objects.create(protocol="pcm", status="ended")
    with refused("call_ends_after_start"):
        Call.objects.create(protocol="pcm", status="ended", started_at=now, ended_at=now - dt.timedelta(seconds=1))


@pytest.mark.parametrize(
    ("fields", "constraint"),
    [
        ({"status": "ringing", "started_at": T0, "ended_at": T0}, "call_status_valid"),
        ({"protocol": "sip"}, "call_protocol_valid"),
        ({"direction": "sideways"}, "call_direction_valid"),
    ],
)
def test_call_enumerations_are_enforced_by_the_database(fields, constraint):
    with refused(constraint):
        Call.objects.create(**{"protocol": "pcm", **fields})


# --- Segment ---


def test_segment_index_is_unique_within_a_call(call):
    Segment.objects.create(call=call, index=0, start_ms=0, end_ms=900)
    other = Call.objects.create(protocol="pcm")
    Segment.objects.create(call=other, index=0, start_ms=0, end_ms=500)

    with refused("segment_unique_index_per_call"):
        Segment.objects.create(call=call, index=0, start_ms=1000, end_ms=1500)


def test_segment_cannot_end_before_it_starts_or_claim_confidence_above_one(call):
    with refused("segment_times_ordered"):
        Segment.objects.create(call=call, index=0, start_ms=1000, end_ms=999)
    with refused("segment_confidence_in_unit_interval"):
        Segment.objects.create(call=call, index=1, start_ms=0, end_ms=10, confidence=1.5)
    with refused("segment_sample_rate_positive"):
        Segment.objects.create(call=call, index=2, start_ms=0, end_ms=10, sample_rate=0)


def test_segment_best_text_prefers_the_verified_transcript(call):
    segment = Segment.objects.create(call=call, index=0, start_ms=0, end_ms=10, text="I won a refund")
    assert segment.best_text == "I won a refund"
    segment.verified_text = "I want a refund"
    segment.verified_at = timezone.now()
    assert segment.best_text == "I want a refund"


# --- Model versions and voice profiles ---


def test_at_most_one_model_version_is_active():
    now = timezone.now()
    ModelVersion.objects.create(name="v1", checkpoint="a.pt", sha256=SHA, is_active=True, promoted_at=now)
    ModelVersion.objects.create(name="v2", checkpoint="b.pt", sha256=SHA)

    with refused("modelversion_at_most_one_active"):
        ModelVersion.objects.create(name="v3", checkpoint="c.pt", sha256=SHA, is_active=True, promoted_at=now)
    with refused("modelversion_active_was_promoted"):
        ModelVersion.objects.filter(name="v1").update(promoted_at=None)
    with refused("modelversion_sha256_hex"):
        ModelVersion.objects.create(name="v4", checkpoint="d.pt", sha256="not-a-digest")


def test_voice_profile_version_is_unique_per_customer_and_model():
    customer = Customer.objects.create(phone="+15550000001")
    model = ModelVersion.objects.create(name="v1", checkpoint="a.pt", sha256=SHA)
    VoiceProfile.objects.create(customer=customer, model_version=model, version=1, state=b"\x00")

    with refused("voiceprofile_unique_version"):
        VoiceProfile.objects.create(customer=customer, model_version=model, version=1, state=b"\x01")
    with refused("voiceprofile_version_positive"):
        VoiceProfile.objects.create(customer=customer, model_version=model, version=0, state=b"\x01")


def test_every_model_reads_well_as_text(django_user_model, call):
    user = django_user_model.objects.create_user("jo")
    customer = Customer.objects.create(phone="+15550000001", name="Ada")
    model = ModelVersion.objects.create(name="v1", checkpoint="a.pt", sha256=SHA)
    segment = Segment.objects.create(call=call, index=3, start_ms=0, end_ms=10)
    profile = VoiceProfile.objects.create(customer=customer, model_version=model, version=2, state=b"")

    assert str(Agent.objects.create(user=user)) == "jo"
    assert str(customer) == "Ada (+15550000001)"
    assert str(call) == "Twilio Media Streams call MZ1 (live)"
    assert str(segment) == f"segment 3 of call #{call.pk}"
    assert str(model) == "v1"
    assert str(profile) == f"profile v2 of customer #{customer.pk} for model #{model.pk}"
