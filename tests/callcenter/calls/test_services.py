"""Writes and reads of the calls app, as a caller of the services sees them."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from callcenter.calls import selectors, services
from callcenter.calls.models import Call, Segment
from callcenter.errors import (
    Conflict,
    DuplicateCall,
    DuplicateCustomer,
    DuplicateSegment,
    InvalidInput,
    InvalidPhoneNumber,
    InvalidState,
    NotFound,
)

SHA = "0123456789abcdef" * 4

# --- phone numbers (pure) ---


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+4915112345678", "+4915112345678"),
        (" +49 151 1234-5678 ", "+4915112345678"),
        ("0049 (151) 12.34.56.78", "+4915112345678"),
        ("+1 (555) 010-0000", "+15550100000"),
    ],
)
def test_phone_normalize_accepts_common_spellings_of_e164(raw, expected):
    assert services.phone_normalize(phone=raw) == expected


@pytest.mark.parametrize("raw", ["", "015112345678", "+0151", "+49 151 abc", "+1234567890123456", "tel:+4915"])
def test_phone_normalize_refuses_what_is_not_e164(raw):
    with pytest.raises(InvalidPhoneNumber, match="E.164") as caught:
        services.phone_normalize(phone=raw)
    assert caught.value.code == "invalid_phone"


@given(
    number=st.from_regex(r"\+[1-9][0-9]{1,14}", fullmatch=True),
    separators=st.lists(st.sampled_from([" ", "-", ".", "(", ")"]), max_size=6),
    positions=st.lists(st.integers(min_value=1, max_value=16), max_size=6),
)
def test_phone_normalize_undoes_any_separators(number, separators, positions):
    spelled = number
    for separator, position in zip(separators, positions, strict=False):
        spelled = spelled[:position] + separator + spelled[position:]
    assert services.phone_normalize(phone=spelled) == number


# --- customers ---


@pytest.mark.django_db
def test_customer_get_or_create_creates_once_then_finds_by_phone():
    first, created = services.customer_get_or_create(phone="+15550100001", name="Ada")
    again, created_again = services.customer_get_or_create(phone="+1 555 010 0001")

    assert (created, created_again) == (True, False)
    assert again.pk == first.pk and again.name == "Ada"


@pytest.mark.django_db
def test_customer_get_or_create_prefers_the_external_id_and_records_it():
    by_phone, _ = services.customer_get_or_create(phone="+15550100001")
    linked, created = services.customer_get_or_create(phone="+15550100001", external_id="crm-7")
    from_other_phone, _ = services.customer_get_or_create(phone="+15550100999", external_id="crm-7")

    assert not created
    assert linked.pk == by_phone.pk == from_other_phone.pk
    assert selectors.customer_find(external_id="crm-7").pk == by_phone.pk


@pytest.mark.django_db
def test_customer_create_refuses_a_taken_external_id():
    services.customer_create(phone="+15550100001", external_id="crm-7")
    with pytest.raises(DuplicateCustomer, match="external id 'crm-7'"):
        services.customer_create(phone="+15550100002", external_id="crm-7")


@pytest.mark.django_db
def test_customer_create_refuses_a_bad_phone_before_touching_the_database():
    with pytest.raises(InvalidPhoneNumber):
        services.customer_create(phone="12345")
    assert selectors.customer_count() == 0


# --- calls ---


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


# --- segments ---


@pytest.fixture
def live_call() -> Call:
    return services.call_start(protocol="pcm", external_id="s1")


@pytest.mark.django_db
def test_segment_create_stores_the_audio_file(live_call, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)

    segment = services.segment_create(
        call_id=live_call.pk, index=0, start_ms=120, end_ms=1880, sample_rate=8000, audio=b"RIFF....WAVE"
    )

    assert segment.status == "pending"
    assert segment.audio.name.startswith("segments/") and segment.audio.name.endswith(f"call{live_call.pk}-seg0.wav")
    assert (tmp_path / segment.audio.name).read_bytes() == b"RIFF....WAVE"
    assert list(selectors.call_segments(call_id=live_call.pk)) == [segment]


@pytest.mark.django_db
def test_segment_create_refuses_duplicates_and_bad_times(live_call):
    services.segment_create(call_id=live_call.pk, index=0, start_ms=0, end_ms=10, sample_rate=8000)
    with pytest.raises(DuplicateSegment, match="already has segment 0"):
        services.segment_create(call_id=live_call.pk, index=0, start_ms=20, end_ms=30, sample_rate=8000)
    with pytest.raises(InvalidInput, match="0 <= start_ms <= end_ms"):
        services.segment_create(call_id=live_call.pk, index=1, start_ms=30, end_ms=20, sample_rate=8000)
    with pytest.raises(NotFound):
        services.segment_create(call_id=999999, index=0, start_ms=0, end_ms=10, sample_rate=8000)


@pytest.mark.django_db
def test_segment_result_failure_and_verification(live_call, django_user_model):
    segment = services.segment_create(call_id=live_call.pk, index=0, start_ms=0, end_ms=900, sample_rate=8000)
    words = [{"w": "hello", "start": 0.1, "end": 0.4, "conf": 0.9}]

    stored = services.segment_store_result(segment_id=segment.pk, text=" hello ", words=words, confidence=0.9)
    stored_twice = services.segment_store_result(segment_id=segment.pk, text="hello", words=words, confidence=0.9)
    assert (stored_twice.status, stored_twice.text, stored_twice.words) == ("recognized", "hello", words)
    assert Segment.objects.count() == 1 and stored.pk == stored_twice.pk

    with pytest.raises(InvalidInput, match="word 0 needs w, start, end and conf"):
        services.segment_store_result(segment_id=segment.pk, text="x", words=[{"w": "x"}], confidence=None)

    reviewer = django_user_model.objects.create_user("qa")
    reviewer.user_permissions.add(Permission.objects.get(codename="verify_segment"))
    verified = services.segment_verify(segment_id=segment.pk, text="hello there", user=reviewer)
    assert verified.best_text == "hello there" and verified.verified_by == reviewer

    failed = services.segment_mark_failed(segment_id=segment.pk, reason="decoder crashed")
    assert (failed.status, failed.failure_reason) == ("failed", "decoder crashed")


# --- model versions and voice profiles ---


@pytest.mark.django_db
def test_model_version_promote_leaves_exactly_one_active():
    v1 = services.model_version_register(name="base-1", checkpoint="asr_core/checkpoints/base.pt", sha256=SHA)
    v2 = services.model_version_register(name="meta-2", checkpoint="var/meta-2.pt", sha256=SHA.upper())
    assert selectors.model_version_active() is None

    services.model_version_promote(model_version_id=v1.pk)
    services.model_version_promote(model_version_id=v2.pk)

    active = selectors.model_version_active()
    assert active.pk == v2.pk and active.promoted_at is not None and active.sha256 == SHA
    with pytest.raises(Conflict, match="'base-1' already exists"):
        services.model_version_register(name="base-1", checkpoint="x.pt", sha256=SHA)
    with pytest.raises(InvalidInput, match="64 hex digits"):
        services.model_version_register(name="bad", checkpoint="x.pt", sha256="abc")


@pytest.mark.django_db
def test_voice_profiles_are_numbered_per_customer_and_model():
    customer = services.customer_create(phone="+15550100001")
    model = services.model_version_register(name="base-1", checkpoint="a.pt", sha256=SHA)

    first = services.voice_profile_create(customer_id=customer.pk, model_version_id=model.pk, state=b"\x01")
    second = services.voice_profile_create(
        customer_id=customer.pk, model_version_id=model.pk, state=b"\x02", metrics={"wer_before": 0.3}
    )

    assert (first.version, second.version) == (1, 2)
    latest = selectors.voice_profile_latest(customer_id=customer.pk, model_version_id=model.pk)
    assert latest.pk == second.pk and bytes(latest.state) == b"\x02"
    with pytest.raises(NotFound):
        services.voice_profile_create(customer_id=customer.pk, model_version_id=999999, state=b"")


@pytest.mark.django_db
def test_selectors_raise_not_found_for_missing_rows():
    with pytest.raises(NotFound) as caught:
        selectors.call_get(call_id=999999)
    assert caught.value.as_dict() == {"code": "not_found", "message": "call #999999 does not exist", "call_id": 999999}
    with pytest.raises(NotFound):
        selectors.customer_get(customer_id=999999)
    with pytest.raises(NotFound):
        selectors.segment_get(segment_id=999999)


@pytest.mark.django_db
def test_call_end_keeps_an_end_time_given_by_the_caller():
    call = services.call_start(protocol="pcm", started_at=timezone.now() - dt.timedelta(minutes=3))
    ended_at = timezone.now() - dt.timedelta(minutes=1)
    ended = services.call_end(call_id=call.pk, status="failed", failure_reason="caller hung up", ended_at=ended_at)
    assert (ended.status, ended.ended_at, round(ended.duration_s)) == ("failed", ended_at, 120)
